"""`testbed cache key`: the content keys of the kernels and the image a run needs, for a CI cache
key, without the kernel source.

All Debian's linux-source contributes to a kernel's key is its identity: package, version and
the .deb's sha256 (kernel/debian.py). The package index names all three, so an `apt-get update`
(a few MB) stands in for downloading and extracting the source (~160 MB, ~1.5 GB unpacked).
The other inputs are the ones kernel/build.py's plan() hashes; tests/unit/test_cache_keys.py
holds the two together."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from ..coverage.scope import DEFAULT_SCOPE, load_scope
from ..debian_mirror import debian_mirror
from ..errors import ConfigError, InfraError
from ..kernel import basefixes, debian
from ..kernel.build import kernel_root
from ..kernel.cachekey import KeyInputs, compiler_version
from ..kernel.configsets import COVERAGE_SETS, KERNEL_CONFIGS, build_set, load_config_set
from ..kernel.lock import locked
from ..kernel.request import selftest_set

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


@dataclass(frozen=True)
class KernelKey:
    name: str  # the --kernel-config name asked for
    build: str  # the config set it builds (a boot profile boots another set's build)
    key: str


@dataclass(frozen=True)
class CacheKeys:
    kernels: tuple[KernelKey, ...]
    image: str

    def lines(self) -> str:
        out = [f"kernel-{k.name}={k.key}" for k in self.kernels]
        return "\n".join([*out, f"image={self.image}"]) + "\n"

    def ci_key(self) -> str:
        """One cache key for all of them: the names asked for (no selftest companions) and a
        digest of every key."""
        names = [k.name for k in self.kernels if not k.name.endswith("selftest")]
        digest = hashlib.sha256(self.lines().encode()).hexdigest()[:32]
        return f"testbed-{'+'.join(names) or 'kernels'}-{digest}"


def config_names(asked: Iterable[str], selftest: bool) -> tuple[str, ...]:
    """The --kernel-config names, each followed by its selftest companion when asked."""
    names: list[str] = []
    for name in asked:
        names.append(name)
        if selftest and not name.endswith("selftest"):
            names.append(selftest_set(name))
    unknown = [n for n in names if n not in KERNEL_CONFIGS]
    if unknown:
        raise ConfigError(f"unknown kernel config {', '.join(unknown)}; allowed: {', '.join(KERNEL_CONFIGS)}")
    return tuple(dict.fromkeys(names))


def index_source_identity(progress: Progress = print) -> str:
    """The identity of the linux-source the next fetch would extract, from the package index."""
    root = kernel_root() / "debian"
    mirror, suites = debian_mirror(), debian.debian_suites()
    with locked(root / ".lock", progress):  # the same private apt the fetch uses
        apt = debian.PrivateApt(root / "apt")
        apt.prepare(mirror, suites)
        progress(f"kernel: apt-get update ({mirror}, suites {' '.join(suites)}), for {debian.PACKAGE}'s version")
        apt.run(["update"])
        info = apt.cache_show(debian.PACKAGE)
    version, sha256 = info.get("Version", ""), info.get("SHA256", "")
    if not version or not sha256:
        raise InfraError(f"the index lists {debian.PACKAGE} without a Version and SHA256: {info}")
    # the tree plays no part in the identity; the source is never fetched here
    return debian.DebianSource(debian.PACKAGE, version, sha256, Path()).identity


def kernel_key(name: str, source: str) -> KernelKey:
    """The key kernel/build.py's plan() gives the build of `name` from a source of that identity
    (Debian's source: no --ksrc, no patches, the default coverage scope)."""
    build = build_set(name)
    scope = load_scope(DEFAULT_SCOPE) if build in COVERAGE_SETS else None
    fixes = basefixes.fixes_for(build, basefixes.load_fixes())
    inputs = KeyInputs(
        source=source,
        patches="",
        fragment=load_config_set(build).render(),
        compiler=compiler_version(),
        config_set=build,
        base_fixes=basefixes.fixes_hash(fixes) if basefixes.enabled() else "",
        coverage=scope.digest() if scope is not None else "",
    )
    return KernelKey(name, build, inputs.key())


def image_key() -> str:
    from ..image.recipe import load_recipe, recipe_key

    return recipe_key(load_recipe())[:16]


def cache_keys(names: tuple[str, ...], progress: Progress = print) -> CacheKeys:
    for name in names:
        load_config_set(build_set(name))  # a bad fragment fails before the index is fetched
    source = index_source_identity(progress)
    log.debug("source identity %s", source)
    return CacheKeys(tuple(kernel_key(n, source) for n in names), image_key())
