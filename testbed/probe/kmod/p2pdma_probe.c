// SPDX-License-Identifier: GPL-2.0
/*
 * p2pdma_probe - the PCI P2PDMA decisions of the kernel under test, observed at their source
 *
 * A test module of p2p-testbed. It is built from the same tree and patches as the guest kernel
 * and reports in KTAP to the kernel log, one KTAP document per ioctl on /dev/p2pdma_probe:
 *
 * - census: pci_p2pdma_distance_many() for every (endpoint with an MMIO BAR, endpoint) pair,
 *   and the map type calc_map_type_and_dist() decided for it, seen with a kretprobe;
 * - import: a dynamic, revocable peer2peer importer of a dma-buf, attached on behalf of a
 *   client device; which branch the exporter's map_dma_buf took (bus address, IOVA linked
 *   through the client's IOMMU domain, dma_map_phys(), refusal), from the map type that
 *   pci_p2pdma_map_type() returned (kretprobe) and the address it handed back;
 *   invalidate_mappings unmaps (at once, or from a work item later, as an importer with DMA in
 *   flight does) and is counted, timed and ordered against the exporter's removal;
 * - dma: an edu device bound to this module (driver_override) writes bytes to an address
 *   within its DMA mask (a wider one is refused: QEMU's edu would truncate it);
 * - iova: the two-step DMA API (dma_iova_try_alloc/link/sync/unlink/destroy) on an edu.
 *
 * pci_p2pdma_map_type() is not exported to modules; the probe never calls it, it watches
 * the calls the kernel makes itself.
 */

#include <linux/delay.h>
#include <linux/dma-buf.h>
#include <linux/dma-mapping.h>
#include <linux/dma-resv.h>
#include <linux/iommu.h>
#include <linux/kprobes.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/pci.h>
#include <linux/pci-p2pdma.h>
#include <linux/ptrace.h>
#include <linux/scatterlist.h>
#include <linux/sizes.h>
#include <linux/slab.h>
#include <linux/uaccess.h>
#include <linux/workqueue.h>

#include "p2pdma_probe.h"

#define PROBE_MAX_IMPORTS	16
#define PROBE_MAX_EDUS		4
#define EDU_ID			0x00
#define EDU_DMA_SRC		0x80
#define EDU_DMA_DST		0x88
#define EDU_DMA_CNT		0x90
#define EDU_DMA_CMD		0x98
#define EDU_CMD_RUN		0x1
#define EDU_CMD_TO_BUS		0x2
#define EDU_BUFFER		0x40000
#define EDU_MAX_TRANSFER	4095	/* QEMU 7.2's edu aborts on a full 4096-byte transfer */
#define EDU_TIMEOUT_MS		20000
#define PROBE_MAX_DEFER_MS	10000

static unsigned int edu_dma_bits = 28;
module_param(edu_dma_bits, uint, 0444);
MODULE_PARM_DESC(edu_dma_bits, "DMA mask width of the edu devices (their dma_mask property)");

/* -- observing the kernel's map type decisions ------------------------------------------ */

struct probe_observation {
	struct task_struct *task;	/* the ioctl being watched; others are ignored */
	const void *client;
	int map_type;
	unsigned int hits;
};

static DEFINE_RAW_SPINLOCK(observe_lock);
static struct probe_observation observed;

struct probe_call {
	const void *client;
};

static int map_type_entry(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct probe_call *call = (struct probe_call *)ri->data;

	if (READ_ONCE(observed.task) != current)
		return 1;
	call->client = (const void *)regs_get_kernel_argument(regs, 1);
	return 0;
}

static int map_type_return(struct kretprobe_instance *ri, struct pt_regs *regs)
{
	struct probe_call *call = (struct probe_call *)ri->data;
	unsigned long flags;

	raw_spin_lock_irqsave(&observe_lock, flags);
	observed.client = call->client;
	observed.map_type = (int)regs_return_value(regs);
	observed.hits++;
	raw_spin_unlock_irqrestore(&observe_lock, flags);
	return 0;
}

/* pci_p2pdma_map_type(provider, struct device *client): what map_dma_buf asked */
static struct kretprobe map_type_probe = {
	.kp.symbol_name = "pci_p2pdma_map_type",
	.entry_handler = map_type_entry,
	.handler = map_type_return,
	.data_size = sizeof(struct probe_call),
	.maxactive = 8,
};

/* calc_map_type_and_dist(provider, struct pci_dev *client, ...): what the census asked */
static struct kretprobe calc_probe = {
	.entry_handler = map_type_entry,
	.handler = map_type_return,
	.data_size = sizeof(struct probe_call),
	.maxactive = 8,
};

static const char * const calc_symbols[] = {
	"calc_map_type_and_dist",
	"calc_map_type_and_dist.constprop.0",
	"calc_map_type_and_dist.isra.0",
};

static bool map_type_probed, calc_probed;
static const char *calc_symbol;

static void observe_begin(void)
{
	unsigned long flags;

	raw_spin_lock_irqsave(&observe_lock, flags);
	observed.task = current;
	observed.client = NULL;
	observed.map_type = -1;
	observed.hits = 0;
	raw_spin_unlock_irqrestore(&observe_lock, flags);
}

/* The map type returned for @client since observe_begin(), or P2PDMA_PROBE_MAP_UNOBSERVED */
static u32 observe_end(const void *client)
{
	unsigned long flags;
	u32 ret = P2PDMA_PROBE_MAP_UNOBSERVED;

	raw_spin_lock_irqsave(&observe_lock, flags);
	if (observed.hits && observed.client == client)
		ret = observed.map_type;
	observed.task = NULL;
	raw_spin_unlock_irqrestore(&observe_lock, flags);
	return ret;
}

static const char *map_type_name(u32 type)
{
	switch (type) {
	case PCI_P2PDMA_MAP_UNKNOWN:
		return "UNKNOWN";
	case PCI_P2PDMA_MAP_NONE:
		return "NONE";
	case PCI_P2PDMA_MAP_NOT_SUPPORTED:
		return "NOT_SUPPORTED";
	case PCI_P2PDMA_MAP_BUS_ADDR:
		return "BUS_ADDR";
	case PCI_P2PDMA_MAP_THRU_HOST_BRIDGE:
		return "THRU_HOST_BRIDGE";
	case P2PDMA_PROBE_MAP_UNOBSERVED:
		return "unobserved";
	default:
		return "invalid";
	}
}

static const char * const branch_names[] = {
	[P2PDMA_PROBE_BRANCH_NONE] = "none",
	[P2PDMA_PROBE_BRANCH_BUS_ADDR] = "bus_addr",
	[P2PDMA_PROBE_BRANCH_IOVA] = "iova",
	[P2PDMA_PROBE_BRANCH_PHYS] = "phys",
	[P2PDMA_PROBE_BRANCH_UNEXPLAINED] = "unexplained",
};

