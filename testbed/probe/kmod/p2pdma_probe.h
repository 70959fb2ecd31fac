/* SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note */
/*
 * p2pdma_probe: the ioctl interface of the testbed's kernel-side P2PDMA probe.
 *
 * Every ioctl prints one KTAP document to the kernel log; the out fields repeat what the
 * document says, for the caller. Strings are NUL-terminated PCI names ("0000:03:00.0").
 * The layout is mirrored by testbed/probe/uapi.py.
 */
#ifndef _P2PDMA_PROBE_H
#define _P2PDMA_PROBE_H

#include <linux/ioctl.h>
#include <linux/types.h>

#define P2PDMA_PROBE_NAME_LEN	16
#define P2PDMA_PROBE_CASE_LEN	64
#define P2PDMA_PROBE_TYPE_LEN	32	/* a map type's name, as the kernel's enum spells it */

/*
 * What pci_p2pdma_map_type() or calc_map_type_and_dist() returned, as the kernel under test
 * numbers it; the name beside it comes from that kernel's own enum (read at build time).
 */
#define P2PDMA_PROBE_MAP_UNOBSERVED	0xffffffffu

/*
 * How the exporter's map_dma_buf mapped the range for the client: seen by kprobes on
 * dma_iova_link() and dma_map_phys() during the map (neither ran: the bus address), since on
 * x86 a BAR's bus address, its CPU address and an identity IOVA are the same number.
 */
enum p2pdma_probe_branch {
	P2PDMA_PROBE_BRANCH_NONE = 0,	/* not mapped (refused, or not tried) */
	P2PDMA_PROBE_BRANCH_BUS_ADDR,	/* pci_p2pdma_bus_addr_map(): the BAR's bus address */
	P2PDMA_PROBE_BRANCH_IOVA,	/* dma_iova_link(): an IOVA mapped to the BAR */
	P2PDMA_PROBE_BRANCH_PHYS,	/* dma_map_phys(): the CPU address, or its IOVA */
	P2PDMA_PROBE_BRANCH_UNEXPLAINED, /* calls or an address the map type does not explain */
};

/* P2PDMA_PROBE_CENSUS: every (endpoint with an MMIO BAR, endpoint) pair */
struct p2pdma_probe_census {
	__u32 pairs;		/* out */
	__u32 map_type_observed;	/* out: 1 if calc_map_type_and_dist() could be observed */
};

/* P2PDMA_PROBE_IMPORT: attach to a dma-buf on the client's behalf and map it */
#define P2PDMA_PROBE_IMPORT_HOLD	0x1	/* keep the mapping (else unmap, detach) */
#define P2PDMA_PROBE_IMPORT_NO_P2P	0x2	/* an importer without allow_peer2peer */
#define P2PDMA_PROBE_IMPORT_NO_INVALIDATE 0x4	/* ... without invalidate_mappings: not revocable */

#define P2PDMA_PROBE_MAX_SG	8	/* entries of a mapping reported one by one */

/* One entry of the client's mapping */
struct p2pdma_probe_sg {
	__u64 index;		/* its place among the mapping's DMA entries, from 0 */
	__u64 addr;		/* sg_dma_address() */
	__u64 len;		/* sg_dma_len() */
	__u64 phys;		/* what the client's IOMMU domain maps addr to (0: none) */
};

