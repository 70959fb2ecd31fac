"""`testbed cache` lists the cache; `testbed cache prune` deletes what nothing uses any more."""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from ..inventory import Entry, image_entries, kernel_entries, prune_plan
from ..paths import cache_root

DAY = 86400.0
DEFAULT_DAYS = 14.0  # prune's default age limit; `testbed cache` marks against the same


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="list the cache (kernels, builds, images) or prune it")
    actions = p.add_subparsers(dest="cache_command", metavar="ACTION")
    p.set_defaults(func=_list)
    actions.add_parser("list", help="every entry with its size, last use and state").set_defaults(func=_list)
    prune = actions.add_parser(
        "prune",
        help="delete kernels and images unused for --older-than days (never the current "
        "ones) and the build dirs, worktrees and sources no kept kernel names",
    )
    prune.add_argument(
        "--older-than",
        type=float,
        default=DEFAULT_DAYS,
        metavar="DAYS",
        help="age limit in days (default: %(default)s; 0 keeps only the current ones)",
    )
    prune.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    prune.set_defaults(func=_prune)
    key = actions.add_parser(
        "key",
        help="print the content keys of the kernels and the image a run needs (for a CI cache key); "
        "Debian's package index gives the source's version: the source itself is not fetched",
    )
    key.add_argument(
        "--kernel-config", action="append", metavar="NAME", help="config sets or boot profiles (default: every set)"
    )
    key.add_argument("--selftest", action="store_true", help="each with its selftest companion (default -> selftest)")
    key.add_argument(
        "--github-output",
        type=Path,
        metavar="FILE",
        help="append `key=testbed-<configs>-<digest of the keys>` to FILE ($GITHUB_OUTPUT)",
    )
    key.set_defaults(func=_key)


def _key(args: argparse.Namespace) -> int:
    from ..kernel.configsets import CONFIG_SETS
    from .keys import cache_keys, config_names

    names = config_names(args.kernel_config or CONFIG_SETS, args.selftest)
    keys = cache_keys(names, progress=lambda line: print(line, file=sys.stderr))
    print(keys.lines(), end="")
    if args.github_output:
        with args.github_output.open("a") as out:  # the runner's file collects every step's outputs
            out.write(f"key={keys.ci_key()}\n")
    return 0


def _current_kernels() -> set[str]:
    from ..kernel.build import plan  # no network: fetch=False uses the source fetched last time
    from ..kernel.configsets import CONFIG_SETS

    keys = set()
    for config_set in CONFIG_SETS:
        p = plan(config_set, progress=lambda _: None, fetch=False)
        if p is not None:
            keys.add(p.key)
    return keys


def _current_images() -> set[str]:
    from ..hashing import short
    from ..image.recipe import load_recipe, recipe_key

    return {short(recipe_key(load_recipe()))}


def _current_source() -> tuple[Path, ...]:
    from ..kernel.build import kernel_root
    from ..kernel.debian import pinned_source

    src = pinned_source(kernel_root() / "debian")
    return (src.tree,) if src else ()


def _entries() -> list[Entry]:
    root = cache_root()
    return kernel_entries(root / "kernel", _current_kernels()) + image_entries(root / "image", _current_images())


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "K", "M", "G"):
        if size < 1024 or unit == "G":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    return f"{size}"


def _row(e: Entry, now: float, state: str) -> str:
    age = (now - e.last_used) / DAY
    return f"{e.kind:<14} {_size(e.size):>7} {age:6.1f}d  {state:<8} {e.label}\n{'':<15}{e.path}"


def _list(args: argparse.Namespace) -> int:
    from ..kernel.build import kernel_root
    from ..kernel.lock import is_locked

    now = time.time()
    entries = _entries()
    doomed = {e.path for e in prune_plan(entries, now, DEFAULT_DAYS * DAY, _current_source())}
    # a kernel build holds the lock while it works in builds/ and trees/: what it uses has no
    # manifest naming it yet, so it would look prunable; a prune waits for the lock instead
    building = is_locked(kernel_root() / ".lock")
    print(f"cache: {cache_root()}")
    print(f"{'kind':<14} {'size':>7} {'unused':>7}  {'state':<8} what")
    for e in entries:
        state = "current" if e.current else ("prunable" if e.path in doomed else "kept")
        if building and state == "prunable" and e.kind in ("kernel-build", "kernel-tree"):
            state = "busy"
        print(_row(e, now, state))
    if building:
        print(
            "a kernel build is running: build directories and worktrees show as busy, and "
            "`testbed cache prune` waits for it to finish before deciding"
        )
    total = sum(e.size for e in entries)
    freed = sum(e.size for e in entries if e.path in doomed)
    print(f"total {_size(total)}; `testbed cache prune` would free {_size(freed)} (unused > {DEFAULT_DAYS:g} days)")
    return 0


def _prune(args: argparse.Namespace) -> int:
    from ..kernel.build import kernel_root
    from ..kernel.lock import locked
    from ..vm import registry

    if args.older_than < 0:
        raise ConfigError(f"--older-than {args.older_than}: must be 0 or more days")
    vms = registry.running()
    if vms and not args.dry_run:
        # a running VM's overlay is backed by a cached image: never delete under it
        raise ConfigError(
            f"{len(vms)} testbed VM(s) running ({', '.join(v.name for v in vms)}); stop them before pruning"
        )
    now = time.time()
    with locked(kernel_root() / ".lock"):  # not while a kernel is being built
        doomed = prune_plan(_entries(), now, args.older_than * DAY, _current_source())
        for e in doomed:
            print(f"{'would delete' if args.dry_run else 'deleting'} {e.kind} {_size(e.size)} {e.path}")
            if not args.dry_run:
                shutil.rmtree(e.path)
    freed = sum(e.size for e in doomed)
    print(
        f"{'would free' if args.dry_run else 'freed'} {_size(freed)} in {len(doomed)} entr"
        f"{'y' if len(doomed) == 1 else 'ies'}"
    )
    return 0
