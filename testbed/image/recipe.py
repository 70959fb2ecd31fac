"""The guest image recipe (`guest-images/`): load, validate, and derive the cache key."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..hashing import hash_bytes, hash_files
from ..paths import GUEST_IMAGES_DIR

RECIPE_FILE = "recipe.toml"
PACKAGES_FILE = "packages.txt"
ROOTFS_DIR = "rootfs"  # copied over the bootstrapped tree, file by file

# Bump when the build steps change what ends up in the image (the recipe files cannot say).
BUILD_SCHEMA = 2  # 2: the rootfs's Python modules byte-compiled

FORMATS = ("qcow2", "raw")
_SIZE = re.compile(r"^[1-9][0-9]*[MG]$")
_PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_KEYS = {
    "suite": str,
    "variant": str,
    "architecture": str,
    "components": list,
    "size": str,
    "format": str,
}


@dataclass(frozen=True)
class Recipe:
    directory: Path
    suite: str
    variant: str
    architecture: str
    components: tuple[str, ...]
    size: str  # mke2fs size, e.g. "2G"
    format: str  # "qcow2" | "raw"
    packages: tuple[str, ...]

    @property
    def rootfs(self) -> Path:
        return self.directory / ROOTFS_DIR


def parse_packages(text: str, origin: str = PACKAGES_FILE) -> tuple[str, ...]:
    """One package per line; `#` starts a comment. Order kept, duplicates dropped."""
    packages: list[str] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        name = raw.split("#", 1)[0].strip()
        if not name:
            continue
        if not _PACKAGE.match(name):
            raise ConfigError(
                f"{origin}:{lineno}: {name!r} is not a Debian package name "
                "(one name per line, lower case, no version or options)"
            )
        if name not in packages:
            packages.append(name)
    return tuple(packages)


def parse_recipe(data: dict[str, object], directory: Path, packages: tuple[str, ...]) -> Recipe:
    origin = directory / RECIPE_FILE
    for key, value in data.items():
        if key not in _KEYS:
            raise ConfigError(f"{origin}: unknown key {key!r}; allowed: {', '.join(_KEYS)}")
        if not isinstance(value, _KEYS[key]):
            raise ConfigError(f"{origin}: {key} must be a {_KEYS[key].__name__}, got {value!r}")
    missing = [k for k in _KEYS if k not in data]
    if missing:
        raise ConfigError(f"{origin}: missing {', '.join(missing)}")
    if data["format"] not in FORMATS:
        raise ConfigError(f"{origin}: format {data['format']!r}; allowed: {', '.join(FORMATS)}")
    if not _SIZE.match(str(data["size"])):
        raise ConfigError(f"{origin}: size {data['size']!r}; expected e.g. '2G' or '1536M'")
    components = data["components"]
    assert isinstance(components, list)
    if not components or not all(isinstance(c, str) for c in components):
        raise ConfigError(f"{origin}: components must be a non-empty list of strings")
    return Recipe(
        directory=directory,
        suite=str(data["suite"]),
        variant=str(data["variant"]),
        architecture=str(data["architecture"]),
        components=tuple(components),
        size=str(data["size"]),
        format=str(data["format"]),
        packages=packages,
    )


def load_recipe(directory: Path = GUEST_IMAGES_DIR) -> Recipe:
    recipe_path = directory / RECIPE_FILE
    packages_path = directory / PACKAGES_FILE
    for path in (recipe_path, packages_path):
        if not path.is_file():
            raise ConfigError(f"{path}: missing; the guest image recipe needs it")
    try:
        data = tomllib.loads(recipe_path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{recipe_path}: {exc}") from None
    packages = parse_packages(packages_path.read_text(), str(packages_path))
    return parse_recipe(data, directory, packages)


BYTECODE_DIR = "__pycache__"


def recipe_files(directory: Path) -> list[Path]:
    """The recipe's files: everything under its directory but Python's bytecode caches, which a
    run of the listener from a checkout or pip's install of the data writes beside a module (the
    image build compiles its own)."""
    return sorted(p for p in directory.rglob("*") if p.is_file() and BYTECODE_DIR not in p.parts)


def _modes(directory: Path) -> bytes:
    # the hash sees contents only; an executable bit decides whether the init can run.
    lines = sorted(
        f"{p.relative_to(directory)} {'x' if p.stat().st_mode & 0o111 else '-'}" for p in recipe_files(directory)
    )
    return "\n".join(lines).encode()


def recipe_key(recipe: Recipe) -> str:
    """Cache key: the recipe tree (contents and exec bits), suite, architecture, build schema.

    The mirror is deliberately not an input: the same recipe from another mirror is the same
    image.
    """
    return hash_bytes(
        b"testbed-guest-image",
        str(BUILD_SCHEMA).encode(),
        recipe.suite.encode(),
        recipe.architecture.encode(),
        hash_files(recipe_files(recipe.directory), recipe.directory).encode(),
        _modes(recipe.directory),
    )
