"""Where things live: the data the testbed ships (topologies, kernel configs, the guest image
recipe, the known-* and coverage declarations) and the user's cache.

The data sits at the top of the checkout. An installed wheel carries it as data files under
`<prefix>/share/testbed/` (pyproject.toml's [tool.setuptools.data-files]), the same tree.
DATA_ROOT is the checkout when this package runs from one (source tree, editable install), else
that installed copy; the package's own files (probe module sources, guest agent, templates) are
package data and found next to the code."""

from __future__ import annotations

import os
import stat
import sysconfig
import tempfile
from collections.abc import Iterable
from pathlib import Path

# the checkout this package runs from; for an installed wheel, the site-packages directory (the
# repository's pytest suites, which only a checkout has, are run with cwd=REPO_ROOT)
REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_SUBDIR = Path("share") / "testbed"  # under the install scheme's data path (sys.prefix in a venv)
_MARKERS = ("topologies", "kernel-configs")  # directories that a data root holds


def is_data_root(path: Path) -> bool:
    return all((path / name).is_dir() for name in _MARKERS)


def _recorded_data_root() -> Iterable[Path]:
    """Where the installer put the data files of the distribution this very file came from, by
    its RECORD: right for the schemes (--user, --prefix, --root) that sys.prefix misses."""
    from importlib import metadata

    marker = f"{DATA_SUBDIR.as_posix()}/{_MARKERS[0]}/"
    for dist in metadata.distributions(name="testbed"):
        if Path(str(dist.locate_file("testbed/paths.py"))).resolve() != Path(__file__).resolve():
            continue  # another copy on sys.path (an editable install's metadata, say)
        for file in dist.files or []:
            if marker in file.as_posix():  # <data>/share/testbed/topologies/<name>.yaml
                yield Path(str(dist.locate_file(file))).resolve().parent.parent
                return


def data_root_candidates() -> Iterable[Path]:
    """Where DATA_ROOT may be, in order: the checkout, the install scheme's data path (a venv's
    or the system's), then wherever this distribution's RECORD says its data files went."""
    yield REPO_ROOT
    yield Path(sysconfig.get_path("data")) / DATA_SUBDIR
    yield from _recorded_data_root()


def find_data_root(candidates: Iterable[Path]) -> Path | None:
    return next((path for path in candidates if is_data_root(path)), None)


_FOUND = find_data_root(data_root_candidates())
# With none (an install that dropped its data files), the names below point where a venv's
# install puts them, and data_root() says what is missing.
DATA_ROOT = _FOUND or Path(sysconfig.get_path("data")) / DATA_SUBDIR


def data_root() -> Path:
    """DATA_ROOT, or a ConfigError if this install has no data (never an empty listing)."""
    if _FOUND is None:
        from .errors import ConfigError

        looked = ", ".join(str(p) for p in dict.fromkeys(data_root_candidates()))
        raise ConfigError(
            f"the testbed's data (topologies/, kernel-configs/, ...) is in none of: {looked}; "
            "run it from a checkout, or install the wheel with its data files (pip install .)"
        )
    return _FOUND


TOPOLOGIES_DIR = DATA_ROOT / "topologies"
KERNEL_CONFIGS_DIR = DATA_ROOT / "kernel-configs"
GUEST_IMAGES_DIR = DATA_ROOT / "guest-images"
KNOWN_SPLATS_FILE = DATA_ROOT / "known-splats.yaml"
UPSTREAM_FIXES_DIR = DATA_ROOT / "upstream-fixes"
KNOWN_FAILURES_FILE = DATA_ROOT / "known-failures.yaml"
KNOWN_SKIPS_FILE = DATA_ROOT / "known-skips.yaml"
COVERAGE_SCOPE_FILE = DATA_ROOT / "coverage-scope.yaml"
COVERAGE_UNCOVERED_FILE = DATA_ROOT / "coverage-uncovered.yaml"
MUTATION_EQUIVALENTS_FILE = DATA_ROOT / "mutation-equivalents.yaml"


def checkout_root() -> Path:
    """REPO_ROOT, for what runs the repository's pytest suites (tests/ is not in the wheel); a
    ConfigError from an installed testbed."""
    if not (REPO_ROOT / "tests" / "vm").is_dir():
        from .errors import ConfigError

        raise ConfigError(
            "this command runs the testbed's pytest suites, which only a checkout has "
            f"({REPO_ROOT} holds no tests/vm): run it from a clone of the testbed's repository"
        )
    return REPO_ROOT


def cache_root() -> Path:
    """`$XDG_CACHE_HOME/testbed` (default `~/.cache/testbed`); `TESTBED_CACHE` overrides."""
    override = os.environ.get("TESTBED_CACHE")
    if override:
        return Path(override)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "testbed"


def cache_dir(kind: str) -> Path:
    """A sub-directory of the cache for one kind of artifact (kernel, image, ...), created."""
    path = cache_root() / kind
    path.mkdir(parents=True, exist_ok=True)
    return path


def results_root() -> Path:
    """Per-run results (console logs, QMP event logs, JUnit); `TESTBED_RESULTS` overrides.
    `results/` of the checkout, or of the current directory for an installed testbed (not
    site-packages)."""
    override = os.environ.get("TESTBED_RESULTS")
    if override:
        return Path(override)
    return (REPO_ROOT if is_data_root(REPO_ROOT) else Path.cwd()) / "results"


def runtime_dir() -> Path:
    """Sockets and pid files of running VMs (short paths: unix sockets cap at 107 bytes).

    Without XDG_RUNTIME_DIR it lives in the shared temp folder, where anyone could have made
    `testbed-<uid>` first: it must be a directory (not a link) of ours with mode 0700, or the
    QMP sockets and the VM registry in it would be someone else's to read and replace."""
    base = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    path = Path(base) / f"testbed-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    check_private_dir(path)
    return path


def check_private_dir(path: Path) -> None:
    """A ConfigError unless `path` is a real directory owned by us, closed to everyone else."""
    from .errors import ConfigError

    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"{path} is not a directory (a link or a file): refusing to keep VM sockets there")
    if info.st_uid != os.getuid():
        raise ConfigError(
            f"{path} belongs to uid {info.st_uid}, not to you ({os.getuid()}): remove it or set XDG_RUNTIME_DIR"
        )
    if info.st_mode & 0o077:
        raise ConfigError(f"{path} has mode {stat.S_IMODE(info.st_mode):o}; it must be 700 (chmod 700 {path})")
