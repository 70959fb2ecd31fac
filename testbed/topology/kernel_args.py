"""The kernel command-line options that change a P2P verdict, parsed the way Linux 7.2 does."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

# Options the testbed sets itself; a topology may not override them.
OWNED_PREFIXES = ("root=", "console=", "init=", "rw", "ro")

_PATH_RE = re.compile(
    r"^(?:(?P<domain>[0-9a-fA-F]{1,4}):)?(?P<bus>[0-9a-fA-F]{1,2}):(?P<slot>[0-9a-fA-F]{1,2})\.(?P<fn>[0-7])"
    r"(?P<rest>(?:/[0-9a-fA-F]{1,2}\.[0-7])*)$"
)
_ID_RE = re.compile(
    r"^pci:(?P<vendor>[0-9a-fA-F]{1,4}):(?P<device>[0-9a-fA-F]{1,4})"
    r"(?::(?P<subvendor>[0-9a-fA-F]{1,4}):(?P<subdevice>[0-9a-fA-F]{1,4}))?$"
)


@dataclass(frozen=True)
class KernelDeviceSpec:
    """One entry of a `pci=...=` device list: a device path or pci:vendor:device[:subvendor:subdevice],
    matched as pci_dev_str_match() does: a 0 in any ID field matches every device."""

    text: str
    path: tuple[int, int, tuple[tuple[int, int], ...]] | None = None  # (domain, bus, ((slot, fn), ...))
    ids: tuple[int, int, int, int] | None = None  # vendor, device, subsystem vendor, subsystem device

    def matches(self, device_path: str, device_id: str, subsystem_id: str = "0000:0000") -> bool:
        if self.ids is not None:
            actual = [int(x, 16) for x in (*device_id.split(":"), *subsystem_id.split(":"))]
            return all(want == 0 or want == have for want, have in zip(self.ids, actual, strict=True))
        parsed = parse_device_spec(device_path)
        return parsed is not None and parsed.path == self.path


def parse_device_spec(text: str) -> KernelDeviceSpec | None:
    text = text.strip()
    match = _ID_RE.match(text)
    if match:
        fields = (match["vendor"], match["device"], match["subvendor"] or "0", match["subdevice"] or "0")
        vendor, device, subvendor, subdevice = (int(f, 16) for f in fields)
        return KernelDeviceSpec(text, ids=(vendor, device, subvendor, subdevice))
    match = _PATH_RE.match(text)
    if not match:
        return None
    hops = [(int(match["slot"], 16), int(match["fn"]))]
    for hop in filter(None, match["rest"].split("/")):
        slot, fn = hop.split(".")
        hops.append((int(slot, 16), int(fn)))
    return KernelDeviceSpec(text, path=(int(match["domain"] or "0", 16), int(match["bus"], 16), tuple(hops)))


@dataclass(frozen=True)
class PciOptions:
    disable_acs_redir: tuple[KernelDeviceSpec, ...] = ()
    unparsed_acs_redir: tuple[str, ...] = ()  # entries Linux would reject too
    config_acs: bool = False  # present: not modeled by the oracle
    intel_iommu_off: bool = False


def parse_kernel_args(args: tuple[str, ...] | list[str]) -> PciOptions:
    """Pick out what the oracle needs. Later `pci=disable_acs_redir=` wins, as in pci_setup()."""
    specs: tuple[KernelDeviceSpec, ...] = ()
    bad: tuple[str, ...] = ()
    config_acs = False
    intel_off = False
    for arg in _words(args):
        if arg.startswith("intel_iommu="):
            intel_off = "off" in arg.split("=", 1)[1].split(",")
        if not arg.startswith("pci="):
            continue
        for option in _split_pci_options(arg[len("pci=") :]):
            if option.startswith("disable_acs_redir="):
                entries = [e for e in option.split("=", 1)[1].split(";") if e]
                parsed = [parse_device_spec(e) for e in entries]
                specs = tuple(p for p in parsed if p is not None)
                bad = tuple(e for e, p in zip(entries, parsed, strict=True) if p is None)
            elif option.startswith("config_acs="):
                config_acs = True
    return PciOptions(specs, bad, config_acs, intel_off)


def _words(args: Iterable[str]) -> list[str]:
    out: list[str] = []
    for arg in args:
        out += arg.split()
    return out


def _split_pci_options(value: str) -> list[str]:
    # pci= options are comma-separated; a device list inside one uses ';' so commas split cleanly
    return [o for o in value.split(",") if o]


def owned_arg(arg: str) -> bool:
    return any(word == p or (p.endswith("=") and word.startswith(p)) for word in arg.split() for p in OWNED_PREFIXES)