struct p2pdma_probe_import {
	__s32 fd;		/* in: the dma-buf */
	__u32 flags;		/* in: P2PDMA_PROBE_IMPORT_* */
	char client[P2PDMA_PROBE_NAME_LEN];	/* in: the importing device */
	char provider[P2PDMA_PROBE_NAME_LEN];	/* in: the exporting device */
	__u32 bar;		/* in: the exported BAR */
	__u32 defer_unmap_ms;	/* in: HOLD only: invalidate_mappings leaves the unmap to a work
				 * item this many ms later, as an importer with DMA in flight
				 * does (0: unmap at once; at most 10000)
				 */
	__u64 offset;		/* in: the exported range's offset in the BAR */
	char name[P2PDMA_PROBE_CASE_LEN];	/* in: the KTAP case name */
	__u32 id;		/* out: handle of a held import */
	__s32 attach_error;	/* out: 0 or -errno of dma_buf_dynamic_attach() */
	__s32 map_error;	/* out: 0 or -errno of dma_buf_map_attachment() */
	__u32 map_type;		/* out: what pci_p2pdma_map_type() returned */
	__u32 branch;		/* out: enum p2pdma_probe_branch */
	__u32 nents;		/* out */
	__u64 dma_addr;		/* out: first DMA address */
	__u64 dma_len;		/* out: total DMA length */
	__u64 bus_addr;		/* out: the range's PCI bus address */
	__u64 phys_addr;	/* out: the range's CPU physical address */
	__u64 iova_phys;	/* out: what the client's IOMMU domain maps dma_addr to (0: none) */
	char map_type_name[P2PDMA_PROBE_TYPE_LEN];	/* out: map_type as the kernel names it */
	__u32 branch_observed;	/* out: 1: the branch was seen (kprobes), 0: inferred */
	__u32 dma_bits;		/* in: an edu of this module: its DMA mask for this map
				 * (12..64; 0: the module's edu_dma_bits); a held import's
				 * later remaps use the module's mask
				 */
	__u32 sg_picked;	/* in: how many of sg_pick[] to report (at most
				 * P2PDMA_PROBE_MAX_SG); 0: the first P2PDMA_PROBE_MAX_SG
				 */
	__u32 sg_pick[P2PDMA_PROBE_MAX_SG];	/* in: the indices of the entries to report */
	__u32 sg_count;		/* out: entries in sg[], in the mapping's order */
	struct p2pdma_probe_sg sg[P2PDMA_PROBE_MAX_SG];	/* out */
};

/* P2PDMA_PROBE_STATE: where a held import stands (also P2PDMA_PROBE_REMAP, _RELEASE) */
struct p2pdma_probe_state {
	__u32 id;		/* in */
	__s32 error;		/* out: REMAP: 0 or -errno of the new map */
	__u32 mapped;		/* out */
	__u32 invalidations;	/* out: calls of invalidate_mappings */
	__u64 invalidate_seq;	/* out: event number of the first invalidate_mappings, 0: none */
	__u64 removed_seq;	/* out: event number of the exporter's removal, 0: not removed */
	__u64 dma_addr;		/* out: the address last mapped */
	__u64 unbind_seq;	/* out: the exporter's driver started to unbind (event number) */
	__u64 unbound_seq;	/* out: the exporter's driver was unbound (event number) */
	char name[P2PDMA_PROBE_CASE_LEN];	/* in: the KTAP case name */
	__u64 invalidate_ns;	/* out: CLOCK_MONOTONIC of the first invalidate_mappings, 0: none */
	__u64 unmap_ns;		/* out: CLOCK_MONOTONIC of the last unmap it caused, 0: none */
	__u64 unmap_seq;	/* out: event number of that unmap, 0: none */
	__u32 quiet;		/* in: 1: no kernel log line (a caller that remaps in a loop) */
	__u32 pad;
};

/* P2PDMA_PROBE_DMA: the probe's edu copies the pattern to addr (RAM -> edu -> addr) */
struct p2pdma_probe_dma {
	char client[P2PDMA_PROBE_NAME_LEN];	/* in: an edu bound to this module */
	__u64 addr;		/* in: bus address/IOVA to write */
	__u64 pattern;		/* in: user pointer to the bytes */
	__u32 len;		/* in: 1..4095 (QEMU 7.2's edu aborts on 4096) */
	__s32 error;		/* out: 0, -ERANGE beyond edu's DMA mask, -EBUSY, -ETIMEDOUT */
	char name[P2PDMA_PROBE_CASE_LEN];	/* in: the KTAP case name */
};

