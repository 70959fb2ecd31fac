"""`testbed mutate`'s loop: mutants of the scope's functions, each built and tested, judged.

For each mutant (one hunk in `git format-patch` form, generated from the tree that is built):
the kernel is built incrementally as base + that patch (the testbed's series worktree: only the
mutated file and the link are redone), then pytest runs the tests that execute the mutated lines
(the coverage index of a `pytest --coverage` run; the whole selection without one) under a
deadline, and the run is judged against one base run of the same selection (judge.py). Mutant
kernels are removed from the cache once judged: they are never asked for again.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..children import stop_session
from ..coverage.report import Index, tests_for
from ..coverage.runreport import load_index
from ..coverage.scope import Scope
from ..errors import ConfigError, InfraError
from ..hashing import hash_files
from ..kernel.build import ensure_kernel, kernel_root
from ..kernel.request import KernelRequest
from ..kernel.source import debian_tree
from ..paths import cache_dir, checkout_root
from ..probe.build import kernel_tree_of, probe_key
from ..runs.record import RUN_FILE, plain
from ..runs.results import RunResults, load_results
from . import report
from .cfunc import code_mask, find_function, find_functions
from .equivalents import Equivalent, find_equivalent
from .generate import Mutant, mutants_of, sample, shard
from .judge import MutantOutcome, Status, fails_fast, judge

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class MutateOptions:
    scope: Scope
    selection: tuple[str, ...]  # the pytest arguments after --
    functions: tuple[str, ...] = ()  # only these functions (empty: the scope's)
    ids: tuple[str, ...] = ()  # only these mutants (--mutant; `--list` prints the ids)
    sample: int | None = None
    seed: int = 0
    shard: tuple[int, int] | None = None  # (k, n), 1-based
    budget_s: float | None = None  # no new mutant starts after this
    mutant_timeout_s: float = 900.0  # one mutant's pytest run, at most
    # ... and at most this many times what the base run spent in the same tests, plus the slack
    # for pytest's start and a boot: a mutant that hangs a guest is killed by its deadline, not
    # after every guest-command timeout of every test (one took 499 s where its tests took 86)
    timeout_factor: float = 2.0
    timeout_slack_s: float = 60.0
    coverage_run: Path | None = None  # a `pytest --coverage` results directory (its index)
    base_results: Path | None = None  # reuse this run as the base
    ksrc: Path | None = None
    kernel_config: str = "default"
    equivalents: tuple[Equivalent, ...] = ()
    keep_kernels: bool = False


def source_root(ksrc: Path | None, progress: Progress) -> Path:
    """The tree the mutants are generated from: the one that is built (the user's, or Debian's)."""
    if ksrc is not None:
        tree = ksrc.expanduser().resolve()
        if not (tree / "Makefile").is_file() or not (tree / "Kconfig").is_file():
            raise ConfigError(f"--ksrc {ksrc}: not a kernel source tree (no Makefile and Kconfig)")
        return tree
    return debian_tree(kernel_root() / "debian", progress=progress).path


def source_text(tree: Path, path: str) -> str:
    file = tree / path
    if not file.is_file():
        raise ConfigError(f"the coverage scope names {path}, which {tree} lacks")
    return file.read_text(errors="surrogateescape")  # the patch carries odd bytes back unchanged


def statement_start(code_lines: list[str], first_line: int) -> int:
    """The first line of the statement that line `first_line` continues: gcov counts a statement
    spread over lines (a call's arguments, a condition) on one of them, not on each."""
    start = first_line
    while start > 1:
        previous = code_lines[start - 2].strip()
        if not previous or previous.endswith((";", "{", "}", ":")):
            break
        start -= 1
    return start


def counted_from(index: Index, path: str, first: int, last: int, floor: int) -> int:
    """Where to look the lines up: `first`, or, when gcov counts none of first..last on its own
    (an inlined call folded into the block's line before it: kref_init() after
    wait_for_completion()), the nearest line before it that gcov counts, not above `floor`."""
    counted = index.get(path, {})
    if any(str(n) in counted for n in range(first, last + 1)):
        return first
    line = first - 1
    while line >= floor and str(line) not in counted:
        line -= 1
    return line if line >= floor else first


def all_mutants(opts: MutateOptions, progress: Progress) -> tuple[Mutant, ...]:
    """Every mutant of the scope (or of --function), in source order, then sampled and sharded."""
    found: list[Mutant] = []
    tree = source_root(opts.ksrc, progress)
    for entry in opts.scope.entries:
        text = source_text(tree, entry.path)
        wanted = entry.functions
        if opts.functions:
            defined = wanted or tuple(f.name for f in find_functions(text))
            wanted = tuple(f for f in defined if f in opts.functions)
            if not wanted:
                continue
        found += mutants_of(entry.path, text, wanted)
    if opts.functions and not found:
        raise ConfigError(f"--function {', '.join(opts.functions)}: no such function in the scope's files")
    chosen = tuple(found)
    if opts.ids:
        unknown = sorted(set(opts.ids) - {m.id for m in chosen})
        if unknown:
            raise ConfigError(
                f"--mutant {', '.join(unknown)}: no such mutant here (`testbed mutate --list` lists them)"
            )
        chosen = tuple(m for m in chosen if m.id in opts.ids)
    if opts.sample is not None:
        chosen = sample(chosen, opts.sample, opts.seed)
    if opts.shard is not None:
        chosen = shard(chosen, *opts.shard)
    return chosen


def run_pytest(argv: list[str], results: Path, timeout: float | None, progress: Progress) -> tuple[int | None, float]:
    """pytest in its own process group (a deadline kills its VMs too); (exit code or None on
    timeout, seconds)."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *argv, "--results-dir", str(results)]
    progress("$ " + " ".join(command))
    start = time.monotonic()
    log_file = results.parent / f"{results.name}.log"
    results.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("w") as out:
        proc = subprocess.Popen(
            command, cwd=checkout_root(), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            code: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_session(proc)
            code = None
        except BaseException:  # Ctrl-C or SIGTERM (Terminated): its own session would outlive us
            stop_session(proc)
            raise
    return code, time.monotonic() - start


def base_run(opts: MutateOptions, run_dir: Path, progress: Progress) -> RunResults:
    if opts.base_results is not None:
        return load_results(opts.base_results)
    results = run_dir / "base"
    progress("mutate: the base run (unmutated kernel) of the selection")
    code, _ = run_pytest([*opts.selection, *_kernel_args(opts)], results, None, progress)
    if not (results / RUN_FILE).is_file():
        raise InfraError(f"the base run did not complete (pytest exit {code}; log {results}.log)")
    return load_results(results)


def _kernel_args(opts: MutateOptions, patch: Path | None = None) -> list[str]:
    args = ["--kernel-config", opts.kernel_config]
    if opts.ksrc is not None:
        args += ["--kernel", str(opts.ksrc)]
    return args + (["--patches", str(patch)] if patch is not None else [])


def test_one(
    mutant: Mutant,
    opts: MutateOptions,
    base: RunResults,
    index: Index | None,
    run_dir: Path,
    progress: Progress,
    statement_line: int | None = None,
) -> report.MutantResult:
    """Build and test one mutant; `statement_line`: where the statement the mutated lines belong
    to starts (the index counts a statement on one of its lines)."""
    patch = run_dir / "mutants" / f"{_file_name(mutant.id)}.patch"
    patch.parent.mkdir(parents=True, exist_ok=True)
    patch.write_text(mutant.patch)
    rel = str(patch.relative_to(run_dir))

    def result(
        outcome: MutantOutcome, tests: tuple[str, ...] = (), build_s: float = 0.0, test_s: float = 0.0
    ) -> report.MutantResult:
        return report.MutantResult(
            mutant.id, mutant.path, mutant.function, mutant.operator, mutant.first_line, mutant.last_line,
            mutant.description, rel, outcome.status, outcome.reasons, tests, round(build_s, 1), round(test_s, 1),
        )  # fmt: skip

    equivalent = find_equivalent(mutant, opts.equivalents)
    if equivalent is not None:
        return result(MutantOutcome(Status.EQUIVALENT, (f"{equivalent.where}: {equivalent.why}",)))
    tests: tuple[str, ...] = ()
    if index is not None:
        first = min(statement_line or mutant.first_line, mutant.first_line)
        executing = tests_for(index, mutant.path, first, mutant.last_line)
        # an index written under xdist before node ids were recorded plain names "...]@group"
        tests = tuple(dict.fromkeys(t for t in map(plain, executing) if t in base.outcomes))
        if not tests:
            return result(MutantOutcome(Status.NOT_COVERED, ("no test of the selection executes these lines",)))
    start = time.monotonic()
    try:
        art = ensure_kernel(KernelRequest(opts.kernel_config, opts.ksrc, patch), progress)
    except ConfigError as exc:  # does not apply, or does not build: not a bug a test could see
        return result(
            MutantOutcome(Status.INVALID, (str(exc).splitlines()[0][:300],)), build_s=time.monotonic() - start
        )
    build_s = time.monotonic() - start
    results = run_dir / "runs" / _file_name(mutant.id)
    deadline, why = mutant_deadline(opts, base, tests)
    fail_fast = fails_fast(base, tests)
    code, test_s = run_pytest(
        [*opts.selection, *tests, *(["-x"] if fail_fast else []), *_kernel_args(opts, patch)],
        results,
        deadline,
        progress,
    )
    if not opts.keep_kernels:
        _forget_kernel(art.bzimage.parent)
    if code is None:
        timed_out = MutantOutcome(Status.TIMEOUT, (f"no verdict within {deadline:.0f} s ({why})",))
        return result(timed_out, tests, build_s, test_s)
    if not (results / RUN_FILE).is_file():
        return result(
            MutantOutcome(Status.TIMEOUT, (f"pytest ended (exit {code}) without a run record: a crash",)),
            tests,
            build_s,
            test_s,
        )
    outcome = judge(base, load_results(results), tests, stopped_at_first_failure=fail_fast)
    return result(outcome, tests, build_s, test_s)


def mutant_deadline(opts: MutateOptions, base: RunResults, tests: tuple[str, ...]) -> tuple[float, str]:
    """How long one mutant's pytest run may take, and why: the factor times the seconds the
    base run spent in the same tests (every phase, boots included, as if run one by one),
    plus the slack; never more than --mutant-timeout. A base run without durations (recorded
    before they were) leaves the --mutant-timeout alone."""
    spent = sum(base.durations.get(test, 0.0) for test in (tests or tuple(base.outcomes)))
    if spent <= 0:
        return opts.mutant_timeout_s, "--mutant-timeout"
    factor, slack = opts.timeout_factor, opts.timeout_slack_s
    scaled = factor * spent + slack
    if scaled >= opts.mutant_timeout_s:
        return opts.mutant_timeout_s, "--mutant-timeout"
    return scaled, f"{factor:g} x the base run's {spent:.0f} s in these tests + {slack:.0f} s"


def _file_name(mutant_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in mutant_id)


def _forget_kernel(entry: Path) -> None:
    """A mutant's kernel (and its probe module) is asked for once: out of the cache."""
    if entry.parent != kernel_root():
        return
    try:  # the probe's cache is keyed by the kernel and the probe's sources, not by the kernel's key
        shutil.rmtree(cache_dir("probe") / probe_key(kernel_tree_of(entry / "bzImage")), ignore_errors=True)
    except ConfigError:
        pass  # no probe was built for it
    shutil.rmtree(entry, ignore_errors=True)


# What decides a test's outcome besides the kernel: the suites, the harness (the probe module's
# source with it), the guest image's recipe, the declarations the plugin reads.
HARNESS_PARTS = ("tests", "testbed", "guest-images", "topologies", "known-splats.yaml", "known-failures.yaml",
                 "known-skips.yaml")  # fmt: skip


def harness_key(root: Path) -> str:
    """A hash of the testbed's own files under `root` (HARNESS_PARTS; bytecode caches left out)."""
    files: list[Path] = []
    for part in HARNESS_PARTS:
        where = root / part
        found = [where] if where.is_file() else sorted(where.rglob("*")) if where.is_dir() else []
        files += [f for f in found if f.is_file() and "__pycache__" not in f.parts]
    return hash_files(files, root)


def check_harness(root: Path, key: str) -> None:
    """An InfraError when the testbed's own files changed since the base run: the mutants after it
    would be judged against a base run of other code (an edit whose probe did not build "killed"
    every mutant after it)."""
    if harness_key(root) != key:
        raise InfraError(
            f"the testbed's own files ({', '.join(HARNESS_PARTS)}) changed during the mutation run: the "
            "mutants after this point would be judged against a base run of other code; the results so "
            "far are kept, run it again to go on (a new base run)"
        )


def mutate(opts: MutateOptions, run_dir: Path, progress: Progress) -> list[report.MutantResult]:
    mutants = all_mutants(opts, progress)
    progress(f"mutate: {len(mutants)} mutant(s) of {len({(m.path, m.function) for m in mutants})} function(s)")
    run_dir.mkdir(parents=True, exist_ok=True)
    done = {r.id: r for r in report.load(run_dir)}  # a run continued after an interruption
    index = load_index(opts.coverage_run) if opts.coverage_run is not None else None
    tree = source_root(opts.ksrc, progress)
    texts = {path: source_text(tree, path) for path in {m.path for m in mutants}}
    code = {path: code_mask(text).splitlines() for path, text in texts.items()}
    harness = harness_key(checkout_root())  # before the base run: what it ran on
    base = base_run(opts, run_dir, progress)
    start = time.monotonic()
    results = []
    for n, mutant in enumerate(mutants, 1):
        if mutant.id in done:
            results.append(done[mutant.id])
            continue
        if opts.budget_s is not None and time.monotonic() - start > opts.budget_s:
            outcome = report.MutantResult(
                mutant.id, mutant.path, mutant.function, mutant.operator, mutant.first_line, mutant.last_line,
                mutant.description, "", Status.NOT_RUN, ("the --budget ran out",),
            )  # fmt: skip
        else:
            check_harness(checkout_root(), harness)
            progress(f"mutate: [{n}/{len(mutants)}] {mutant.id}: {mutant.description}")
            first = statement_start(code[mutant.path], mutant.first_line)
            if index is not None:
                found = find_function(texts[mutant.path], mutant.function)
                floor = found.body_start if found else first
                first = counted_from(index, mutant.path, first, mutant.last_line, floor)
            outcome = test_one(mutant, opts, base, index, run_dir, progress, first)
            progress(
                f"mutate: [{n}/{len(mutants)}] {outcome.status.value}"
                + (f": {outcome.reasons[0]}" if outcome.reasons else "")
            )
        report.append(run_dir, outcome)
        results.append(outcome)
    return results
