"""The matrix's results as KCIDB JSON (KernelCI's reporting schema), shaped as KernelCI's own
origins write it and validated with kcidb-io (the `kcidb` extra) before it is written.

- a checkout per source + series: for a git tree its https repository URL, commit, `git
  describe` and branch, `tree_name` as KernelCI names the tree (mainline, next, stable, ...)
  or after the repository; Debian's source package otherwise; the series' patchset hash;
- a build per kernel (cache key), its config set;
- a test per cell and test, at KernelCI's path (`kselftest.<collection>.<...>`,
  `kunit.exec.<suite>.<case>`, `testbed.<module>.<test>`), the topology, cell, IOMMU mode
  and accelerator in its environment, its VM's console log as log_url;
- known failures (strict xfails: a kernel bug, a base-tree failure, an emulation limit) are
  FAIL, each linked by an incident to an issue; so is every splat known-splats.yaml knows.

KCIDB wants absolute URLs: `log_base` (e.g. where the run's artifacts are published) + the
file's path below the merged directories, or file:// URLs of the files here without one.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..pytest_plugin.kernelci import own_test_path
from .cells import CellResults

ORIGIN = "p2p_testbed"  # KCIDB origins are [a-z0-9_]
STATUS = {
    "passed": "PASS",
    "failed": "FAIL",
    "error": "ERROR",
    "skipped": "SKIP",
    "xfailed": "FAIL",  # a known failure is a failure; its incident links the issue it is
    "xpassed": "FAIL",  # strict xfail: a limit or bug that vanished is a failure
}
# KernelCI's tree names (kernelci-pipeline's trees) for the repositories a developer clones
KNOWN_TREES = {
    "git.kernel.org/pub/scm/linux/kernel/git/torvalds/linux": "mainline",
    "github.com/torvalds/linux": "mainline",
    "git.kernel.org/pub/scm/linux/kernel/git/next/linux-next": "next",
    "git.kernel.org/pub/scm/linux/kernel/git/stable/linux": "stable",
    "git.kernel.org/pub/scm/linux/kernel/git/stable/linux-stable-rc": "stable-rc",
    "git.kernel.org/pub/scm/linux/kernel/git/joro/iommu": "iommu",
    "git.kernel.org/pub/scm/linux/kernel/git/jgg/iommufd": "iommufd",
    "github.com/awilliam/linux-vfio": "vfio",
    "git.kernel.org/pub/scm/linux/kernel/git/pci/pci": "pci",
}
_DEBIAN_TREE = re.compile(r"linux-source-(?P<major>[\d.]+)_(?P<version>[^/]+)")


def kcidb_available() -> None:
    """A ConfigError, before anything is merged, when kcidb-io is not installed."""
    try:
        import kcidb_io  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--kcidb needs kcidb-io, the `kcidb` extra: pip install 'testbed[kcidb]' (make venv installs it)"
        ) from None


@dataclass(frozen=True)
class Links:
    """File URLs: `base` + the path below the root that holds the file (the cell directories
    given to merge), or a file:// URL without a base."""

    roots: tuple[Path, ...]
    base: str | None = None

    def url(self, path: Path) -> str:
        path = path.resolve()
        for root in (r.resolve() for r in self.roots):
            if self.base and path.is_relative_to(root):
                rel = path.relative_to(root).as_posix()
                return f"{self.base.rstrip('/')}/{urllib.parse.quote(rel)}"
        return path.as_uri()


def _id(*parts: str) -> str:
    return f"{ORIGIN}:" + hashlib.sha256("\0".join(parts).encode()).hexdigest()[:24]


def path_of(nodeid: str) -> str:
    """The path of a test whose run.json predates recorded paths (its topology unknown, so it
    stays in the parameters): "tests/vm/test_p2p.py::t[x-y]" -> "testbed.test_p2p.t.x-y"."""
    return own_test_path(nodeid)


def https_url(remote: str) -> str | None:
    """A git remote as the https URL KCIDB requires; None for a local path or an unknown form."""
    remote = remote.strip()
    if m := re.fullmatch(r"ssh://(?:[\w.-]+@)?([\w.-]+)(?::\d+)?/(.+)", remote):
        host, path = m.groups()  # an ssh port is not https's
    elif m := re.fullmatch(r"[\w.-]+@([\w.-]+):(.+)", remote):
        host, path = m.groups()
    elif m := re.fullmatch(r"(?:git|https?)://([\w.-]+(?::\d+)?)/(.+)", remote):
        host, path = m.groups()
    else:
        return None
    return f"https://{host}/{path.lstrip('/')}"