/* -- events, in the order the kernel made them ------------------------------------------- */

static atomic64_t event_seq = ATOMIC64_INIT(0);

struct probe_import {
	unsigned int id;
	char name[P2PDMA_PROBE_CASE_LEN];
	struct dma_buf *dmabuf;
	struct dma_buf_attachment *attach;
	struct sg_table *sgt;		/* under dmabuf->resv */
	struct pci_dev *client;
	struct pci_dev *provider;
	dma_addr_t dma_addr;
	unsigned int invalidations;	/* under dmabuf->resv */
	u64 invalidate_seq;		/* under dmabuf->resv */
	u64 invalidate_ns;		/* under dmabuf->resv */
	u64 unmap_seq;			/* under dmabuf->resv */
	u64 unmap_ns;			/* under dmabuf->resv */
	unsigned int defer_unmap_ms;	/* 0: invalidate_mappings unmaps at once */
	struct delayed_work unmap_work;	/* the deferred unmap */
	u64 unbind_seq;			/* the exporter's driver starts to unbind */
	u64 unbound_seq;		/* ... and is gone */
	u64 removed_seq;		/* the exporter's device is deleted */
};

static DEFINE_MUTEX(probe_mutex);	/* one ioctl at a time; the import table's slots */
static DEFINE_SPINLOCK(imports_lock);	/* the table as the bus notifier reads it */
static struct probe_import *imports[PROBE_MAX_IMPORTS];

/* Under the resv lock: drop the mapping, and say when */
static void import_unmap(struct probe_import *imp)
{
	dma_resv_assert_held(imp->dmabuf->resv);
	if (!imp->sgt)
		return;
	dma_buf_unmap_attachment(imp->attach, imp->sgt, DMA_BIDIRECTIONAL);
	imp->sgt = NULL;
	imp->unmap_seq = atomic64_inc_return(&event_seq);
	imp->unmap_ns = ktime_get_ns();
}

static void import_deferred_unmap(struct work_struct *work)
{
	struct probe_import *imp = container_of(to_delayed_work(work), struct probe_import,
						unmap_work);

	dma_resv_lock(imp->dmabuf->resv, NULL);
	import_unmap(imp);
	dma_resv_unlock(imp->dmabuf->resv);
	pr_info("p2pdma_probe: %s: deferred unmap done (event %llu)\n", imp->name, imp->unmap_seq);
}

static void probe_invalidate_mappings(struct dma_buf_attachment *attach)
{
	struct probe_import *imp = attach->importer_priv;
	u64 seq = atomic64_inc_return(&event_seq);

	dma_resv_assert_held(attach->dmabuf->resv);
	imp->invalidations++;
	if (!imp->invalidate_seq) {
		imp->invalidate_seq = seq;
		imp->invalidate_ns = ktime_get_ns();
	}
	/*
	 * The exporter must wait until every mapping is gone. An importer with DMA in flight
	 * unmaps when it has stopped it, later: the deferred mode makes that wait observable.
	 */
	if (imp->defer_unmap_ms && imp->sgt) {
		schedule_delayed_work(&imp->unmap_work, msecs_to_jiffies(imp->defer_unmap_ms));
		pr_info("p2pdma_probe: %s: invalidate_mappings (event %llu), unmap in %u ms\n",
			imp->name, seq, imp->defer_unmap_ms);
		return;
	}
	import_unmap(imp);
	pr_info("p2pdma_probe: %s: invalidate_mappings (event %llu), unmapped\n",
		imp->name, seq);
}

static const struct dma_buf_attach_ops probe_importer_ops = {
	.allow_peer2peer = true,
	.invalidate_mappings = probe_invalidate_mappings,
};

/* Importers an exporter of MMIO must refuse: one that cannot take peer addresses ... */
static const struct dma_buf_attach_ops probe_no_p2p_ops = {
	.invalidate_mappings = probe_invalidate_mappings,
};

/* ... and one that cannot be told to let go (not revocable) */
static const struct dma_buf_attach_ops probe_not_revocable_ops = {
	.allow_peer2peer = true,
};

static const struct dma_buf_attach_ops *importer_ops(u32 flags)
{
	if (flags & P2PDMA_PROBE_IMPORT_NO_P2P)
		return &probe_no_p2p_ops;
	if (flags & P2PDMA_PROBE_IMPORT_NO_INVALIDATE)
		return &probe_not_revocable_ops;
	return &probe_importer_ops;
}

static int probe_bus_notify(struct notifier_block *nb, unsigned long action, void *data)
{
	struct device *dev = data;
	unsigned long flags;
	int i;

	if (action != BUS_NOTIFY_DEL_DEVICE && action != BUS_NOTIFY_UNBIND_DRIVER &&
	    action != BUS_NOTIFY_UNBOUND_DRIVER)
		return NOTIFY_DONE;
	spin_lock_irqsave(&imports_lock, flags);
	for (i = 0; i < PROBE_MAX_IMPORTS; i++) {
		struct probe_import *imp = imports[i];
		u64 *seq;

		if (!imp || &imp->provider->dev != dev)
			continue;
		seq = action == BUS_NOTIFY_DEL_DEVICE ? &imp->removed_seq :
		      action == BUS_NOTIFY_UNBIND_DRIVER ? &imp->unbind_seq : &imp->unbound_seq;
		if (*seq)
			continue;
		*seq = atomic64_inc_return(&event_seq);
		pr_info("p2pdma_probe: %s: exporter %s: %s (event %llu)\n", imp->name,
			pci_name(imp->provider), action == BUS_NOTIFY_DEL_DEVICE ? "deleted" :
			action == BUS_NOTIFY_UNBIND_DRIVER ? "driver unbinding" : "driver unbound",
			*seq);
	}
	spin_unlock_irqrestore(&imports_lock, flags);
	return NOTIFY_DONE;
}

static struct notifier_block probe_bus_nb = {
	.notifier_call = probe_bus_notify,
};

/* -- helpers ------------------------------------------------------------------------------ */

static struct pci_dev *probe_pci_get(const char *name)
{
	struct device *dev = bus_find_device_by_name(&pci_bus_type, NULL, name);

	return dev ? to_pci_dev(dev) : NULL;
}

/* -- census ------------------------------------------------------------------------------- */

static bool census_endpoint(struct pci_dev *pdev)
{
	return pdev->hdr_type == PCI_HEADER_TYPE_NORMAL &&
	       (pdev->class >> 16) != PCI_BASE_CLASS_BRIDGE;
}

static bool has_mmio_bar(struct pci_dev *pdev)
{
	int bar;

	for (bar = 0; bar < PCI_STD_NUM_BARS; bar++)
		if ((pci_resource_flags(pdev, bar) & IORESOURCE_MEM) &&
		    pci_resource_len(pdev, bar))
			return true;
	return false;
}

