"""Two runs of the same selection compared: what the series changed, and whether it made
anything worse (a test that stopped passing, a splat no known-splats.yaml entry covers)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from ..guestvm.machine_fingerprint import differences, load
from ..runs.results import RunResults

BAD = {"failed", "error"}
# what a test that passed on the base may not become: a failure, or no longer checking at all
# (skipped, or gone from the run: a KUnit suite the series dropped). passed -> xfailed is listed,
# not worse: some known failures of the base tree come and go on the base itself (a KUnit case
# of the IOMMU page-table suites passed in one make test and matched its entry in the next).
STOPPED = {"skipped", None}


@dataclass(frozen=True)
class TestChange:
    __test__ = False  # not a pytest class

    nodeid: str
    before: str | None  # None: not run on that side
    after: str | None
    # why a side's outcome is not the kernel's: the machinery (InfraError) or the input
    # (ConfigError) failed it; such a change is inconclusive, never worse
    infra: str | None = None

    @property
    def worse(self) -> bool:
        """Red where the base was not, or a base pass that no longer checks anything. An
        unexpected pass (xfailed -> xpassed) is a known bug the series fixed: better."""
        if self.infra:
            return False
        if self.after in BAD:
            return self.before not in BAD
        return self.before == "passed" and self.after in STOPPED

    @property
    def group(self) -> str:
        if "test_kselftest.py" in self.nodeid:
            return "kselftest"
        if "test_p2pdma_api.py" in self.nodeid:
            return "probe"
        return "suite"


@dataclass(frozen=True)
class VerdictChange:
    pair: str  # "topology provider->client direction" or "topology part provider->client"
    before: str
    after: str
    expected: str


@dataclass(frozen=True)
class SplatChange:
    signature: str
    before: int
    after: int
    known: bool  # every report of it, on either side, is covered by known-splats.yaml

    @property
    def new(self) -> bool:
        """A signature the base never printed (not known). One the base printed too and the
        series more often is listed, not worse: boot-time splats scale with the VMs booted,
        and warm spares make that number vary between two runs of one kernel."""
        return self.before == 0 and self.after > 0 and not self.known

    @property
    def worse(self) -> bool:
        return self.new


@dataclass(frozen=True)
class Comparison:
    base: str
    series: str
    base_kernels: tuple[str, ...]
    series_kernels: tuple[str, ...]
    machine: tuple[str, str]  # (qemu and accel of base, of series)
    tests: tuple[TestChange, ...] = ()
    verdicts: tuple[VerdictChange, ...] = ()
    census: tuple[VerdictChange, ...] = ()
    splats: tuple[SplatChange, ...] = ()
    unchecked: tuple[str, ...] = ()  # tests the series ran without lock checking, the base with
    fingerprints: tuple[str, ...] = field(default=())  # "topology: what differs" between the machines
    # how the two runs are not of one selection and kernel config: then a change may be neither's
    not_alike: tuple[str, ...] = ()

    def inconclusive(self) -> list[str]:
        """Changes the machinery or the input made, not the kernel: no verdict on them."""
        return [
            f"{t.nodeid}: {t.before or 'not run'} -> {t.after or 'not run'} ({t.infra})" for t in self.tests if t.infra
        ]

    def worse(self) -> list[str]:
        """Why the series made things worse (empty: it did not)."""
        out = [f"{t.nodeid}: {t.before or 'not run'} -> {t.after or 'not run'}" for t in self.tests if t.worse]
        out += [f"new splat: {s.after - s.before}x {s.signature}" for s in self.splats if s.worse]
        out += [f"{nodeid}: no longer lock-checked (lockdep was off)" for nodeid in self.unchecked]
        return out

    def changed(self) -> bool:
        return bool(self.tests or self.verdicts or self.census or self.splats or self.unchecked)

    def as_json(self) -> dict[str, object]:
        doc = asdict(self)
        doc["worse"] = self.worse()
        doc["inconclusive"] = self.inconclusive()
        doc["changed"] = self.changed()
        return doc


def _infra(base: RunResults, series: RunResults, nodeid: str) -> str | None:
    said = [
        f"{side}: {why}"
        for side, run in (("base", base), ("series", series))
        if (why := run.tests.get(nodeid, {}).get("infra"))
    ]
    return "; ".join(said) or None


def _machine(r: RunResults) -> str:
    return f"{r.qemu or 'QEMU ?'}, accel {'/'.join(r.accel) or '?'}"


def compare(base: RunResults, series: RunResults) -> Comparison:
    tests = tuple(
        TestChange(nodeid, base.outcomes.get(nodeid), series.outcomes.get(nodeid), _infra(base, series, nodeid))
        for nodeid in sorted(set(base.outcomes) | set(series.outcomes))
        if base.outcomes.get(nodeid) != series.outcomes.get(nodeid)
    )
    verdicts = []
    for key in sorted(set(base.verdicts) | set(series.verdicts)):
        before, after = base.verdicts.get(key), series.verdicts.get(key)
        if before is None or after is None or before[1] != after[1]:
            topology, provider, client, direction = key
            map_type, _, expected = after or before or ("", "", "")
            verdicts.append(
                VerdictChange(
                    f"{topology} {provider}->{client} {direction}",
                    before[1] if before else "not run",
                    after[1] if after else "not run",
                    f"{map_type} {expected}",
                )
            )
    census = []
    for ckey in sorted(set(base.census) | set(series.census)):
        cb, ca = base.census.get(ckey), series.census.get(ckey)
        if cb is None or ca is None or cb[0] != ca[0]:
            topology, part, provider, client = ckey
            census.append(
                VerdictChange(
                    f"{topology} {part} {provider}->{client}",
                    cb[0] if cb else "not run",
                    ca[0] if ca else "not run",
                    (ca or cb or ("", ""))[1],
                )
            )
    counts_b, counts_s = base.splat_counts(), series.splat_counts()
    unknown = {**base.splat_counts(new_only=True), **series.splat_counts(new_only=True)}
    splats = tuple(
        SplatChange(sig, counts_b.get(sig, 0), counts_s.get(sig, 0), known=sig not in unknown)
        for sig in dict.fromkeys([*counts_b, *counts_s])
        if counts_b.get(sig, 0) != counts_s.get(sig, 0)
    )
    unchecked = tuple(n for n in series.unchecked if n not in base.unchecked)
    fingerprints = tuple(
        f"{topology}: {line}"
        for topology in sorted(set(base.fingerprints) & set(series.fingerprints))
        for line in differences(load(base.fingerprints[topology]), load(series.fingerprints[topology]))
    )
    not_alike = []
    if base.selection and series.selection and base.selection != series.selection:
        not_alike.append(f"pytest selection: {' '.join(base.selection)} | {' '.join(series.selection)}")
    configs = [
        sorted({str(k.get("config_set")) for k in r.boot_kernels if k.get("config_set")}) for r in (base, series)
    ]
    if all(configs) and configs[0] != configs[1]:
        not_alike.append(f"kernel config: {', '.join(configs[0])} | {', '.join(configs[1])}")
    return Comparison(
        str(base.directory),
        str(series.directory),
        base.kernels,
        series.kernels,
        (_machine(base), _machine(series)),
        tests,
        tuple(verdicts),
        tuple(census),
        splats,
        unchecked,
        fingerprints,
        tuple(not_alike),
    )


def _header(c: Comparison) -> list[str]:
    """The two runs: their kernels, and how their machines and selections differ."""
    lines = [f"base:   {c.base}", *(f"        {k}" for k in c.base_kernels or ("(no VM booted)",))]
    lines += [f"series: {c.series}", *(f"        {k}" for k in c.series_kernels or ("(no VM booted)",))]
    if c.machine[0] != c.machine[1]:
        lines.append(f"machine differs: {c.machine[0]} | {c.machine[1]}")
    lines += [f"NOT ONE SELECTION, a change may be neither kernel's: {line}" for line in c.not_alike]
    if c.fingerprints:
        lines.append("fingerprints (what the guests saw) differ:")
        lines += [f"  {line}" for line in c.fingerprints]
    return lines


def render_text(c: Comparison) -> list[str]:
    lines = _header(c)
    for group, title in (("suite", "tests"), ("kselftest", "kselftest/KUnit cases"), ("probe", "probe cases")):
        changes = [t for t in c.tests if t.group == group]
        if changes:
            lines.append(f"{title} that changed outcome ({len(changes)}):")
            for t in changes:
                mark = "  WORSE" if t.worse else f"  INCONCLUSIVE ({t.infra})" if t.infra else ""
                lines.append(f"  {t.before or 'not run':>8} -> {t.after or 'not run':<8} {t.nodeid}{mark}")
    for rows, title in ((c.verdicts, "P2P verdicts that changed"), (c.census, "probe census answers that changed")):
        if rows:
            lines.append(f"{title} ({len(rows)}):")
            lines += [f"  {v.pair}: {v.before} -> {v.after} (oracle: {v.expected})" for v in rows]
    if c.splats:
        lines.append("splats by signature (base -> series):")
        for s in c.splats:
            tag = "  NEW" if s.new else ("  known" if s.known else "  more often" if s.after > s.before else "")
            lines.append(f"  {s.before:3d} -> {s.after:<3d} {s.signature}{tag}")
    for nodeid in c.unchecked:
        lines.append(f"not lock-checked with the series: {nodeid}")
    worse, inconclusive = c.worse(), c.inconclusive()
    if worse:
        lines.append(f"verdict: the series made {len(worse)} thing(s) worse")
    if inconclusive:
        lines.append(
            f"verdict: inconclusive for {len(inconclusive)} test(s): the machinery or the input failed "
            "them on a side, not the kernel (run again; exit 3 when nothing else is worse)"
        )
    if not (worse or inconclusive):
        lines.append("verdict: changed, nothing worse" if c.changed() else "verdict: no change")
    return lines


def render_markdown(c: Comparison) -> str:
    out = ["# testbed ab", "", "| | results | kernel |", "|---|---|---|"]
    out.append(f"| base | `{c.base}` | {'<br>'.join(c.base_kernels)} |")
    out.append(f"| series | `{c.series}` | {'<br>'.join(c.series_kernels)} |")
    out += ["", f"Machine: {c.machine[0]}" + ("" if c.machine[0] == c.machine[1] else f" / {c.machine[1]}"), ""]
    out += [f"**Not one selection** (a change may be neither kernel's): {line}" for line in c.not_alike]
    worse = c.worse()
    out.append(
        f"**The series made {len(worse)} thing(s) worse.**"
        if worse
        else ("**Changed, nothing worse.**" if c.changed() else "**No change.**")
    )
    out += [f"- {w}" for w in worse]
    inconclusive = c.inconclusive()
    if inconclusive:
        out += ["", f"**Inconclusive for {len(inconclusive)} test(s)** (the machinery or the input failed them):"]
        out += [f"- {i}" for i in inconclusive]
    if c.fingerprints:
        out += ["", "## Fingerprints that differ", ""] + [f"- {line}" for line in c.fingerprints]
    if c.tests:
        out += ["", "## Tests that changed outcome", "", "| kind | base | series | test |", "|---|---|---|---|"]
        out += [f"| {t.group} | {t.before or '-'} | {t.after or '-'} | `{t.nodeid}` |" for t in c.tests]
    for rows, title in ((c.verdicts, "P2P verdicts"), (c.census, "Probe census")):
        if rows:
            out += ["", f"## {title} that changed", "", "| pair | base | series | oracle |", "|---|---|---|---|"]
            out += [f"| {v.pair} | {v.before} | {v.after} | {v.expected} |" for v in rows]
    if c.splats:
        out += ["", "## Splats by signature", "", "| base | series | signature | |", "|---|---|---|---|"]
        out += [
            f"| {s.before} | {s.after} | `{s.signature}` | {'new' if s.worse else ('known' if s.known else '')} |"
            for s in c.splats
        ]
    return "\n".join(out) + "\n"