def tree_name(url: str | None, fallback: str) -> str:
    if url:
        key = url.removeprefix("https://").removesuffix("/").removesuffix(".git")
        return KNOWN_TREES.get(key, key.rsplit("/", 1)[-1])
    return fallback


def checkout_of(kernel: dict[str, Any]) -> dict[str, Any]:
    """A checkout (without its id and origin) from a boot's kernel record."""
    source = kernel.get("source") or {}
    out: dict[str, Any] = {}
    if source.get("kind") == "git" and source.get("series_base_commit"):
        # the series was applied on its base-commit:, not on the tree's HEAD (nor its changes)
        source = {k: v for k, v in source.items() if k not in ("describe", "branch", "dirty")}
        source |= {"commit": source["series_base_commit"], "dirty": False}
    if source.get("kind") == "git" and source.get("commit"):
        url = https_url(str(source.get("remote_url") or ""))
        out["tree_name"] = tree_name(url, Path(str(kernel.get("source_tree") or "linux")).name)
        if url:
            out["git_repository_url"] = url
        out["git_commit_hash"] = source["commit"]
        if source.get("describe"):
            out["git_commit_name"] = source["describe"]
        if source.get("branch"):
            out["git_repository_branch"] = source["branch"]
        out["misc"] = {"dirty": bool(source.get("dirty"))}
    elif m := _DEBIAN_TREE.search(str(kernel.get("source_tree") or source.get("identity") or "")):
        out["tree_name"] = "debian"
        out["comment"] = f"Debian's linux-source-{m['major']} {m['version']}"
        out["misc"] = {"package": f"linux-source-{m['major']}", "version": m["version"]}
    else:
        out["tree_name"] = Path(str(kernel.get("source_tree") or "linux")).name
        out["misc"] = {"path": str(kernel.get("source_tree") or "")}
    patches = [str(p) for p in kernel.get("patches") or []]
    hashes = [str(h) for h in source.get("patch_sha256") or []]
    if patches and len(hashes) == len(patches):
        out["patchset_hash"] = hashlib.sha256("".join(f"{h}\n" for h in hashes).encode()).hexdigest()
    elif not patches:
        out["patchset_hash"] = ""
    if patches:
        out["comment"] = f"{out.get('comment', out['tree_name'])} + {len(patches)} patch(es): {', '.join(patches)}"
        out.setdefault("misc", {})["patches"] = patches
    return out


@dataclass(frozen=True)
class _CellDoc:
    """What kcidb() reads of one cell: its run record (read once, by runs/results.py), and
    where its VMs' logs are."""

    cell: CellResults

    def kernel(self) -> dict[str, Any]:
        return next((k for k in self.cell.run.boot_kernels if k), {})

    def facts(self, nodeid: str) -> dict[str, str]:
        return self.cell.run.tests.get(nodeid, {})

    def console(self, nodeid: str) -> Path | None:
        vm = self.cell.run.vms.get(nodeid)
        if not vm:
            return None
        pattern = re.compile(rf"{re.escape(vm)}-\d{{8}}-\d{{6}}-")
        found = sorted(d for d in (self.cell.directory / "vm").glob(f"{vm}-*") if pattern.match(d.name))
        logs = [d / "console.log" for d in found if (d / "console.log").is_file()]
        return logs[0] if logs else None


def _culprit(reason: str) -> dict[str, bool]:
    tool = "emulation limit" in reason or "QEMU" in reason.split(":", 1)[0]
    return {"code": not tool, "tool": tool, "harness": False}


class _Issues:
    """KCIDB issues (one per distinct known cause) and their incidents."""

    def __init__(self) -> None:
        self.issues: dict[str, dict[str, Any]] = {}
        self.incidents: list[dict[str, Any]] = []
        self._seen: set[str] = set()

    def incident(self, cause: str, comment: str, culprit: dict[str, bool], **link: str) -> None:
        issue_id = _id("issue", cause)
        self.issues.setdefault(
            issue_id,
            {"id": issue_id, "version": 1, "origin": ORIGIN, "comment": comment[:1000], "culprit": culprit,
             "misc": {"cause": cause}},
        )  # fmt: skip
        target = "\0".join(f"{k}={v}" for k, v in sorted(link.items()))
        incident_id = _id("incident", cause, target)
        if incident_id in self._seen:  # the same splat twice in one test
            return
        self._seen.add(incident_id)
        self.incidents.append(
            {"id": incident_id, "origin": ORIGIN, "issue_id": issue_id, "issue_version": 1,
             "present": True, **link}
        )  # fmt: skip