/*
 * P2PDMA_PROBE_WATCH: what the kernel does for another driver's DMA (the block layer's
 * page-based P2P path, an NVMe reading p2pmem): from start to stop, in any task, the calls of
 * pci_p2pdma_map_type() for the client and the maps of the provider's memory for the client.
 * One watch at a time.
 */
struct p2pdma_probe_watch {
	char client[P2PDMA_PROBE_NAME_LEN];	/* in: the device whose maps are watched */
	char provider[P2PDMA_PROBE_NAME_LEN];	/* in: whose memory BARs count as P2P memory */
	char name[P2PDMA_PROBE_CASE_LEN];	/* in: the KTAP case name (stop) */
	__u32 stop;		/* in: 0: start watching, 1: stop and report */
	__u32 calls;		/* out: pci_p2pdma_map_type() calls for the client */
	__u32 map_type;		/* out: what the last one returned */
	__u32 iova_links;	/* out: dma_iova_link() of the provider's memory for the client */
	__u32 phys_maps;	/* out: dma_map_phys() of the provider's memory for the client */
	__u32 pad;
	char map_type_name[P2PDMA_PROBE_TYPE_LEN];	/* out: map_type as the kernel names it */
};

/*
 * P2PDMA_PROBE_IOVA: the two-step DMA API on an edu of this module, against a peer BAR. The
 * kernel's P2P decision for the pair comes first: the peer's BAR is linked into an IOVA only
 * when the kernel maps the pair THRU_HOST_BRIDGE, as dma_buf_phys_vec_to_sgt() does.
 */
struct p2pdma_probe_iova {
	char client[P2PDMA_PROBE_NAME_LEN];	/* in: an edu bound to this module */
	char provider[P2PDMA_PROBE_NAME_LEN];	/* in: the peer whose BAR is linked */
	__u32 bar;		/* in */
	__u32 len;		/* in: bytes DMAed to the peer (the pattern) */
	__u64 offset;		/* in: where in the BAR the link starts (page aligned) */
	__u64 pattern;		/* in: user pointer to len bytes for the peer */
	__u64 after_unlink;	/* in: user pointer to len bytes DMAed after unlink */
	__u32 repeats;		/* in: failing links to unwind (leak check) */
	__u32 failed;		/* out: cases not ok */
	__u32 used_iova;	/* out: 1 if dma_iova_try_alloc() gave an IOVA */
	__u32 pad;
	__u64 iova;		/* out: the IOVA the peer's page was linked at */
	__u32 map_type;		/* out: calc_map_type_and_dist() for (peer, client) */
	__u32 pad2;
	char map_type_name[P2PDMA_PROBE_TYPE_LEN];	/* out */
};

#define P2PDMA_PROBE_IOC	0xb7
#define P2PDMA_PROBE_CENSUS	_IOWR(P2PDMA_PROBE_IOC, 1, struct p2pdma_probe_census)
#define P2PDMA_PROBE_IMPORT	_IOWR(P2PDMA_PROBE_IOC, 2, struct p2pdma_probe_import)
#define P2PDMA_PROBE_STATE	_IOWR(P2PDMA_PROBE_IOC, 3, struct p2pdma_probe_state)
#define P2PDMA_PROBE_REMAP	_IOWR(P2PDMA_PROBE_IOC, 4, struct p2pdma_probe_state)
#define P2PDMA_PROBE_RELEASE	_IOWR(P2PDMA_PROBE_IOC, 5, struct p2pdma_probe_state)
#define P2PDMA_PROBE_DMA	_IOWR(P2PDMA_PROBE_IOC, 6, struct p2pdma_probe_dma)
#define P2PDMA_PROBE_IOVA	_IOWR(P2PDMA_PROBE_IOC, 7, struct p2pdma_probe_iova)
#define P2PDMA_PROBE_WATCH	_IOWR(P2PDMA_PROBE_IOC, 8, struct p2pdma_probe_watch)

#endif /* _P2PDMA_PROBE_H */
