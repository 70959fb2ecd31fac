"""Cross-reference and semantic checks: everything QEMU or the kernel would trip over later."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator

from ..located import format_path
from .kernel_args import owned_arg, parse_kernel_args
from .layout import ROOT_BUS_RESERVED, build_layout
from .model import ROOT_BUS, Endpoint, EndpointKind, HotplugMode, IommuMode, IommuType, Topology
from .problems import Problem
from .reader import Reader
from .units import MiB, format_size, is_power_of_two

Report = Callable[..., None]  # problem(path, message, allowed="")

MIN_CMB = 2 * MiB  # the NVMe driver only publishes a CMB of at least 2 MiB as p2pmem
MAX_BUS = 255


def validate(topo: Topology, r: Reader) -> list[Problem]:
    found: list[Problem] = []

    def problem(path: tuple, message: str, allowed: str = "") -> None:
        found.append(Problem(topo.source, r.line(path), format_path(path), message, allowed))

    _check_ids(topo, r, problem)
    if found:
        return found  # references cannot be checked against ambiguous ids
    _check_buses(topo, problem)
    _check_sizes(topo, problem)
    _check_iommu_and_hotplug(topo, problem)
    _check_kernel_args(topo, problem)
    _check_expectations(topo, problem)
    if not found:
        _check_bus_numbers(topo, problem)
    return found


def _all_ids(topo: Topology) -> list[tuple[str, tuple]]:
    ids: list[tuple[str, tuple]] = []
    ids += [(hb.id, ("host_bridges", i, "id")) for i, hb in enumerate(topo.host_bridges)]
    ids += [(rp.id, ("root_ports", i, "id")) for i, rp in enumerate(topo.root_ports)]
    for i, sw in enumerate(topo.switches):
        ids.append((sw.id, ("switches", i, "id")))
        ids += [(d, ("switches", i, "downstream", j)) for j, d in enumerate(sw.downstream)]
    ids += [(ep.id, ("endpoints", i, "id")) for i, ep in enumerate(topo.endpoints)]
    return ids


def _check_ids(topo: Topology, r: Reader, problem: Report) -> None:
    ids = _all_ids(topo)
    counts = Counter(ident for ident, _ in ids)
    for ident, path in ids:
        if ident == ROOT_BUS:
            problem(path, f"'{ROOT_BUS}' is the q35 root bus and cannot be redefined")
        elif counts[ident] > 1:
            problem(path, f"duplicate id '{ident}'", "each host bridge, port, switch and endpoint needs its own id")


def _check_buses(topo: Topology, problem: Report) -> None:
    root_buses = [ROOT_BUS] + [hb.id for hb in topo.host_bridges]
    ports = [rp.id for rp in topo.root_ports] + [d for sw in topo.switches for d in sw.downstream]
    switch_ids = {sw.id for sw in topo.switches}
    _check_root_port_buses(topo, problem, root_buses)
    # Who sits on each port: a switch or endpoints (one per function), never both.
    occupants: dict[str, list[tuple[str, int, tuple]]] = {}
    _check_switch_buses(topo, problem, ports, switch_ids, occupants)
    root_slots: dict[tuple[str, int, int], str] = {}
    for i, ep in enumerate(topo.endpoints):
        _check_endpoint_bus(topo, problem, i, ep, root_buses, ports, switch_ids, occupants, root_slots)
    for rp_slot_owner in _explicit_root_port_slots(topo, root_slots):
        problem(*rp_slot_owner)
    for port, items in occupants.items():
        _check_port_occupants(problem, port, items, switch_ids)
    for ep_i, ep in enumerate(topo.endpoints):
        if ep.bus in root_buses and ep.function and ep.slot is not None:
            if (ep.bus, ep.slot, 0) not in root_slots:
                problem(
                    ("endpoints", ep_i, "function"),
                    f"{ep.bus} slot {ep.slot:#x} has function {ep.function} but no function 0",
                )


def _check_root_port_buses(topo: Topology, problem: Report, root_buses: list[str]) -> None:
    for i, rp in enumerate(topo.root_ports):
        if rp.bus not in root_buses:
            problem(
                ("root_ports", i, "bus"),
                f"root port '{rp.id}' is on '{rp.bus}', which is not a root bus",
                ", ".join(root_buses),
            )
        if rp.slot is not None and rp.bus == ROOT_BUS and rp.slot in ROOT_BUS_RESERVED:
            problem(
                ("root_ports", i, "slot"),
                f"slot {rp.slot:#x} of pcie.0 is taken by the {ROOT_BUS_RESERVED[rp.slot]}",
                "2 to 0x1b",
            )


def _check_switch_buses(
    topo: Topology, problem: Report, ports: list[str], switch_ids: set[str], occupants: dict
) -> None:
    for i, sw in enumerate(topo.switches):
        if sw.bus in switch_ids:
            problem(
                ("switches", i, "bus"),
                f"switch '{sw.id}' is on the upstream port of switch '{sw.bus}'; "
                "a switch hangs below a downstream port",
                ", ".join(ports) or "(no ports defined)",
            )
        elif sw.bus not in ports:
            problem(
                ("switches", i, "bus"),
                f"switch '{sw.id}' is on '{sw.bus}', which is not a port",
                ", ".join(ports) or "(no ports defined)",
            )
        else:
            occupants.setdefault(sw.bus, []).append((sw.id, 0, ("switches", i, "bus")))
    cycle = _switch_cycle(topo)
    if cycle:
        first = next(i for i, sw in enumerate(topo.switches) if sw.id == cycle[0])
        problem(
            ("switches", first, "bus"),
            f"switches are connected in a loop: {' -> '.join([*cycle, cycle[0]])} (each below the next)",
            "a tree: every switch below a root port or another switch's downstream port, none below itself",
        )


def _check_endpoint_bus(
    topo: Topology,
    problem: Report,
    i: int,
    ep: Endpoint,
    root_buses: list[str],
    ports: list[str],
    switch_ids: set[str],
    occupants: dict,
    root_slots: dict,
) -> None:
    path = ("endpoints", i)
    if ep.bus in switch_ids:
        sw = next(s for s in topo.switches if s.id == ep.bus)
        problem(
            path + ("bus",),
            f"'{ep.bus}' is a switch's upstream port; only its downstream ports are below it",
            ", ".join(sw.downstream),
        )
    elif ep.bus in root_buses and ep.bus != ROOT_BUS:
        ports_there = [rp.id for rp in topo.root_ports if rp.bus == ep.bus]
        problem(
            path + ("bus",),
            f"'{ep.bus}' is a pxb-pcie host bridge: QEMU plugs only root ports into it, not endpoints",
            f"a root port with `bus: {ep.bus}` "
            + (f"({', '.join(ports_there)})" if ports_there else "(add one to root_ports)"),
        )
    elif ep.bus in root_buses:
        _check_root_bus_endpoint(problem, path, ep, root_slots)
    elif ep.bus not in ports:
        problem(
            path + ("bus",),
            f"endpoint '{ep.id}' is on '{ep.bus}', which does not exist",
            ", ".join(root_buses + ports),
        )
    else:
        if ep.slot not in (None, 0):
            problem(path + ("slot",), "below a port the only device number is 0", "0, or leave it out")
        occupants.setdefault(ep.bus, []).append((ep.id, ep.function, path + ("bus",)))


def _check_root_bus_endpoint(problem: Report, path: tuple, ep: Endpoint, root_slots: dict) -> None:
    if ep.function and ep.slot is None:
        problem(path + ("slot",), "a function other than 0 on a root bus needs an explicit slot")
    if ep.bus == ROOT_BUS and ep.slot in ROOT_BUS_RESERVED:
        problem(
            path + ("slot",),
            f"slot {ep.slot:#x} of pcie.0 is taken by the {ROOT_BUS_RESERVED[ep.slot]}",
            "2 to 0x1b",
        )
    if ep.slot is not None:
        key = (ep.bus, ep.slot, ep.function)
        if key in root_slots:
            problem(
                path + ("slot",),
                f"{ep.bus} slot {ep.slot:#x}.{ep.function} is already used by '{root_slots[key]}'",
            )
        root_slots[key] = ep.id


def _check_port_occupants(problem: Report, port: str, items: list, switch_ids: set[str]) -> None:
    switches_here = [x for x in items if x[0] in switch_ids]
    if switches_here and len(items) > 1:
        problem(items[-1][2], f"port '{port}' holds switch '{switches_here[0][0]}'; nothing else fits there")
        return
    functions = Counter(fn for _, fn, _ in items)
    for _ident, fn, path in items:
        if functions[fn] > 1:
            problem(
                path,
                f"port '{port}' has more than one device at function {fn}",
                "one device per function; use function: 1..7 for a multi-function device",
            )
    if functions and 0 not in functions:
        problem(
            items[0][2],
            f"port '{port}' has functions {sorted(functions)} but no function 0",
            "a multi-function device needs function 0",
        )


def _explicit_root_port_slots(topo: Topology, root_slots: dict) -> Iterator[tuple[tuple, str]]:
    seen: dict[tuple[str, int], str] = {(b, s): who for (b, s, _), who in root_slots.items()}
    for i, rp in enumerate(topo.root_ports):
        if rp.slot is None:
            continue
        key = (rp.bus, rp.slot)
        if key in seen:
            yield (("root_ports", i, "slot"), f"{rp.bus} slot {rp.slot:#x} is already used by '{seen[key]}'")
        seen[key] = rp.id


def _switch_cycle(topo: Topology) -> list[str]:
    """The switches of a loop (each below a downstream port of the next), or [] for a tree."""
    parent_switch = {}
    owner = {d: sw.id for sw in topo.switches for d in sw.downstream}
    for sw in topo.switches:
        if sw.bus in owner:
            parent_switch[sw.id] = owner[sw.bus]
    for start in parent_switch:
        path: list[str] = []
        node = start
        while node in parent_switch:
            if node in path:
                return path[path.index(node) :]
            path.append(node)
            node = parent_switch[node]
    return []


def _check_sizes(topo: Topology, problem: Report) -> None:
    for i, ep in enumerate(topo.endpoints):
        path = ("endpoints", i)
        if ep.kind is EndpointKind.NVME:
            if ep.size < MiB or ep.size % 4096:
                problem(
                    path + ("size",),
                    f"namespace size {format_size(ep.size)} is too small or not a multiple of 4K",
                    "1M or more, a multiple of 4K",
                )
            if ep.cmb:
                if ep.cmb % MiB or not is_power_of_two(ep.cmb):
                    problem(
                        path + ("cmb",),
                        f"CMB size {format_size(ep.cmb)} is not a power of two in MiB (QEMU's cmb_size_mb)",
                        "2M, 4M, 8M, ... 1G",
                    )
                elif ep.cmb < MIN_CMB:
                    problem(
                        path + ("cmb",),
                        f"a CMB of {format_size(ep.cmb)} is below the minimum the kernel publishes as p2pmem",
                        "2M or more, a power of two",
                    )
                elif ep.cmb > 1 << 30:
                    problem(
                        path + ("cmb",),
                        f"a CMB of {format_size(ep.cmb)} does not fit the emulated 64-bit window comfortably",
                        "at most 1G",
                    )
        elif ep.kind is EndpointKind.IVSHMEM:
            if not is_power_of_two(ep.size) or ep.size < 4096:
                problem(
                    path + ("size",),
                    f"ivshmem size {format_size(ep.size)} is not a power of two of at least 4K (it becomes BAR2)",
                    "4K, 8K, ... e.g. 1M",
                )
        elif ep.kind is EndpointKind.VIRTIO_BLK:
            if ep.size < MiB or ep.size % 512:
                problem(
                    path + ("size",),
                    f"disk size {format_size(ep.size)} is too small or not a multiple of 512",
                    "1M or more",
                )
        elif ep.kind is EndpointKind.EDU and ep.dma_mask is not None:
            if not is_power_of_two(ep.dma_mask + 1) or ep.dma_mask < (1 << 12) - 1:
                problem(
                    path + ("dma_mask",),
                    f"dma_mask {ep.dma_mask:#x} is not of the form 2^n-1",
                    "e.g. 0xfffffff (28 bits, the default), 0xffffffff",
                )


def _check_iommu_and_hotplug(topo: Topology, problem: Report) -> None:
    if topo.iommu.type is IommuType.NONE and topo.iommu.mode is IommuMode.PASSTHROUGH:
        problem(("iommu", "mode"), "passthrough mode needs an IOMMU", "set iommu.type to intel, virtio or amd")
    ports_hotplug = {rp.id: rp.hotplug for rp in topo.root_ports}
    ports_hotplug |= {d: sw.hotplug for sw in topo.switches for d in sw.downstream}
    for i, ep in enumerate(topo.endpoints):
        if ep.plugged:
            continue
        path = ("endpoints", i, "plugged")
        if ep.bus in ports_hotplug and not ports_hotplug[ep.bus]:
            problem(path, f"'{ep.id}' is plugged later, but port '{ep.bus}' has hotplug off")
        # (an endpoint on a pxb-pcie is refused by _check_buses, plugged later or not)
        if ep.bus == ROOT_BUS and topo.hotplug is HotplugMode.NATIVE:
            problem(
                path,
                f"'{ep.id}' is plugged later on root bus '{ep.bus}', which has no hot-plug port in native mode",
                "put it below a root port, or use hotplug: acpi",
            )
        if ep.function:
            problem(("endpoints", i, "function"), "a device plugged later must be function 0")


def _check_kernel_args(topo: Topology, problem: Report) -> None:
    for i, arg in enumerate(topo.kernel_args):
        if owned_arg(arg):
            problem(
                ("kernel_args", i),
                f"'{arg}' is set by the testbed itself",
                "anything but root=, console=, init=, rw, ro",
            )
    options = parse_kernel_args(topo.kernel_args)
    index = next((i for i, a in enumerate(topo.kernel_args) if "disable_acs_redir=" in a), 0)
    for text in options.unparsed_acs_redir:
        problem(
            ("kernel_args", index),
            f"'{text}' is not a device Linux can parse",
            "[domain:]bus:slot.fn[/slot.fn...] or pci:vendor:device",
        )
    if options.config_acs:
        index = next(i for i, a in enumerate(topo.kernel_args) if "config_acs=" in a)
        problem(
            ("kernel_args", index), "pci=config_acs= is not modeled by the verdict oracle", "pci=disable_acs_redir="
        )
    if options.disable_acs_redir and not _has_errors_blocking_layout(topo):
        layout = build_layout(topo)
        for spec in options.disable_acs_redir:
            if not any(
                spec.matches(layout.device_path(p.id), p.device_id, p.subsystem_id)
                for p in layout.placements.values()
                if p.is_bridge
            ):
                acs_ports = [f"{layout.device_path(p.id)} ({p.id})" for p in layout.placements.values() if p.acs]
                problem(
                    ("kernel_args", index),
                    f"disable_acs_redir entry '{spec.text}' matches no port of this topology",
                    ", ".join(acs_ports) or "(no port has ACS)",
                )


def _has_errors_blocking_layout(topo: Topology) -> bool:
    """Problems a layout would trip over (an unknown bus; a switch loop, which it would walk
    for ever): checks that need the layout are left out, the problems are reported anyway."""
    known = {ROOT_BUS} | {x for x, _ in _all_ids(topo)}
    return (
        bool(_switch_cycle(topo))
        or any(rp.bus not in known for rp in topo.root_ports)
        or any(ep.bus not in known for ep in topo.endpoints)
        or any(sw.bus not in known for sw in topo.switches)
    )


def _check_expectations(topo: Topology, problem: Report) -> None:
    endpoints = {ep.id: ep for ep in topo.endpoints}
    seen: set[tuple[str, str]] = set()
    for i, exp in enumerate(topo.expectations):
        path = ("expect", i)
        provider = endpoints.get(exp.provider)
        client = endpoints.get(exp.client)
        if provider is None:
            problem(path + ("provider",), f"unknown device '{exp.provider}'", ", ".join(endpoints))
        elif not provider.is_p2p_provider:
            problem(
                path + ("provider",),
                f"'{exp.provider}' has no BAR it can provide as P2P memory",
                ", ".join(e.id for e in topo.endpoints if e.is_p2p_provider) or "(none: an nvme with cmb, or ivshmem)",
            )
        if client is None:
            problem(path + ("client",), f"unknown device '{exp.client}'", ", ".join(endpoints))
        elif not client.is_dma_client:
            problem(
                path + ("client",),
                f"'{exp.client}' ({client.kind.value}) cannot master DMA",
                ", ".join(e.id for e in topo.endpoints if e.is_dma_client),
            )
        if (exp.provider, exp.client) in seen:
            problem(path, f"the pair {exp.provider} -> {exp.client} is listed twice")
        seen.add((exp.provider, exp.client))


def _check_bus_numbers(topo: Topology, problem: Report) -> None:
    """Every root bus needs room for the bus numbers of the bridges below it."""
    layout = build_layout(topo)
    ordered = sorted(layout.bus_ranges.items(), key=lambda kv: kv[1][0])
    line_of = {hb.id: ("host_bridges", i, "bus_nr") for i, hb in enumerate(topo.host_bridges)}
    seen_nr: dict[int, str] = {}
    for hb in topo.host_bridges:
        if hb.bus_nr in seen_nr:
            problem(line_of[hb.id], f"bus_nr {hb.bus_nr} is also used by '{seen_nr[hb.bus_nr]}'")
        seen_nr[hb.bus_nr] = hb.id
    for (name, (first, last)), nxt in zip(ordered, ordered[1:] + [(None, (MAX_BUS + 1, 0))], strict=True):
        limit = nxt[1][0] - 1
        if last > limit:
            where = line_of.get(nxt[0] or name, ("host_bridges",)) if nxt[0] else line_of.get(name, ("root_ports",))
            need = last - first + 1
            problem(
                where,
                f"'{name}' needs buses {first}..{last} ({need} for its bridges) but only {first}..{limit} are free",
                f"a bus_nr above {last} for the next host bridge, or fewer ports",
            )
