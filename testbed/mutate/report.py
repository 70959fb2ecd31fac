"""A mutation run's results: one JSON line per mutant as it is judged (so a run cut short keeps
what it did), then report.md and mutants.json with the score per function and overall, and
every survivor with its diff and the tests that ran on it.

The score is detected / counted: killed (a test changed outcome, or a new splat) and killed by
timeout or crash, over those plus survivors and mutants no selected test executes (not covered:
a bug nobody would see). Invalid mutants (they do not build), declared equivalents and mutants
the budget left out are listed, not counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

from .judge import Status


@dataclass(frozen=True)
class MutantResult:
    id: str
    path: str
    function: str
    operator: str
    first_line: int
    last_line: int
    description: str
    patch_file: str  # relative to the run directory
    status: Status
    reasons: tuple[str, ...] = ()
    tests: tuple[str, ...] = ()  # the tests that ran on it (empty: the whole selection)
    build_s: float = 0.0
    test_s: float = 0.0

    def as_json(self) -> dict:
        return asdict(self) | {"status": self.status.value, "reasons": list(self.reasons), "tests": list(self.tests)}

    @classmethod
    def from_json(cls, data: dict) -> MutantResult:
        fields = dict(data)
        fields["status"] = Status(fields["status"])
        fields["reasons"] = tuple(fields.get("reasons", ()))
        fields["tests"] = tuple(fields.get("tests", ()))
        return cls(**fields)


RESULTS_FILE = "results.jsonl"


def append(run_dir: Path, result: MutantResult) -> None:
    with (run_dir / RESULTS_FILE).open("a") as out:
        out.write(json.dumps(result.as_json()) + "\n")


def load(run_dir: Path) -> list[MutantResult]:
    path = run_dir / RESULTS_FILE
    if not path.is_file():
        return []
    return [MutantResult.from_json(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True)
class Score:
    detected: int
    counted: int

    @property
    def percent(self) -> float | None:
        return 100.0 * self.detected / self.counted if self.counted else None

    def text(self) -> str:
        pct = self.percent
        return f"{self.detected}/{self.counted}" + (f" ({pct:.0f} %)" if pct is not None else "")


def score(results: Iterable[MutantResult]) -> Score:
    rs = list(results)
    return Score(sum(r.status.detected for r in rs), sum(r.status.counted for r in rs))


def by_function(results: Iterable[MutantResult]) -> dict[tuple[str, str], list[MutantResult]]:
    out: dict[tuple[str, str], list[MutantResult]] = {}
    for r in results:
        out.setdefault((r.path, r.function), []).append(r)
    return out


def counts(results: Iterable[MutantResult]) -> dict[str, int]:
    out = {s.value: 0 for s in Status}
    for r in results:
        out[r.status.value] += 1
    return {k: v for k, v in out.items() if v}


def summary_lines(results: list[MutantResult]) -> list[str]:
    """The end of `testbed mutate` on the terminal: overall, then per function."""
    lines = [f"mutation score: {score(results).text()}; " + ", ".join(f"{n} {s}" for s, n in counts(results).items())]
    for (path, function), rs in sorted(by_function(results).items()):
        lines.append(f"  {path} {function}: {score(rs).text()}")
    return lines


def render_markdown(results: list[MutantResult], run_dir: Path, header: Iterable[str] = ()) -> str:
    out = ["# Mutation testing", "", *header, ""]
    out += [f"**Score: {score(results).text()}** (detected / counted; the module docstring of "
            "`testbed/mutate/report.py` says what counts)", ""]  # fmt: skip
    out += ["| status | mutants |", "|---|---|", *(f"| {s} | {n} |" for s, n in counts(results).items()), ""]
    out += ["## Per function", "", "| file | function | score | killed | survived | not covered | invalid |"]
    out += ["|---|---|---|---|---|---|---|"]
    for (path, function), rs in sorted(by_function(results).items()):
        c = counts(rs)
        killed = c.get(Status.KILLED.value, 0) + c.get(Status.TIMEOUT.value, 0)
        out.append(
            f"| `{path}` | `{function}` | {score(rs).text()} | {killed} | {c.get(Status.SURVIVED.value, 0)} "
            f"| {c.get(Status.NOT_COVERED.value, 0)} | {c.get(Status.INVALID.value, 0)} |"
        )
    survivors = [r for r in results if r.status in (Status.SURVIVED, Status.NOT_COVERED)]
    out += ["", f"## Survivors ({len(survivors)}): a missing case, or an equivalent mutant to declare", ""]
    for r in survivors:
        out += [f"### `{r.id}` ({r.status.value})", "", f"{r.path}:{r.first_line} `{r.function}`: {r.description}", ""]
        tests = ", ".join(f"`{t}`" for t in r.tests) if r.tests else "the whole selection"
        out += [
            f"Tests that ran on it: {tests}" if r.status is Status.SURVIVED else "No selected test executes it.",
            "",
        ]
        patch = run_dir / r.patch_file
        diff = patch.read_text().split("\n---\n", 1)[-1] if patch.is_file() else "(patch missing)"
        out += ["```diff", diff.strip(), "```", ""]
    detected = [r for r in results if r.status.detected]
    out += [f"## Killed ({len(detected)})", ""]
    out += [f"- `{r.id}`: {r.description} — {'; '.join(r.reasons[:3])}" for r in detected]
    return "\n".join(out) + "\n"


def write(results: list[MutantResult], run_dir: Path, header: Iterable[str] = (), meta: dict | None = None) -> Path:
    doc = {
        **(meta or {}),
        "score": asdict(score(results)) | {"percent": score(results).percent},
        "counts": counts(results),
        "functions": {
            f"{path}:{function}": asdict(score(rs)) | {"percent": score(rs).percent}
            for (path, function), rs in sorted(by_function(results).items())
        },
        "mutants": [r.as_json() for r in results],
    }
    (run_dir / "mutants.json").write_text(json.dumps(doc, indent=1) + "\n")
    report = run_dir / "report.md"
    report.write_text(render_markdown(results, run_dir, header))
    return report