static int probe_census(struct p2pdma_probe_census *arg)
{
	struct pci_dev *pdev = NULL, **devs;
	unsigned int n = 0, max = 0, i, j, pairs = 0, case_no = 0;

	for_each_pci_dev(pdev)
		if (census_endpoint(pdev))
			max++;
	devs = kcalloc(max, sizeof(*devs), GFP_KERNEL);
	if (!devs)
		return -ENOMEM;
	for_each_pci_dev(pdev) {
		if (census_endpoint(pdev) && n < max)
			devs[n++] = pci_dev_get(pdev);
	}
	for (i = 0; i < n; i++)
		if (has_mmio_bar(devs[i]))
			pairs += n;

	pr_info("KTAP version 1\n");
	pr_info("# p2pdma_probe census: %u endpoints, map type from %s\n", n,
		calc_probed ? calc_symbol : "nowhere (calc_map_type_and_dist is not probe-able)");
	pr_info("1..%u\n", pairs);
	for (i = 0; i < n; i++) {
		if (!has_mmio_bar(devs[i]))
			continue;
		for (j = 0; j < n; j++) {
			struct device *client = &devs[j]->dev;
			bool refused, no_path;
			u32 type;
			int dist;

			observe_begin();
			dist = pci_p2pdma_distance_many(devs[i], &client, 1, false);
			type = observe_end(devs[j]);
			pr_info("# census: provider=%s client=%s distance=%d map_type=%s\n",
				pci_name(devs[i]), pci_name(devs[j]), dist,
				map_type_name(type));
			refused = type == PCI_P2PDMA_MAP_NOT_SUPPORTED;
			no_path = dist < 0;
			/* a map type the distance contradicts: the kernel disagrees with itself */
			if (type != P2PDMA_PROBE_MAP_UNOBSERVED && refused != no_path)
				pr_info("not ok %u census_%s_%s\n", ++case_no,
					pci_name(devs[i]), pci_name(devs[j]));
			else
				pr_info("ok %u census_%s_%s\n", ++case_no,
					pci_name(devs[i]), pci_name(devs[j]));
		}
	}
	for (i = 0; i < n; i++)
		pci_dev_put(devs[i]);
	kfree(devs);
	arg->pairs = pairs;
	arg->map_type_observed = calc_probed;
	return 0;
}

/* -- import --------------------------------------------------------------------------------- */

static bool domain_translates(struct iommu_domain *domain)
{
	return domain && domain->type != IOMMU_DOMAIN_IDENTITY &&
	       (domain->type & __IOMMU_DOMAIN_PAGING);
}

/* Which branch of dma_buf_phys_vec_to_sgt() produced @arg->dma_addr, and is it consistent? */
static const char *classify(struct p2pdma_probe_import *arg, struct iommu_domain *domain)
{
	bool translated = domain_translates(domain);

	if (arg->map_error) {
		arg->branch = P2PDMA_PROBE_BRANCH_NONE;
		if (arg->map_type == PCI_P2PDMA_MAP_NOT_SUPPORTED && arg->map_error != -EINVAL)
			return "refused with an errno other than -EINVAL";
		return NULL;
	}
	switch (arg->map_type) {
	case PCI_P2PDMA_MAP_BUS_ADDR:
		arg->branch = arg->dma_addr == arg->bus_addr ? P2PDMA_PROBE_BRANCH_BUS_ADDR :
			      P2PDMA_PROBE_BRANCH_UNEXPLAINED;
		return arg->branch == P2PDMA_PROBE_BRANCH_BUS_ADDR ? NULL :
		       "BUS_ADDR, but the address is not the BAR's bus address";
	case PCI_P2PDMA_MAP_THRU_HOST_BRIDGE:
		if (translated && arg->iova_phys == arg->phys_addr) {
			arg->branch = P2PDMA_PROBE_BRANCH_IOVA;
			return NULL;
		}
		if (!translated && arg->dma_addr == arg->phys_addr) {
			arg->branch = P2PDMA_PROBE_BRANCH_PHYS;
			return NULL;
		}
		arg->branch = P2PDMA_PROBE_BRANCH_UNEXPLAINED;
		return "THRU_HOST_BRIDGE, but the address neither translates to the BAR nor is it";
	case PCI_P2PDMA_MAP_NOT_SUPPORTED:
		arg->branch = P2PDMA_PROBE_BRANCH_UNEXPLAINED;
		return "NOT_SUPPORTED, yet the map succeeded";
	default:
		arg->branch = P2PDMA_PROBE_BRANCH_UNEXPLAINED;
		return "mapped without pci_p2pdma_map_type() being asked";
	}
}

static void import_free(struct probe_import *imp)
{
	/* before the resv lock: the deferred unmap takes it */
	cancel_delayed_work_sync(&imp->unmap_work);
	if (imp->attach) {
		dma_resv_lock(imp->dmabuf->resv, NULL);
		if (imp->sgt)
			dma_buf_unmap_attachment(imp->attach, imp->sgt, DMA_BIDIRECTIONAL);
		imp->sgt = NULL;
		dma_resv_unlock(imp->dmabuf->resv);
		dma_buf_detach(imp->dmabuf, imp->attach);
	}
	if (imp->dmabuf)
		dma_buf_put(imp->dmabuf);
	pci_dev_put(imp->client);
	pci_dev_put(imp->provider);
	kfree(imp);
}

static struct probe_import *import_take(u32 id, bool remove);

/* Out of the table (if it has a slot), then freed */
static void import_drop(struct probe_import *imp)
{
	if (imp->id)
		import_take(imp->id, true);
	import_free(imp);
}

static int import_slot(struct probe_import *imp)
{
	unsigned long flags;
	int i;

	spin_lock_irqsave(&imports_lock, flags);
	for (i = 0; i < PROBE_MAX_IMPORTS; i++) {
		if (!imports[i]) {
			imports[i] = imp;
			imp->id = i + 1;
			break;
		}
	}
	spin_unlock_irqrestore(&imports_lock, flags);
	return i < PROBE_MAX_IMPORTS ? 0 : -ENOSPC;
}

static struct probe_import *import_take(u32 id, bool remove)
{
	struct probe_import *imp = NULL;
	unsigned long flags;

	if (!id || id > PROBE_MAX_IMPORTS)
		return NULL;
	spin_lock_irqsave(&imports_lock, flags);
	imp = imports[id - 1];
	if (remove)
		imports[id - 1] = NULL;
	spin_unlock_irqrestore(&imports_lock, flags);
	return imp;
}

