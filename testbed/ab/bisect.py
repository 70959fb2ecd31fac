"""`testbed bisect`: the first commit between GOOD and BAD where a pytest selection fails.

    testbed bisect --ksrc TREE --good REF --bad REF -- PYTEST_ARGS

`git bisect run` drives it in the testbed's own worktree of TREE (never the user's checkout;
the same worktree the patch series use, so its kernel build directory is warm and each step
builds incrementally). A step builds its commit with the kernel cache (a build failure is a
skip, exit 125) and runs the selection on it: pytest passing is good, failing tests are bad.
Both ends are checked first, so a "bad" that passes is an error, not a bisect to nowhere.
The report names the first bad commit, the tests that failed there, and their new splats.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from ..children import run_child, run_in_session
from ..errors import ConfigError, InfraError, TestbedError
from ..kernel.patches import SERIES_WORKTREE
from ..paths import checkout_root, results_root
from ..runs.record import RUN_FILE
from ..runs.results import load_results
from .worktree import checkout, require_git_tree, resolve

log = logging.getLogger(__name__)

GOOD, BAD, SKIP, ABORT = 0, 1, 125, 128
STEPS_FILE = "steps.jsonl"
# the worktree the patch series are applied in: sharing it shares its warm kernel build
# directory, so a step rebuilds only what the commit changed
WORKTREE = SERIES_WORKTREE


@dataclass(frozen=True)
class Step:
    commit: str
    subject: str
    verdict: str  # good, bad, skip
    failed: tuple[str, ...]  # tests that failed or errored
    new_splats: tuple[str, ...]  # signatures no known-splats.yaml entry covers
    results: str  # the step's results directory
    seconds: float


@dataclass(frozen=True)
class BisectResult:
    first_bad: Step | None
    steps: tuple[Step, ...]
    # git's "the first bad commit could be any of": skipped commits left it undecided
    candidates: tuple[str, ...] = ()

    def lines(self) -> list[str]:
        out = [f"  {s.commit[:12]} {s.verdict:4s} {s.seconds:5.0f}s  {s.subject}" for s in self.steps]
        if self.first_bad is None and self.candidates:
            out.append(f"the first bad commit is one of {len(self.candidates)} (skipped steps left it open):")
            return [*out, *(f"  {c}" for c in self.candidates)]
        if self.first_bad is None:
            return [*out, "no first bad commit found (see the steps above)"]
        b = self.first_bad
        out.append(f"first bad commit: {b.commit} {b.subject}")
        out += [f"  failed: {t}" for t in b.failed]
        out += [f"  new splat: {s}" for s in b.new_splats]
        out.append(f"  results: {b.results}")
        return out


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bisect",
        help="find the first commit between --good and --bad where a pytest selection fails",
        description="git bisect run in the testbed's own worktree of --ksrc: each step builds its commit "
        "(incrementally, cached; a build failure is a skip) and runs the pytest selection after --. "
        "Reports the first bad commit with the failing tests and their splat signatures.",
    )
    p.add_argument("--ksrc", type=Path, required=True, metavar="TREE", help="your kernel git tree (not modified)")
    p.add_argument("--good", required=True, metavar="REF", help="a commit where the selection passes")
    p.add_argument("--bad", required=True, metavar="REF", help="a commit where it fails")
    p.add_argument("--kernel-config", default="default", metavar="SET", help="config set for every step")
    p.add_argument("--out", type=Path, metavar="DIR", help="where the steps' results and the report go")
    p.set_defaults(func=_bisect)


def _bisect(args: argparse.Namespace) -> int:
    if not args.guest_command:
        raise ConfigError("testbed bisect needs the pytest selection after --, e.g. -- -m p2p --topology two-switch")
    tree = require_git_tree(args.ksrc, "--ksrc")
    good, bad = resolve(tree, args.good), resolve(tree, args.bad)
    proc = subprocess.run(["git", "-C", str(tree), "merge-base", "--is-ancestor", good, bad], check=False)
    if proc.returncode != 0:
        raise ConfigError(f"--good {args.good} is not an ancestor of --bad {args.bad} in {tree}")
    out = (args.out or results_root() / "bisect" / time.strftime("%Y%m%d-%H%M%S")).resolve()
    result = bisect(tree, good, bad, list(args.guest_command), args.kernel_config, out)
    for line in result.lines():
        print(line)
    report: dict[str, object] = {"first_bad": asdict(result.first_bad) if result.first_bad else None}
    report["candidates"] = list(result.candidates)
    report["steps"] = [asdict(s) for s in result.steps]
    (out / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"(steps and report: {out})")
    return 0 if result.first_bad else 1


def bisect(tree: Path, good: str, bad: str, pytest_args: list[str], config: str, out: Path) -> BisectResult:
    out.mkdir(parents=True, exist_ok=True)
    step_cmd = [sys.executable, "-m", "testbed.ab.bisect", str(out), config, "--", *pytest_args]
    path = checkout(tree, bad, WORKTREE)
    for commit, want in ((bad, BAD), (good, GOOD)):
        subprocess.run(["git", "-C", str(path), "checkout", "-q", "-f", "--detach", commit], check=True)
        code = run_in_session(step_cmd, path).returncode
        if code != want:
            side = "--bad" if want == BAD else "--good"
            steps = read_steps(out)
            if code == SKIP and steps and steps[-1].failed:  # built, but only the machinery failed
                raise InfraError(
                    f"{side} {commit[:12]}: only the machinery failed there ({', '.join(steps[-1].failed[:3])}); "
                    "run it again"
                )
            what = {GOOD: "passes", BAD: "fails", SKIP: "does not build"}.get(code, f"aborted (exit {code})")
            raise ConfigError(f"{side} {commit[:12]}: the selection {what} there; nothing to bisect")
    git = ["git", "-C", str(path)]
    try:
        subprocess.run([*git, "bisect", "start", bad, good], check=True, capture_output=True)
        run = run_in_session([*git, "bisect", "run", *step_cmd], path, capture=True)
        log.debug("git bisect run: %s", run.stdout)
        first = _first_bad(run.stdout)
        candidates = _candidates(run.stdout)
    finally:
        subprocess.run([*git, "bisect", "reset", "--quiet"], check=False, capture_output=True)
    steps = read_steps(out)
    first_bad = next((s for s in reversed(steps) if s.commit == first), None) if first else None
    return BisectResult(first_bad, tuple(steps), candidates)


def _first_bad(output: str) -> str | None:
    for line in output.splitlines():
        if line.endswith(" is the first bad commit"):
            return line.split()[0]
    return None


SHA_RE = re.compile(r"^[0-9a-f]{40}\b")


def _candidates(output: str) -> tuple[str, ...]:
    """The commits git names after "The first bad commit could be any of:" (only skipped commits
    were left), or ()."""
    lines = output.splitlines()
    start = next((i for i, line in enumerate(lines) if "first bad commit could be any of" in line), None)
    if start is None:
        return ()
    found = []
    for line in lines[start + 1 :]:
        m = SHA_RE.match(line.strip())
        if m is None:
            break
        found.append(m.group(0))
    return tuple(found)


def read_steps(out: Path) -> list[Step]:
    path = out / STEPS_FILE
    if not path.is_file():
        return []
    return [_step(json.loads(line)) for line in path.read_text().splitlines() if line.strip()]


def _step(doc: dict) -> Step:
    return Step(**{**doc, "failed": tuple(doc["failed"]), "new_splats": tuple(doc["new_splats"])})


def step(out: Path, config: str, pytest_args: list[str]) -> int:
    """One bisect step in the current directory (the worktree at the commit under test)."""
    from ..kernel import ensure_kernel
    from ..kernel.request import KernelRequest

    here = Path.cwd()
    commit = _git_out(here, "rev-parse", "HEAD")
    subject = _git_out(here, "log", "-1", "--format=%s")
    started = time.monotonic()
    results = out / "steps" / f"{len(read_steps(out)):02d}-{commit[:12]}"

    def record(verdict: str, failed: tuple[str, ...] = (), splats: tuple[str, ...] = ()) -> None:
        s = Step(commit, subject, verdict, failed, splats, str(results), round(time.monotonic() - started, 1))
        with (out / STEPS_FILE).open("a") as f:
            f.write(json.dumps(asdict(s)) + "\n")
        print(f"testbed bisect: {commit[:12]} {verdict} ({subject})", flush=True)

    try:
        ensure_kernel(KernelRequest(config, ksrc=here), lambda line: print(f"testbed bisect: {line}", flush=True))
    except TestbedError as exc:
        print(f"testbed bisect: {commit[:12]} does not build, skipped: {exc}", flush=True)
        record("skip")
        return SKIP
    argv = [*pytest_args, "--kernel", str(here), "--kernel-config", config, "--results-dir", str(results)]
    code = run_child([sys.executable, "-m", "pytest", *argv], checkout_root())
    if code not in (0, 1) or not (results / RUN_FILE).is_file():
        print(f"testbed bisect: pytest exited {code} at {commit[:12]}: aborting", flush=True)
        return ABORT
    run = load_results(results)
    failed = tuple(n for n, o in run.outcomes.items() if o in ("failed", "error"))
    splats = tuple(dict.fromkeys(s.signature for s in run.splats if s.known is None))
    # failed only for the machinery (a QEMU that died, a guest that stopped): no verdict on this
    # commit, as a build failure is none; a real failure beside them still makes it bad
    machinery = [n for n in failed if run.tests.get(n, {}).get("infra")]
    if failed and len(machinery) == len(failed) and not splats:
        print(f"testbed bisect: {commit[:12]} failed only for the machinery, skipped: {machinery[:3]}", flush=True)
        record("skip", failed)
        return SKIP
    bad = bool(code)
    ends = read_steps(out)[:2]  # --bad, then --good: checked first, judged by any failure
    if len(ends) == 2 and ends[0].verdict == "bad":
        # between them, the failure being bisected: a test that fails at --bad, or a splat it
        # printed; another failure at one commit (fixed again before --bad) is not this one
        bad = any(t in ends[0].failed for t in failed) or any(s in ends[0].new_splats for s in splats)
    record("bad" if bad else "good", failed, splats)
    return BAD if bad else GOOD


def _git_out(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=True).stdout.strip()


if __name__ == "__main__":  # the command `git bisect run` calls for each step
    cut = sys.argv.index("--")
    sys.exit(step(Path(sys.argv[1]), sys.argv[2], sys.argv[cut + 1 :]))
