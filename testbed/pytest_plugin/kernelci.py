"""Test paths as KernelCI names them, so results join other KernelCI origins' in KCIDB.

KernelCI's pipeline (kernelci-pipeline's send_kcidb, with Linaro's kselftest output parser)
names a kselftest case `kselftest.<collection>.<collection>_<program>_<case>` (every run of
characters outside [A-Za-z0-9_-] one "_") and a KUnit case `kunit.exec.<suite>.<case>`. The
testbed's own tests are `testbed.<module>.<test>[.<parameters>]`; the topology is not part of
a path (it is the test's environment in KCIDB), and a device a program ran against neither.
"""

from __future__ import annotations

import re

from ..runs.record import plain

_UNSAFE = re.compile(r"[^A-Za-z0-9_\-]+")


def slug(text: str) -> str:
    return _UNSAFE.sub("_", text).strip("_")


def _dotted(words: list[str]) -> str:
    """Words joined by dots, those that slug to nothing left out (KCIDB's path has no empty part)."""
    return ".".join(w for w in map(slug, words) if w)


def kselftest_path(collection: str, program: str, case: str | None) -> str:
    words = [collection, program] + ([case] if case else [])
    return _dotted(["kselftest", collection, "_".join(words)])


def kunit_path(case: str | None) -> str:
    """`case` is "suite.case" (None: the boot that ran them all)."""
    if case is None:
        return "kunit.exec"
    suite, _, name = case.partition(".")
    return _dotted(["kunit", "exec", suite, name])


def own_test_path(nodeid: str, topology: str | None = None) -> str:
    """ "tests/vm/test_p2p.py::test_x[two-switch-edu0-shm0]" on two-switch ->
    "testbed.test_p2p.test_x.edu0-shm0" (the topology's part of the id dropped)."""
    file, _, rest = plain(nodeid).partition("::")
    module = file.rsplit("/", 1)[-1].removesuffix(".py")
    name, _, param = rest.partition("[")
    param = param.removesuffix("]")
    if topology and (param == topology or param.startswith(f"{topology}-")):
        param = param[len(topology) :].lstrip("-")
    return _dotted(["testbed", module, *name.split("::"), param])