static void import_report(struct p2pdma_probe_import *arg, const char *wrong)
{
	const char *branch = "?";

	if (arg->branch < ARRAY_SIZE(branch_names))
		branch = branch_names[arg->branch];

	pr_info("KTAP version 1\n");
	pr_info("1..1\n");
	pr_info("# import: client=%s provider=%s bar=%u offset=%#llx\n",
		arg->client, arg->provider, arg->bar, arg->offset);
	pr_info("# import: attach=%d map=%d map_type=%s branch=%s nents=%u\n",
		arg->attach_error, arg->map_error, map_type_name(arg->map_type),
		branch, arg->nents);
	pr_info("# import: dma_addr=%#llx dma_len=%#llx bus_addr=%#llx phys_addr=%#llx iova_phys=%#llx\n",
		arg->dma_addr, arg->dma_len, arg->bus_addr, arg->phys_addr, arg->iova_phys);
	if (wrong) {
		pr_info("# import: %s\n", wrong);
		pr_info("not ok 1 %s\n", arg->name);
	} else {
		pr_info("ok 1 %s\n", arg->name);
	}
}

struct probe_edu;
static struct probe_edu *edu_find(const char *name);

static int probe_import(struct p2pdma_probe_import *arg)
{
	struct iommu_domain *domain;
	struct probe_import *imp;
	struct scatterlist *sg;
	const char *wrong = NULL;
	int i, ret;

	arg->name[sizeof(arg->name) - 1] = 0;
	arg->client[sizeof(arg->client) - 1] = 0;
	arg->provider[sizeof(arg->provider) - 1] = 0;
	/* every out field starts from zero, whatever userspace left there */
	memset(&arg->id, 0, sizeof(*arg) - offsetof(struct p2pdma_probe_import, id));
	if (arg->bar >= PCI_STD_NUM_BARS || arg->flags & ~(P2PDMA_PROBE_IMPORT_HOLD |
	    P2PDMA_PROBE_IMPORT_NO_P2P | P2PDMA_PROBE_IMPORT_NO_INVALIDATE) ||
	    arg->defer_unmap_ms > PROBE_MAX_DEFER_MS)
		return -EINVAL;
	/* an importer that cannot be revoked must never hold a mapping of this module's */
	if (arg->flags & (P2PDMA_PROBE_IMPORT_NO_P2P | P2PDMA_PROBE_IMPORT_NO_INVALIDATE) &&
	    arg->flags & P2PDMA_PROBE_IMPORT_HOLD)
		return -EINVAL;
	/* only a held import is still mapped when an invalidate comes */
	if (arg->defer_unmap_ms && !(arg->flags & P2PDMA_PROBE_IMPORT_HOLD))
		return -EINVAL;
	/* a held mapping must be torn down with its client: only an edu of this module */
	if (arg->flags & P2PDMA_PROBE_IMPORT_HOLD && !edu_find(arg->client))
		return -EINVAL;
	imp = kzalloc_obj(*imp);
	if (!imp)
		return -ENOMEM;
	strscpy(imp->name, arg->name, sizeof(imp->name));
	INIT_DELAYED_WORK(&imp->unmap_work, import_deferred_unmap);
	imp->defer_unmap_ms = arg->defer_unmap_ms;
	imp->client = probe_pci_get(arg->client);
	imp->provider = probe_pci_get(arg->provider);
	if (!imp->client || !imp->provider) {
		ret = -ENODEV;
		goto err;
	}
	/* the DMA API and the domain lookup are only sound for a device the kernel owns */
	if (imp->client->dev.driver && !strcmp(imp->client->dev.driver->name, "vfio-pci")) {
		ret = -EBUSY;
		goto err;
	}
	if (!(pci_resource_flags(imp->provider, arg->bar) & IORESOURCE_MEM) ||
	    arg->offset >= pci_resource_len(imp->provider, arg->bar)) {
		ret = -EINVAL;
		goto err;
	}
	if (arg->flags & P2PDMA_PROBE_IMPORT_HOLD) {
		ret = import_slot(imp);
		if (ret)
			goto err;
	}
	imp->dmabuf = dma_buf_get(arg->fd);
	if (IS_ERR(imp->dmabuf)) {
		ret = PTR_ERR(imp->dmabuf);
		imp->dmabuf = NULL;
		goto err;
	}
	arg->bus_addr = pci_bus_address(imp->provider, arg->bar) + arg->offset;
	arg->phys_addr = pci_resource_start(imp->provider, arg->bar) + arg->offset;
	arg->map_type = P2PDMA_PROBE_MAP_UNOBSERVED;

	imp->attach = dma_buf_dynamic_attach(imp->dmabuf, &imp->client->dev,
					     importer_ops(arg->flags), imp);
	if (IS_ERR(imp->attach)) {
		arg->attach_error = PTR_ERR(imp->attach);
		imp->attach = NULL;
		import_report(arg, NULL);
		import_drop(imp);
		return 0;
	}

	dma_resv_lock(imp->dmabuf->resv, NULL);
	observe_begin();
	imp->sgt = dma_buf_map_attachment(imp->attach, DMA_BIDIRECTIONAL);
	arg->map_type = observe_end(&imp->client->dev);
	if (IS_ERR(imp->sgt)) {
		arg->map_error = PTR_ERR(imp->sgt);
		imp->sgt = NULL;
	} else {
		arg->dma_addr = sg_dma_address(imp->sgt->sgl);
		for_each_sgtable_dma_sg(imp->sgt, sg, i)
			arg->dma_len += sg_dma_len(sg);
		arg->nents = imp->sgt->nents;
		imp->dma_addr = arg->dma_addr;
	}
	/* under the resv lock: an invalidate cannot unmap between the map and this read */
	domain = iommu_get_domain_for_dev(&imp->client->dev);
	if (!arg->map_error && domain_translates(domain))
		arg->iova_phys = iommu_iova_to_phys(domain, arg->dma_addr);
	dma_resv_unlock(imp->dmabuf->resv);

	if (!map_type_probed)
		wrong = "pci_p2pdma_map_type() could not be probed in this kernel";
	else
		wrong = classify(arg, domain);
	import_report(arg, wrong);

	if (!(arg->flags & P2PDMA_PROBE_IMPORT_HOLD) || arg->map_error) {
		import_drop(imp);
		return 0;
	}
	arg->id = imp->id;
	return 0;
err:
	import_drop(imp);
	return ret;
}

