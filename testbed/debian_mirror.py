"""Which Debian mirror the host uses, read from its apt sources: builds go where apt already goes.

Pure parsing of apt's two source formats (one-line `*.list` and deb822 `*.sources`), plus a
thin wrapper reading `/etc/apt`. `TESTBED_DEBIAN_MIRROR` overrides the discovery.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

ENV_VAR = "TESTBED_DEBIAN_MIRROR"
APT_DIR = Path("/etc/apt")

# Suites are recognised by codename: a third-party repository (e.g. "nodistro",
# "cloud-sdk-bookworm") never uses a bare Debian codename as its suite.
DEBIAN_SUITES = frozenset(
    {
        "buster",
        "bullseye",
        "bookworm",
        "trixie",
        "forky",
        "duke",
        "sid",
        "oldoldstable",
        "oldstable",
        "stable",
        "testing",
        "unstable",
        "experimental",
    }
)
_SCHEMES = ("http://", "https://", "ftp://", "file:")


@dataclass(frozen=True)
class AptSource:
    """One source entry; deb822 stanzas may list several URIs and suites."""

    types: tuple[str, ...]
    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    origin: str  # "file:line", for messages
    enabled: bool = True


def _strip_comment(line: str) -> str:
    return line.split("#", 1)[0].strip()


def parse_one_line(text: str, origin: str = "<text>") -> list[AptSource]:
    """`deb [opt=val ...] URI SUITE [COMPONENT ...]` lines."""
    sources = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = _strip_comment(raw)
        if not line:
            continue
        kind, _, rest = line.partition(" ")
        rest = rest.strip()
        if rest.startswith("["):  # options may contain spaces: "[ arch=amd64 signed-by=... ]"
            end = rest.find("]")
            if end < 0:
                continue
            rest = rest[end + 1 :].strip()
        words = rest.split()
        if kind not in ("deb", "deb-src") or len(words) < 2:
            continue
        sources.append(
            AptSource(
                types=(kind,),
                uris=(words[0],),
                suites=(words[1],),
                components=tuple(words[2:]),
                origin=f"{origin}:{lineno}",
            )
        )
    return sources


def _deb822_stanzas(text: str) -> Iterable[tuple[int, dict[str, str]]]:
    fields: dict[str, str] = {}
    start = 0
    last = ""
    for lineno, raw in enumerate(text.splitlines(), 1):
        if raw.startswith("#"):  # comments may sit inside a stanza
            continue
        if not raw.strip():
            if fields:
                yield start, fields
            fields, last = {}, ""
            continue
        if raw[0] in " \t" and last:  # continuation line
            fields[last] += " " + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if not sep:
            continue
        if not fields:
            start = lineno
        last = name.strip().lower()
        fields[last] = value.strip()
    if fields:
        yield start, fields


def parse_deb822(text: str, origin: str = "<text>") -> list[AptSource]:
    """deb822 stanzas (`Types:`, `URIs:`, `Suites:`, `Components:`, `Enabled:`)."""
    sources = []
    for lineno, fields in _deb822_stanzas(text):
        sources.append(
            AptSource(
                types=tuple(fields.get("types", "").split()),
                uris=tuple(fields.get("uris", "").split()),
                suites=tuple(fields.get("suites", "").split()),
                components=tuple(fields.get("components", "").split()),
                origin=f"{origin}:{lineno}",
                enabled=fields.get("enabled", "yes").lower() not in ("no", "false", "0"),
            )
        )
    return sources


def _is_debian_suite(suite: str) -> bool:
    # "bookworm-updates" and "bookworm-backports" are archive suites; "-security" and the
    # old "buster/updates" live on the security archive, which lacks the base suite.
    if suite.endswith("-security") or "/" in suite:
        return False
    return suite.split("-", 1)[0] in DEBIAN_SUITES


def is_debian_archive(source: AptSource) -> bool:
    return (
        source.enabled
        and "deb" in source.types
        and "main" in source.components
        and any(_is_debian_suite(s) for s in source.suites)
    )


def pick_mirror(sources: Iterable[AptSource]) -> str | None:
    """The first Debian archive URI (not the security archive), without a trailing slash."""
    for source in sources:
        if not is_debian_archive(source):
            continue
        for uri in source.uris:
            if uri.startswith(_SCHEMES) and "security" not in uri.rstrip("/").rsplit("/", 1)[-1]:
                return uri.rstrip("/")
    return None


def apt_source_files(apt_dir: Path = APT_DIR) -> list[Path]:
    """In apt's order: sources.list, then sources.list.d/*.list and *.sources sorted by name."""
    files = []
    main = apt_dir / "sources.list"
    if main.is_file():
        files.append(main)
    parts = apt_dir / "sources.list.d"
    if parts.is_dir():
        files += sorted(p for p in parts.iterdir() if p.is_file() and p.suffix in (".list", ".sources"))
    return files


def read_sources(files: Iterable[Path]) -> list[AptSource]:
    sources: list[AptSource] = []
    for path in files:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue  # an unreadable file is apt's problem, not ours
        parse = parse_deb822 if path.suffix == ".sources" else parse_one_line
        sources += parse(text, str(path))
    return sources


def debian_mirror(apt_dir: Path = APT_DIR, environ: Mapping[str, str] = os.environ) -> str:
    """The Debian mirror to build from: `$TESTBED_DEBIAN_MIRROR`, else the host's apt sources."""
    override = environ.get(ENV_VAR, "").strip()
    if override:
        return override.rstrip("/")
    files = apt_source_files(apt_dir)
    mirror = pick_mirror(read_sources(files))
    if mirror is None:
        looked = ", ".join(str(f) for f in files) or f"nothing under {apt_dir}"
        raise ConfigError(
            f"no Debian archive found in the host's apt sources (read: {looked}); "
            f"set {ENV_VAR}=<URL of a Debian archive, e.g. http://<mirror>/debian> (a host that is not "
            f"Debian; in the GitHub workflow: the repository variable {ENV_VAR})"
        )
    return mirror
