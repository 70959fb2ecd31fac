"""The kernel tree's own tests inside a topology: kselftests (iommu, vfio) and KUnit suites."""