static void state_report(struct probe_import *imp, struct p2pdma_probe_state *arg)
{
	unsigned long flags;

	dma_resv_lock(imp->dmabuf->resv, NULL);
	arg->mapped = !!imp->sgt;
	arg->invalidations = imp->invalidations;
	arg->invalidate_seq = imp->invalidate_seq;
	arg->invalidate_ns = imp->invalidate_ns;
	arg->unmap_ns = imp->unmap_ns;
	arg->unmap_seq = imp->unmap_seq;
	dma_resv_unlock(imp->dmabuf->resv);
	spin_lock_irqsave(&imports_lock, flags);
	arg->unbind_seq = imp->unbind_seq;
	arg->unbound_seq = imp->unbound_seq;
	arg->removed_seq = imp->removed_seq;
	spin_unlock_irqrestore(&imports_lock, flags);
	arg->dma_addr = imp->dma_addr;
	pr_info("# %s: import %u mapped=%u invalidations=%u events: unbind=%llu invalidate=%llu unmap=%llu unbound=%llu deleted=%llu\n",
		arg->name, imp->id, arg->mapped, arg->invalidations, arg->unbind_seq,
		arg->invalidate_seq, arg->unmap_seq, arg->unbound_seq, arg->removed_seq);
}

static int probe_state(struct p2pdma_probe_state *arg, unsigned int cmd)
{
	bool release = cmd == P2PDMA_PROBE_RELEASE;
	struct probe_import *imp = import_take(arg->id, release);
	struct sg_table *sgt;

	arg->name[sizeof(arg->name) - 1] = 0;
	if (!imp)
		return -ENOENT;
	if (cmd == P2PDMA_PROBE_REMAP) {
		dma_resv_lock(imp->dmabuf->resv, NULL);
		arg->error = 0;
		if (!imp->sgt) {
			sgt = dma_buf_map_attachment(imp->attach, DMA_BIDIRECTIONAL);
			if (IS_ERR(sgt)) {
				arg->error = PTR_ERR(sgt);
			} else {
				imp->sgt = sgt;
				imp->dma_addr = sg_dma_address(sgt->sgl);
			}
		}
		dma_resv_unlock(imp->dmabuf->resv);
		pr_info("# %s: remap of import %u: %d\n", arg->name, imp->id, arg->error);
	}
	state_report(imp, arg);
	if (release)
		import_free(imp);
	return 0;
}

/* -- edu, a DMA engine this module drives ----------------------------------------------------- */

struct probe_edu {
	struct pci_dev *pdev;
	void __iomem *regs;
	void *ram;		/* the DMA source: a coherent page */
	dma_addr_t ram_dma;
};

static struct probe_edu *edus[PROBE_MAX_EDUS];	/* under probe_mutex */

static struct probe_edu *edu_find(const char *name)
{
	int i;

	for (i = 0; i < PROBE_MAX_EDUS; i++)
		if (edus[i] && !strcmp(pci_name(edus[i]->pdev), name))
			return edus[i];
	return NULL;
}

static int edu_run(struct probe_edu *edu, u64 src, u64 dst, u32 count, u32 cmd)
{
	unsigned long deadline = jiffies + msecs_to_jiffies(EDU_TIMEOUT_MS);

	/* QEMU's edu ignores register writes while a transfer runs: this one would never start */
	if (readl(edu->regs + EDU_DMA_CMD) & EDU_CMD_RUN)
		return -EBUSY;
	writeq(src, edu->regs + EDU_DMA_SRC);
	writeq(dst, edu->regs + EDU_DMA_DST);
	writeq(count, edu->regs + EDU_DMA_CNT);
	writel(cmd | EDU_CMD_RUN, edu->regs + EDU_DMA_CMD);
	while (readl(edu->regs + EDU_DMA_CMD) & EDU_CMD_RUN) {
		if (time_after(jiffies, deadline))
			return -ETIMEDOUT;
		usleep_range(1000, 2000);
	}
	return 0;
}

/* RAM (@len bytes already in edu->ram) -> edu's buffer -> @addr: the device writes @addr */
static int edu_write_to(struct probe_edu *edu, u64 addr, u32 len)
{
	int ret;

	if (!len || len > EDU_MAX_TRANSFER)
		return -EINVAL;
	/*
	 * QEMU's edu drops the address bits above its dma_mask: without an IOMMU the write would
	 * land at a truncated address while the registers say it was issued. Refuse it.
	 */
	if (addr > DMA_BIT_MASK(edu_dma_bits) - (len - 1))
		return -ERANGE;
	ret = edu_run(edu, edu->ram_dma, EDU_BUFFER, len, 0);
	if (ret)
		return ret;
	return edu_run(edu, EDU_BUFFER, addr, len, EDU_CMD_TO_BUS);
}

static int edu_load(struct probe_edu *edu, u64 user, u32 len)
{
	if (!len || len > EDU_MAX_TRANSFER)
		return -EINVAL;
	if (copy_from_user(edu->ram, u64_to_user_ptr(user), len))
		return -EFAULT;
	return 0;
}

static int probe_dma(struct p2pdma_probe_dma *arg)
{
	struct probe_edu *edu;
	int ret;

	arg->client[sizeof(arg->client) - 1] = 0;
	arg->name[sizeof(arg->name) - 1] = 0;
	edu = edu_find(arg->client);
	if (!edu)
		return -ENODEV;
	ret = edu_load(edu, arg->pattern, arg->len);
	if (ret)
		return ret;
	arg->error = edu_write_to(edu, arg->addr, arg->len);
	pr_info("# %s: %s wrote %u bytes to %#llx: %d\n", arg->name, arg->client, arg->len,
		arg->addr, arg->error);
	return 0;
}

static int edu_probe(struct pci_dev *pdev, const struct pci_device_id *id)
{
	struct probe_edu *edu;
	int ret, i;

	if (pdev->vendor != 0x1234 || pdev->device != 0x11e8)
		return -ENODEV;
	edu = devm_kzalloc(&pdev->dev, sizeof(*edu), GFP_KERNEL);
	if (!edu)
		return -ENOMEM;
	ret = pcim_enable_device(pdev);
	if (ret)
		return ret;
	edu->regs = pcim_iomap_region(pdev, 0, "p2pdma_probe");
	if (IS_ERR(edu->regs))
		return PTR_ERR(edu->regs);
	if ((readl(edu->regs + EDU_ID) & 0xffff) != 0xed) {
		dev_err(&pdev->dev, "not an edu device: id %#x\n", readl(edu->regs + EDU_ID));
		return -ENODEV;
	}
	ret = dma_set_mask_and_coherent(&pdev->dev, DMA_BIT_MASK(edu_dma_bits));
	if (ret)
		return ret;
	edu->ram = dmam_alloc_coherent(&pdev->dev, PAGE_SIZE, &edu->ram_dma, GFP_KERNEL);
	if (!edu->ram)
		return -ENOMEM;
	pci_set_master(pdev);
	edu->pdev = pdev;

	mutex_lock(&probe_mutex);
	for (i = 0; i < PROBE_MAX_EDUS && edus[i]; i++)
		;
	if (i < PROBE_MAX_EDUS)
		edus[i] = edu;
	mutex_unlock(&probe_mutex);
	if (i == PROBE_MAX_EDUS)
		return -ENOSPC;
	pci_set_drvdata(pdev, edu);
	dev_info(&pdev->dev, "p2pdma_probe drives this edu (dma mask %u bits)\n", edu_dma_bits);
	return 0;
}

