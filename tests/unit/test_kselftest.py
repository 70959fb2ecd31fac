"""The tree's own tests, host side: harness listings, build fixes, known failures, splat charging."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from testbed.errors import ConfigError
from testbed.kselftest.catalog import programs, selftest_devices
from testbed.kselftest.fixes import FIXES, fixes_for
from testbed.kselftest.known import KnownFailuresError, KnownSkipsError, find_failure, load_failures, load_skips
from testbed.kselftest.listing import case_names, parse_listing
from testbed.kselftest.run import _charge
from testbed.logs.splat import scan_lines
from testbed.topology import load_topology

LOGS = Path(__file__).resolve().parent.parent / "logs" / "kselftest"


def listing(name: str) -> list[str]:
    return (LOGS / name).read_text().splitlines()


def test_iommufd_listing_is_every_fixture_variant_test():
    fixtures = {f.name: f for f in parse_listing(listing("iommufd.list"))}
    ioas = fixtures["iommufd_ioas"]
    assert ioas.variants == ("no_domain", "mock_domain", "two_mock_domain", "mock_domain_limit")
    assert ioas.tests[0] == "ioas_auto_destroy" and "dmabuf_revoke" in ioas.tests
    assert "iommufd.simple_close" in case_names(listing("iommufd.list"))  # no variants: fixture.test
    assert "global" not in fixtures  # a fixture without tests reports nothing
    assert len(case_names(listing("iommufd.list"))) == 246  # what the real run reported, case by case


def test_long_names_push_the_columns():
    cases = case_names(listing("vfio_dma_mapping_test.list"))
    assert cases[0] == "vfio_dma_mapping_test.vfio_type1_iommu_anonymous.dma_map_unmap"
    assert "vfio_dma_map_limit_test.iommufd.overflow" in cases
    fixtures = {f.name: f for f in parse_listing(listing("iommufd.list"))}
    assert fixtures["iommufd_dirty_tracking"].variants[0] == "domain_dirty8k"  # a 22-character fixture name
    assert fixtures["vfio_compat_mock_domain"].tests == (
        "simple_close",
        "option_huge_pages",
        "get_info",
        "map",
        "huge_map",
    )


def test_a_program_that_cannot_list_gives_no_cases():
    assert case_names(listing("vfio_pci_driver_test.list")) == ()  # it asserted before the harness ran


def test_catalog_and_devices():
    assert [p.name for p in programs(("iommu",))] == ["iommufd", "iommufd_fail_nth"]
    assert "vfio_pci_device_init_perf_test" not in [p.name for p in programs(("vfio",))]
    assert "vfio_pci_device_init_perf_test" in [p.name for p in programs(("vfio",), nightly=True)]
    with pytest.raises(ConfigError, match="unknown selftest suite 'net'"):
        programs(("net",))
    assert selftest_devices(load_topology("kselftest")) == ("nvme0", "shm0", "edu0")
    assert selftest_devices(load_topology("two-switch")) == ("nvme0",)  # one of each kind


def test_build_fix_applies_only_where_the_tree_lacks_it(tmp_path: Path):
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "vfio_pci_device.c").write_text("void f(void)\n{\n\tirq = calloc_assert(1, argsz);\n}\n")
    assert [f.name for f in fixes_for("vfio", tmp_path)] == ["vfio-calloc-assert"]
    (lib / "assert.h").write_text("static inline void *calloc_assert(size_t nmemb, size_t size)\n{\n}\n")
    assert fixes_for("vfio", tmp_path) == ()
    assert fixes_for("iommu", tmp_path) == ()
    assert all(f.why for f in FIXES)


def test_shipped_known_failures_load_and_match_narrowly():
    known = load_failures()
    output = (
        "libvfio.c:100: Assertion Failure\n\n  Expression: munmap(map_align + size, map_base + align "
        "- map_align) == 0\n  Observed: 0xffffffffffffffff == 0"
    )
    test = "vfio/vfio_pci_device_test:vfio_pci_device_test.validate_bars"
    assert find_failure(known, test, "ivshmem", "7.2.13-testbed", output) is not None
    assert find_failure(known, test, "nvme", "7.2.13-testbed", output) is None  # another device
    assert find_failure(known, test, "ivshmem", "7.3.0-testbed", output) is None  # another release
    assert find_failure(known, test, "ivshmem", "7.2.13-testbed", "iommu.c:448: Assertion Failure") is None


@pytest.mark.parametrize(
    ("load", "error", "text", "said", "not_said"),
    [
        (
            load_failures,
            KnownFailuresError,
            "known:\n  - test: 'x:*'\n    kernel: '7\\.2'\n    output: '('\n    colour: red\n",
            ("unknown key", "not a valid regex", "missing 'why'"),
            (),
        ),
        (
            load_skips,
            KnownSkipsError,
            "known:\n  - test: 'x:*'\n    output: 'y'\n    reason: ''\n",
            ("unknown key", "must match the case's own reason", "missing 'why'"),
            ("missing 'kernel'",),  # a skip may be any release's
        ),
    ],
    ids=["known-failures", "known-skips"],
)
def test_declaration_file_errors_name_the_line(tmp_path: Path, load, error, text, said, not_said):
    path = tmp_path / "known.yaml"
    path.write_text(text)
    with pytest.raises(error) as err:
        load(path)
    message = str(err.value)
    assert "known.yaml:" in message
    assert all(s in message for s in said), message
    assert not any(s in message for s in not_said), message


# each skip of a green make test (kselftest-known.tsv), as (test, device kind, reason)
SEEN_SKIPS = (
    ("iommu/iommufd:iommufd_viommu.no_viommu.hw_queue", None, "Skipping test for variant no_viommu"),
    ("vfio/vfio_pci_device_test:vfio_pci_irq_test.msi.enable_trigger_disable", "nvme", "MSI: not supported"),
    ("vfio/vfio_pci_device_test:vfio_pci_irq_test.msix.enable_trigger_disable", "edu", "MSI-x: not supported"),
    (
        "vfio/vfio_dma_mapping_test:vfio_dma_mapping_test.iommufd_anonymous_hugetlb_1gb.dma_map_unmap",
        "edu",
        "mmap() failed: Invalid argument (22)",
    ),
    ("vfio/vfio_pci_driver_test:run", "nvme", "No driver found for device 0000:01:00.0"),
    ("vfio/vfio_pci_sriov_uapi_test:run", "ivshmem", "SR-IOV may not be supported by the PF: 0000:02:00.0"),
)


@pytest.mark.parametrize(("test", "device", "reason"), SEEN_SKIPS)
def test_every_skip_seen_here_is_declared(test, device, reason):
    assert find_failure(load_skips(), test, device, "7.2.13-testbed", reason) is not None


def test_a_declared_skip_matches_narrowly():
    skips = load_skips()
    msi = "vfio/vfio_pci_device_test:vfio_pci_irq_test.msi.enable_trigger_disable"
    assert find_failure(skips, msi, "edu", "7.2.13-testbed", "MSI: not supported") is None  # edu has MSI
    assert find_failure(skips, msi, "nvme", "7.3.0", "MSI: not supported") is not None  # any release
    driver = "vfio/vfio_pci_driver_test:run"
    assert find_failure(skips, driver, "nvme", "7.2.13", "No IOMMU group for 0000:01:00.0") is None  # another reason


def test_an_undeclared_skip_fails_under_ci_and_is_listed(monkeypatch):
    from testbed.pytest_plugin.kselftest import KselftestSession, noted_summary

    options = {"selftest_suite": [], "matrix": False}
    config = SimpleNamespace(getoption=options.__getitem__)
    session = KselftestSession(config=config, known=(), known_skips=load_skips())  # type: ignore[arg-type]
    monkeypatch.setenv("CI", "true")
    assert session.skipped("n1", *SEEN_SKIPS[1][:2], "7.2.13", SEEN_SKIPS[1][2]) is None
    said = session.skipped("n2", "vfio/vfio_pci_device_test:vfio_pci_device_test.reset", "nvme", "7.2.13", "no FLR")
    assert said is not None and "known-skips.yaml declares no such skip" in said
    monkeypatch.delenv("CI")
    assert session.skipped("n3", "iommu/iommufd:x.y", None, "7.2.13", "no mock domain") is None  # listed only
    summary = "\n".join(noted_summary([(n.nodeid, n.what, n.reason) for n in session.noted]))
    assert "2 case(s) skipped themselves with a reason known-skips.yaml does not declare" in summary
    assert "1 case(s) skipped themselves; what QEMU or this guest could not give them" in summary


def test_splats_are_charged_to_the_case_whose_run_line_came_last():
    tag = "iommu/iommufd"
    window = [
        f"[   10.0] kselftest {tag}: #  RUN           iommufd_ioas.mock_domain.area ...",
        "[   10.1] WARNING: CPU: 0 PID: 88 at drivers/iommu/iommufd/pages.c:1234 iopt_area_unpin+0x10/0x20",
        "[   10.2] ---[ end trace 0000000000000000 ]---",
        f"[   10.3] kselftest {tag}: ok 51 iommufd_ioas.mock_domain.area",
        "[   10.4] BUG: kernel NULL pointer dereference, address: 0000000000000008",
        "[   10.5] ---[ end trace 0000000000000000 ]---",
    ]
    splats = [(s, None) for s in scan_lines(window, first_line=100)]
    charged = _charge(window, 100, tag, splats)
    assert [(c.splat.kind, c.case) for c in charged] == [
        ("warning", "iommufd_ioas.mock_domain.area"),
        (charged[1].splat.kind, None),
    ]


def test_kunit_boot_log_gives_one_result_per_case():
    from testbed.kselftest.kunit import judge_boot

    run = judge_boot(LOGS / "kunit-boot-kselftest.log")
    assert run.report is not None and len(run.cases) == 113
    assert run.cases["dma-buf-fence.test_sanitycheck"].status.value == "ok"
    failed = run.cases["amdv1_iommu_test.test_map_table_to_oa"]
    assert failed.status.value == "not ok"
    assert any("NR_SECONDARY_PAGETABLE" in line for line in failed.log)
    assert run.splats == ()


def test_kunit_list_output(tmp_path: Path):
    from testbed.kselftest.kunit import parse_list

    console = [
        "[    0.000000] Linux version 7.2.13-testbed (testbed@testbed)",
        "[    0.8] KTAP version 1",
        "[    0.8] dma-buf-fence",
        "[    0.8] dma-buf-fence.test_sanitycheck",
        "[    0.8] x86_64_iommu_test.test_map_simple",
        "[    0.9] Kernel panic - not syncing: VFS",
    ]
    assert parse_list(console) == ("dma-buf-fence.test_sanitycheck", "x86_64_iommu_test.test_map_simple")


def test_kselftest_command_is_a_front_door_to_pytest(tmp_path):
    from testbed.cli import parse_args
    from testbed.errors import ConfigError
    from testbed.kselftest.commands import pytest_argv

    series = tmp_path / "s.mbox"
    series.write_text("From x\n")
    args = parse_args(["kselftest", "kselftest", "iommu", "kunit", "--ksrc", str(tmp_path), "--patches", str(series)])
    argv = pytest_argv(args)
    assert argv[argv.index("--topology") + 1] == "kselftest"
    assert [argv[i + 1] for i, a in enumerate(argv) if a == "--selftest-suite"] == ["iommu", "kunit"]
    assert argv[argv.index("--kernel") + 1] == str(tmp_path) and str(series) in argv
    with pytest.raises(ConfigError, match="--patches .*missing.mbox: no such file"):
        pytest_argv(parse_args(["kselftest", "kselftest", "--patches", str(tmp_path / "missing.mbox")]))
    with pytest.raises(ConfigError, match="unknown suite net; allowed: iommu, vfio, kunit"):  # exit 2
        pytest_argv(parse_args(["kselftest", "kselftest", "net"]))
    scoped = pytest_argv(parse_args(["kselftest", "kselftest", "--coverage-scope", "coverage-scope.yaml"]))
    assert scoped[scoped.index("--coverage-scope") + 1] == "coverage-scope.yaml"


def test_every_iommu_pt_failure_of_the_recorded_boot_is_declared_and_dma_buf_is_not():
    from testbed.kselftest.kunit import judge_boot

    known = load_failures()
    run = judge_boot(LOGS / "kunit-boot-kselftest.log")
    failed = {name: case for name, case in run.cases.items() if case.status.value != "ok"}
    assert failed and not any(name.startswith("dma-buf") for name in failed)
    for name, case in failed.items():
        entry = find_failure(known, f"kunit:{name}", None, "7.2.13-testbed", "\n".join(case.log))
        assert entry is not None, name
    passed = run.cases["dma-buf-fence.test_wait"]
    assert find_failure(known, "kunit:dma-buf-fence.test_wait", None, "7.2.13-testbed", "\n".join(passed.log)) is None


# --- the KTAP parser on these very suites' recorded output -----------------------------------------


def ktap(name: str) -> list:
    from testbed.logs.ktap import parse_ktap

    return parse_ktap((LOGS / name).read_text().splitlines())


def test_iommufd_ktap_has_every_listed_case_with_its_status():
    from testbed.logs.ktap import Status

    (report,) = ktap("iommufd.ktap")
    assert report.plan == 246 and len(report.cases) == 246 and not report.problems
    assert [c.name for c in report.cases] == list(case_names(listing("iommufd.list")))
    counts = report.counts()
    assert (counts[Status.PASS], counts[Status.SKIP], counts[Status.FAIL]) == (241, 5, 0)
    skipped = next(c for c in report.cases if c.status is Status.SKIP)
    assert skipped.directive == "SKIP Skipping test for variant no_viommu"
    revoke = next(c for c in report.cases if c.name == "iommufd_ioas.mock_domain.dmabuf_revoke")
    assert revoke.status is Status.PASS and any("RUN" in line for line in revoke.log)


def test_vfio_ktap_skips_and_known_failures():
    from testbed.logs.ktap import Status

    (mapping,) = ktap("vfio_dma_mapping_test-edu.ktap")
    hugetlb_1g = [c for c in mapping.cases if "hugetlb_1gb" in c.name]
    assert len(hugetlb_1g) == 5 and all(c.status is Status.SKIP for c in hugetlb_1g)
    assert hugetlb_1g[0].directive == "SKIP mmap() failed: Invalid argument (22)"
    (device,) = ktap("vfio_pci_device_test-ivshmem.ktap")
    known = load_failures()
    for case in device.cases:
        assert case.status is Status.FAIL
        test = f"vfio/vfio_pci_device_test:{case.name}"
        assert find_failure(known, test, "ivshmem", "7.2.13-testbed", "\n".join(case.log)) is not None
        assert find_failure(known, test, "nvme", "7.2.13-testbed", "\n".join(case.log)) is None


def test_a_program_that_skips_as_a_whole():
    # ksft_exit_skip() before the harness: a bare "1..0 # SKIP why", no version line, so no KTAP
    # document; the run item takes the reason from it (exit status 4)
    assert ktap("vfio_pci_sriov_uapi_test-nvme.ktap") == []
    text = (LOGS / "vfio_pci_sriov_uapi_test-nvme.ktap").read_text()
    assert text.startswith("1..0 # SKIP SR-IOV may not be supported by the PF")


def test_debug_kunit_cascade_is_declared_by_its_own_output():
    from testbed.kselftest.kunit import judge_boot

    known = load_failures()
    run = judge_boot(LOGS / "kunit-boot-kselftest-debug.log")
    failed = {name: case for name, case in run.cases.items() if case.status.value != "ok"}
    assert failed
    for name, case in failed.items():
        entry = find_failure(known, f"kunit:{name}", None, "7.2.13-testbed", "\n".join(case.log))
        assert entry is not None and "DEBUG_KOBJECT_RELEASE" in entry.why, name


def test_a_fail_nth_timeout_is_known_but_a_fail_nth_assertion_is_not():
    known = load_failures()
    test = "iommu/iommufd_fail_nth:basic_fail_nth.map_two_domains"
    timeout = "#  RUN           basic_fail_nth.map_two_domains ...\n# map_two_domains: Test terminated by timeout"
    assert find_failure(known, test, None, "7.2.13-testbed", timeout) is not None
    assertion = "# iommufd_fail_nth.c:120:map_two_domains:Expected 0 (0) == rc (-12)"
    assert find_failure(known, test, None, "7.2.13-testbed", assertion) is None