def kcidb(cells: list[CellResults], links: Links | None = None) -> dict[str, Any]:
    kcidb_available()
    from kcidb_io.schema import LATEST

    links = links or Links(())
    checkouts: dict[str, dict[str, Any]] = {}
    builds: dict[str, dict[str, Any]] = {}
    tests: list[dict[str, Any]] = []
    issues = _Issues()
    for cell in cells:
        got = _CellDoc(cell)
        kernel = got.kernel()
        checkout = checkout_of(kernel)
        checkout_id = _id("checkout", json.dumps(checkout, sort_keys=True))
        checkouts.setdefault(checkout_id, {"id": checkout_id, "origin": ORIGIN, **checkout, "valid": True})
        build_id = _id("build", str(kernel.get("key") or cell.id))
        builds.setdefault(build_id, _build(build_id, checkout_id, kernel, cell))
        for nodeid, outcome in sorted(cell.run.outcomes.items()):
            test = _test(got, nodeid, outcome, build_id, links)
            tests.append(test)
            reason = got.facts(nodeid).get("xfail")
            if outcome == "xfailed" and reason:
                issues.incident(reason, reason, _culprit(reason), test_id=test["id"])
        _known_splats(got, build_id, issues)
    doc = {
        "version": {"major": LATEST.major, "minor": LATEST.minor},
        "checkouts": list(checkouts.values()),
        "builds": list(builds.values()),
        "tests": tests,
        "issues": list(issues.issues.values()),
        "incidents": issues.incidents,
    }
    try:
        LATEST.validate(doc)
    except Exception as exc:  # jsonschema's error, shortened
        raise ConfigError(f"the KCIDB document does not validate against schema v{LATEST.major}.{LATEST.minor}: "
                          f"{str(exc)[:1000]}") from None  # fmt: skip
    return doc


def _build(build_id: str, checkout_id: str, kernel: dict[str, Any], cell: CellResults) -> dict[str, Any]:
    misc = {k: kernel[k] for k in ("key", "release") if kernel.get(k)}
    fixes = [f.get("name") for f in kernel.get("base_fixes") or [] if isinstance(f, dict)]
    return {
        "id": build_id,
        "checkout_id": checkout_id,
        "origin": ORIGIN,
        "architecture": "x86_64",
        "config_name": str(kernel.get("config_set") or cell.cell.get("config") or "default"),
        "status": "PASS",
        "misc": misc | {"base_fixes": fixes},
    }


def _test(got: _CellDoc, nodeid: str, outcome: str, build_id: str, links: Links) -> dict[str, Any]:
    cell, facts = got.cell, got.facts(nodeid)
    topology = facts.get("topology") or str(cell.cell.get("topology") or "")
    env_misc = {"cell": cell.id, "accel": ",".join(cell.run.accel)}
    env_misc |= {"qemu": cell.run.qemu} if cell.run.qemu else {}
    env_misc |= {"topology": topology} if topology else {}
    env_misc |= {"iommu": str(cell.cell["iommu"])} if cell.cell.get("iommu") else {}
    test: dict[str, Any] = {
        "id": _id("test", cell.id, nodeid),
        "build_id": build_id,
        "origin": ORIGIN,
        "path": facts.get("path") or path_of(nodeid),
        "status": STATUS[outcome],
        "environment": {"comment": f"topology {topology or '-'} (cell {cell.id})", "misc": env_misc},
        "misc": {"nodeid": nodeid, "outcome": outcome},
    }
    seconds = cell.run.durations.get(nodeid)
    if isinstance(seconds, int | float):
        test["duration"] = float(seconds)
    console = got.console(nodeid)
    if console is not None:
        test["log_url"] = links.url(console)
    return test


def _known_splats(got: _CellDoc, build_id: str, issues: _Issues) -> None:
    """Each splat known-splats.yaml knows: an incident of its entry's issue on the test it
    happened in, or on the build when it happened outside every test."""
    ids = {nodeid: _id("test", got.cell.id, nodeid) for nodeid in got.cell.run.outcomes}
    for splat in got.cell.run.splats:
        if not splat.known:
            continue
        cause = f"known splat {splat.signature} ({splat.known})"
        culprit = {"code": True, "tool": False, "harness": False}
        link = {"test_id": ids[splat.where]} if splat.where in ids else {"build_id": build_id}
        issues.incident(cause, f"{splat.kind}: {splat.signature}, known-splats.yaml entry {splat.known}",
                        culprit, **link)  # fmt: skip