static void edu_remove(struct pci_dev *pdev)
{
	struct probe_edu *edu = pci_get_drvdata(pdev);
	int i;

	mutex_lock(&probe_mutex);
	for (i = 0; i < PROBE_MAX_EDUS; i++)
		if (edus[i] == edu)
			edus[i] = NULL;
	/* held imports map into this edu's domain: they go with it */
	for (i = 0; i < PROBE_MAX_IMPORTS; i++) {
		struct probe_import *imp = import_take(i + 1, false);

		if (imp && imp->client == pdev)
			import_drop(imp);
	}
	mutex_unlock(&probe_mutex);
}

/* No ID table: the harness binds an edu with driver_override, nothing else is taken */
static struct pci_driver edu_driver = {
	.name = "p2pdma_probe",
	.probe = edu_probe,
	.remove = edu_remove,
};

/* -- the two-step DMA API --------------------------------------------------------------------- */

struct iova_suite {
	unsigned int case_no;
	unsigned int failed;
	bool stuck;	/* an edu DMA timed out: it may still write, keep its target */
};

static void iova_case(struct iova_suite *s, bool ok, const char *name, const char *skip)
{
	s->case_no++;
	if (skip)
		pr_info("ok %u iova_%s # SKIP %s\n", s->case_no, name, skip);
	else if (ok)
		pr_info("ok %u iova_%s\n", s->case_no, name);
	else
		pr_info("not ok %u iova_%s\n", s->case_no, name);
	if (!ok && !skip)
		s->failed++;
}

#define IOVA_CASES 11
#define FALLBACK_CASES 5
#define LEAK_MASK_BITS 22	/* 4 MiB of IOVA: 1024 two-page cycles if nothing came back */

/*
 * Without a translating domain dma_iova_try_alloc() declines, and callers fall back to
 * dma_map_phys() (as dma_buf_phys_vec_to_sgt() does): RAM, then the peer's MMIO page.
 */
static void iova_fallback(struct iova_suite *s, struct probe_edu *edu,
			  struct p2pdma_probe_iova *arg, u8 *ram, phys_addr_t ram_phys,
			  phys_addr_t bar_phys)
{
	enum dma_data_direction dir = DMA_BIDIRECTIONAL;
	struct device *dev = &edu->pdev->dev;
	u64 limit = min_not_zero(dma_get_mask(dev), dev->bus_dma_limit);
	const char *high = "above the device's DMA limit: dma_map_phys() refuses it with a WARN";
	dma_addr_t ram_dma = DMA_MAPPING_ERROR, mmio_dma = DMA_MAPPING_ERROR;
	bool ram_ok = false, mmio_ok = false, ok;
	int ret, i;

	if (ram_phys + PAGE_SIZE - 1 <= limit) {
		ram_dma = dma_map_phys(dev, ram_phys, PAGE_SIZE, dir, 0);
		ram_ok = !dma_mapping_error(dev, ram_dma);
		pr_info("# fallback: dma_map_phys(ram %pa) = %pad\n", &ram_phys, &ram_dma);
	}
	iova_case(s, ram_ok, "fallback_map_ram", ram_phys + PAGE_SIZE - 1 > limit ? high : NULL);

	ret = ram_ok ? edu_load(edu, arg->pattern, arg->len) : -EINVAL;
	if (!ret)
		ret = edu_write_to(edu, ram_dma, arg->len);
	if (ret == -ETIMEDOUT)
		s->stuck = true;
	if (ram_ok && !s->stuck)	/* unmap first: a bounce buffer is copied back then */
		dma_unmap_phys(dev, ram_dma, PAGE_SIZE, dir, 0);
	ok = !ret && !memcmp(ram, edu->ram, arg->len);
	iova_case(s, ok, "fallback_dma_to_ram_lands", ram_ok ? NULL : "no RAM mapping");

	if (bar_phys + PAGE_SIZE - 1 <= limit) {
		mmio_dma = dma_map_phys(dev, bar_phys, PAGE_SIZE, dir, DMA_ATTR_MMIO);
		mmio_ok = !dma_mapping_error(dev, mmio_dma);
		pr_info("# fallback: dma_map_phys(mmio %pa, DMA_ATTR_MMIO) = %pad\n", &bar_phys,
			&mmio_dma);
	}
	iova_case(s, mmio_ok && mmio_dma == bar_phys, "fallback_map_mmio",
		  bar_phys + PAGE_SIZE - 1 > limit ? high : NULL);
	arg->iova = mmio_ok ? mmio_dma : 0;

	ret = mmio_ok ? edu_write_to(edu, mmio_dma, arg->len) : -EINVAL;
	if (ret == -ETIMEDOUT)
		s->stuck = true;
	iova_case(s, !ret, "fallback_dma_to_peer_issued", mmio_ok ? NULL : "no MMIO mapping");

	if (mmio_ok && !s->stuck)
		dma_unmap_phys(dev, mmio_dma, PAGE_SIZE, dir, DMA_ATTR_MMIO);
	iova_case(s, mmio_ok && !s->stuck, "fallback_unmap", mmio_ok ? NULL : "no MMIO mapping");

	for (i = 2 + FALLBACK_CASES; i < IOVA_CASES; i++)
		iova_case(s, false, "no_iova", "no IOVA was allocated: nothing to unlink");
}

static int probe_iova(struct p2pdma_probe_iova *arg)
{
	enum dma_data_direction dir = DMA_BIDIRECTIONAL;
	struct dma_iova_state state, big;
	struct iova_suite s = {};
	struct iommu_domain *domain;
	struct probe_edu *edu;
	struct pci_dev *peer;
	phys_addr_t ram_phys, bar_phys;
	struct page *page;
	unsigned int i, retried = 0;
	bool ok, ram_linked, mmio_linked;
	u8 *ram;
	int ret;

	arg->client[sizeof(arg->client) - 1] = 0;
	arg->provider[sizeof(arg->provider) - 1] = 0;
	edu = edu_find(arg->client);
	if (!edu)
		return -ENODEV;
	if (arg->bar >= PCI_STD_NUM_BARS || !PAGE_ALIGNED(arg->offset) ||
	    !arg->len || arg->len > EDU_MAX_TRANSFER || arg->repeats > 100000)
		return -EINVAL;
	peer = probe_pci_get(arg->provider);
	if (!peer)
		return -ENODEV;
	if (!(pci_resource_flags(peer, arg->bar) & IORESOURCE_MEM) ||
	    arg->offset >= pci_resource_len(peer, arg->bar) ||
	    pci_resource_len(peer, arg->bar) - arg->offset < PAGE_SIZE) {
		pci_dev_put(peer);
		return -EINVAL;
	}
	page = alloc_page(GFP_KERNEL | __GFP_ZERO);
	if (!page) {
		pci_dev_put(peer);
		return -ENOMEM;
	}
	ram = page_address(page);
	ram_phys = page_to_phys(page);
	bar_phys = pci_resource_start(peer, arg->bar) + arg->offset;
	domain = iommu_get_domain_for_dev(&edu->pdev->dev);

	pr_info("KTAP version 1\n");
	pr_info("# p2pdma_probe iova: client=%s domain=%s peer=%s bar=%u phys=%pa\n",
		arg->client, domain_translates(domain) ? "translating" :
		domain ? "identity" : "none", arg->provider, arg->bar, &bar_phys);
	pr_info("1..%u\n", IOVA_CASES);

	/* 1: a request the device's mask cannot hold is declined, without a splat */
	ret = dma_set_mask(&edu->pdev->dev, DMA_BIT_MASK(32));
	ok = !ret && !dma_iova_try_alloc(&edu->pdev->dev, &big, 0, SZ_4G + PAGE_SIZE);
	if (!ret && !ok)
		dma_iova_free(&edu->pdev->dev, &big);
	dma_set_mask(&edu->pdev->dev, DMA_BIT_MASK(edu_dma_bits));
	iova_case(&s, ok, "try_alloc_beyond_mask_declined", NULL);

	/* 2: two pages of IOVA, or the documented decline without a translating domain */
	arg->used_iova = dma_iova_try_alloc(&edu->pdev->dev, &state, 0, 2 * PAGE_SIZE);
	pr_info("# try_alloc: %s, addr=%pad\n", arg->used_iova ? "IOVA" :
		"declined (no translating domain: the fallback is dma_map_phys())", &state.addr);
	iova_case(&s, arg->used_iova == domain_translates(domain), "try_alloc", NULL);
	if (!arg->used_iova && domain_translates(domain)) {
		for (i = 0; i < IOVA_CASES - 2; i++)
			iova_case(&s, false, "after_try_alloc",
				  "dma_iova_try_alloc() declined on a translating domain");
		goto out;
	}
	if (!arg->used_iova) {
		iova_fallback(&s, edu, arg, ram, ram_phys, bar_phys);
		goto out;
	}

	/* 3: RAM at offset 0, the peer's BAR page at offset PAGE_SIZE (MMIO) */
	ret = dma_iova_link(&edu->pdev->dev, &state, ram_phys, 0, PAGE_SIZE, dir, 0);
	ram_linked = !ret;
	if (!ret)
		ret = dma_iova_link(&edu->pdev->dev, &state, bar_phys, PAGE_SIZE, PAGE_SIZE,
				    dir, DMA_ATTR_MMIO);
	mmio_linked = ram_linked && !ret;
	if (!ret)
		ret = dma_iova_sync(&edu->pdev->dev, &state, 0, 2 * PAGE_SIZE);
	pr_info("# link ram+mmio, sync: %d\n", ret);
	iova_case(&s, !ret, "link_ram_and_mmio", NULL);
	if (ret) {
		for (i = 0; i < IOVA_CASES - 3; i++)
			iova_case(&s, false, "after_link", "the link failed");
		/* every link undone before the space is freed (dma_iova_free()) */
		if (mmio_linked)
			dma_iova_unlink(&edu->pdev->dev, &state, PAGE_SIZE, PAGE_SIZE, dir,
					DMA_ATTR_MMIO);
		if (ram_linked)
			dma_iova_unlink(&edu->pdev->dev, &state, 0, PAGE_SIZE, dir, 0);
		dma_iova_free(&edu->pdev->dev, &state);
		goto out;
	}
	arg->iova = state.addr + PAGE_SIZE;

	/* 4: the client's domain now translates both pages */
	ok = iommu_iova_to_phys(domain, state.addr) == ram_phys &&
	     iommu_iova_to_phys(domain, state.addr + PAGE_SIZE) == bar_phys;
	pr_info("# translate: %pad -> %pa, %llx -> %pa\n", &state.addr, &ram_phys,
		(u64)arg->iova, &bar_phys);
	iova_case(&s, ok, "translation_after_link", NULL);

	/* 5: edu writes RAM through the IOVA; the CPU reads it back */
	ret = edu_load(edu, arg->pattern, arg->len);
	if (!ret)
		ret = edu_write_to(edu, state.addr, arg->len);
	s.stuck |= ret == -ETIMEDOUT;
	ok = !ret && !memcmp(ram, edu->ram, arg->len);
	iova_case(&s, ok, "dma_to_ram_lands", NULL);

	/* 6: edu writes the peer's BAR through the IOVA (the host checks the bytes) */
	ret = edu_write_to(edu, arg->iova, arg->len);
	s.stuck |= ret == -ETIMEDOUT;
	pr_info("# dma to peer at iova %#llx: %d\n", arg->iova, ret);
	iova_case(&s, !ret, "dma_to_peer_issued", NULL);

	/* 7: unlink the peer's page: its translation is gone, RAM's stays */
	dma_iova_unlink(&edu->pdev->dev, &state, PAGE_SIZE, PAGE_SIZE, dir, DMA_ATTR_MMIO);
	ok = !iommu_iova_to_phys(domain, state.addr + PAGE_SIZE) &&
	     iommu_iova_to_phys(domain, state.addr) == ram_phys;
	iova_case(&s, ok, "translation_gone_after_unlink", NULL);

	/* 8: a DMA to the unlinked IOVA faults (the host checks nothing landed) */
	ret = edu_load(edu, arg->after_unlink, arg->len);
	if (!ret)
		ret = edu_write_to(edu, arg->iova, arg->len);
	s.stuck |= ret == -ETIMEDOUT;
	pr_info("# dma to unlinked iova %#llx: %d\n", arg->iova, ret);
	iova_case(&s, !ret, "dma_after_unlink_issued", NULL);

	/* 9: after an unlink the rest is unlinked too, then the whole space is freed */
	dma_iova_unlink(&edu->pdev->dev, &state, 0, PAGE_SIZE, dir, 0);
	dma_iova_free(&edu->pdev->dev, &state);
	ok = !iommu_iova_to_phys(domain, state.addr);
	iova_case(&s, ok, "translation_gone_after_free", NULL);

	/*
	 * 10: alloc, link, destroy many times in an IOVA space a leak would exhaust: a narrowed
	 * mask leaves LEAK_MASK_BITS of IOVA, @repeats cycles need far more if none is given back
	 */
	ret = dma_set_mask(&edu->pdev->dev, DMA_BIT_MASK(LEAK_MASK_BITS));
	for (i = 0; !ret && i < arg->repeats; i++) {
		/* one page allocated, one linked: destroy frees exactly what was allocated */
		if (!dma_iova_try_alloc(&edu->pdev->dev, &state, 0, PAGE_SIZE)) {
			usleep_range(20000, 30000);	/* let a lazy flush queue give IOVAs back */
			if (!dma_iova_try_alloc(&edu->pdev->dev, &state, 0, PAGE_SIZE))
				break;
			retried++;
		}
		ret = dma_iova_link(&edu->pdev->dev, &state, ram_phys, 0, PAGE_SIZE, dir, 0);
		dma_iova_destroy(&edu->pdev->dev, &state, ret ? 0 : PAGE_SIZE, dir, 0);
		cond_resched();
	}
	dma_set_mask(&edu->pdev->dev, DMA_BIT_MASK(edu_dma_bits));
	pr_info("# %u of %u alloc/link/destroy cycles in %u bits of IOVA (%u after a flush): %d\n",
		i, arg->repeats, LEAK_MASK_BITS, retried, ret);
	iova_case(&s, i == arg->repeats && !ret, "repeat_no_leak", NULL);

	/* 11: the MMIO page linked alone at the start of a fresh IOVA, as map_dma_buf does */
	ok = dma_iova_try_alloc(&edu->pdev->dev, &state, bar_phys, PAGE_SIZE);
	if (ok) {
		ret = dma_iova_link(&edu->pdev->dev, &state, bar_phys, 0, PAGE_SIZE, dir,
				    DMA_ATTR_MMIO);
		mmio_linked = !ret;
		if (!ret)
			ret = dma_iova_sync(&edu->pdev->dev, &state, 0, PAGE_SIZE);
		ok = !ret && iommu_iova_to_phys(domain, state.addr) == bar_phys;
		dma_iova_destroy(&edu->pdev->dev, &state, mmio_linked ? PAGE_SIZE : 0, dir,
				 DMA_ATTR_MMIO);
	}
	iova_case(&s, ok, "mmio_alone", NULL);
out:
	arg->failed = s.failed;
	if (s.stuck)	/* edu may still write it: leaking one page beats a use-after-free */
		pr_warn("p2pdma_probe: an edu DMA timed out, keeping its target page\n");
	else
		__free_page(page);
	pci_dev_put(peer);
	return 0;
}

/* -- the device node ----------------------------------------------------------------------- */

static long probe_ioctl(struct file *file, unsigned int cmd, unsigned long uarg)
{
	void __user *user = (void __user *)uarg;
	union {
		struct p2pdma_probe_census census;
		struct p2pdma_probe_import import;
		struct p2pdma_probe_state state;
		struct p2pdma_probe_dma dma;
		struct p2pdma_probe_iova iova;
	} arg;
	size_t size = _IOC_SIZE(cmd);
	int ret;

	if (_IOC_TYPE(cmd) != P2PDMA_PROBE_IOC || size > sizeof(arg))
		return -ENOTTY;
	if (copy_from_user(&arg, user, size))
		return -EFAULT;

	mutex_lock(&probe_mutex);
	switch (cmd) {
	case P2PDMA_PROBE_CENSUS:
		ret = probe_census(&arg.census);
		break;
	case P2PDMA_PROBE_IMPORT:
		ret = probe_import(&arg.import);
		break;
	case P2PDMA_PROBE_STATE:
	case P2PDMA_PROBE_REMAP:
	case P2PDMA_PROBE_RELEASE:
		ret = probe_state(&arg.state, cmd);
		break;
	case P2PDMA_PROBE_DMA:
		ret = probe_dma(&arg.dma);
		break;
	case P2PDMA_PROBE_IOVA:
		ret = probe_iova(&arg.iova);
		break;
	default:
		ret = -ENOTTY;
	}
	mutex_unlock(&probe_mutex);
	if (!ret && copy_to_user(user, &arg, size))
		ret = -EFAULT;
	return ret;
}

static const struct file_operations probe_fops = {
	.owner = THIS_MODULE,
	.unlocked_ioctl = probe_ioctl,
	.compat_ioctl = compat_ptr_ioctl,
};

static struct miscdevice probe_misc = {
	.minor = MISC_DYNAMIC_MINOR,
	.name = "p2pdma_probe",
	.fops = &probe_fops,
	.mode = 0600,
};

static int __init probe_init(void)
{
	int ret, i;

	if (edu_dma_bits < 12 || edu_dma_bits > 64)
		return -EINVAL;
	ret = register_kretprobe(&map_type_probe);
	map_type_probed = !ret;
	if (ret)
		pr_warn("p2pdma_probe: cannot probe pci_p2pdma_map_type: %d\n", ret);
	for (i = 0; i < ARRAY_SIZE(calc_symbols) && !calc_probed; i++) {
		calc_probe.kp.symbol_name = calc_symbols[i];
		calc_probe.kp.addr = NULL;
		calc_probe.kp.flags = 0;
		calc_probed = !register_kretprobe(&calc_probe);
		if (calc_probed)
			calc_symbol = calc_symbols[i];
	}
	if (!calc_probed)
		pr_warn("p2pdma_probe: calc_map_type_and_dist is not probe-able: census without map types\n");

	ret = bus_register_notifier(&pci_bus_type, &probe_bus_nb);
	if (ret)
		goto err_probes;
	ret = pci_register_driver(&edu_driver);
	if (ret)
		goto err_notifier;
	ret = misc_register(&probe_misc);
	if (ret)
		goto err_driver;
	pr_info("p2pdma_probe: ready (map type probe %s, census map types %s)\n",
		map_type_probed ? "on" : "off", calc_probed ? calc_symbol : "off");
	return 0;

err_driver:
	pci_unregister_driver(&edu_driver);
err_notifier:
	bus_unregister_notifier(&pci_bus_type, &probe_bus_nb);
err_probes:
	if (calc_probed)
		unregister_kretprobe(&calc_probe);
	if (map_type_probed)
		unregister_kretprobe(&map_type_probe);
	return ret;
}

static void __exit probe_exit(void)
{
	int i;

	misc_deregister(&probe_misc);
	for (i = 0; i < PROBE_MAX_IMPORTS; i++) {
		struct probe_import *imp = import_take(i + 1, true);

		if (imp)
			import_free(imp);
	}
	pci_unregister_driver(&edu_driver);
	bus_unregister_notifier(&pci_bus_type, &probe_bus_nb);
	if (calc_probed)
		unregister_kretprobe(&calc_probe);
	if (map_type_probed)
		unregister_kretprobe(&map_type_probe);
}

module_init(probe_init);
module_exit(probe_exit);

MODULE_DESCRIPTION("p2p-testbed probe: PCI P2PDMA map types, dma-buf import and revoke, IOVA API");
MODULE_LICENSE("GPL");
MODULE_IMPORT_NS("DMA_BUF");
