"""Mirror discovery from apt sources: both formats, security and third-party repos skipped."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.debian_mirror import (
    ENV_VAR,
    apt_source_files,
    debian_mirror,
    parse_deb822,
    parse_one_line,
    pick_mirror,
)
from testbed.errors import ConfigError

DEB822 = """\
Types: deb
# http://snapshot.example/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main
"""

SECURITY_FIRST = """\
Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: https://other.example/debian/
Suites: bookworm
Components: main contrib
"""

ONE_LINE = """\
# deb http://commented.example/debian bookworm main
deb [arch=amd64 signed-by=/k/x.gpg] https://vendor.example/apt cloud-sdk-bookworm main
deb-src http://src.example/debian bookworm main
deb http://security.example/debian-security bookworm-security main
deb [ arch=amd64 ] http://mirror.example/debian/ bookworm main non-free-firmware
"""


def test_deb822_takes_first_archive_uri_not_security() -> None:
    assert pick_mirror(parse_deb822(DEB822)) == "http://mirror.example/debian"


def test_deb822_skips_security_stanza_listed_first() -> None:
    assert pick_mirror(parse_deb822(SECURITY_FIRST)) == "https://other.example/debian"


def test_deb822_comment_inside_stanza_is_ignored() -> None:
    (first, _) = parse_deb822(DEB822)
    assert first.uris == ("http://mirror.example/debian",)
    assert first.suites == ("bookworm", "bookworm-updates")


def test_deb822_disabled_and_continuation_lines() -> None:
    text = (
        "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\n"
        "Enabled: no\n\n"
        "Types: deb\nURIs:\n http://on.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    assert pick_mirror(parse_deb822(text)) == "http://on.example/debian"


def test_one_line_options_third_party_src_and_security_skipped() -> None:
    sources = parse_one_line(ONE_LINE, "sources.list")
    assert [s.origin for s in sources] == [
        "sources.list:2",
        "sources.list:3",
        "sources.list:4",
        "sources.list:5",
    ]
    assert pick_mirror(sources) == "http://mirror.example/debian"


def test_old_style_security_suite_is_skipped() -> None:
    text = "deb http://sec.example/debian-security buster/updates main\ndeb http://mirror.example/debian buster main\n"
    assert pick_mirror(parse_one_line(text)) == "http://mirror.example/debian"


def test_non_debian_host_has_no_mirror() -> None:
    text = "deb http://archive.example/ubuntu jammy main universe\n"
    assert pick_mirror(parse_one_line(text)) is None


def _apt_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return tmp_path


def test_files_in_apt_order_and_only_list_and_sources(tmp_path: Path) -> None:
    apt = _apt_dir(
        tmp_path,
        {
            "sources.list": "",
            "sources.list.d/b.sources": "",
            "sources.list.d/a.list": "",
            "sources.list.d/c.list.disabled": "",
            "sources.list.d/d.sources.save": "",
        },
    )
    names = [p.relative_to(apt).as_posix() for p in apt_source_files(apt)]
    assert names == ["sources.list", "sources.list.d/a.list", "sources.list.d/b.sources"]


def test_debian_mirror_reads_dir_and_sources_list_wins(tmp_path: Path) -> None:
    apt = _apt_dir(
        tmp_path,
        {
            "sources.list": "deb http://first.example/debian bookworm main\n",
            "sources.list.d/debian.sources": DEB822,
        },
    )
    assert debian_mirror(apt, environ={}) == "http://first.example/debian"


def test_debian_mirror_from_deb822_only(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path, {"sources.list.d/debian.sources": DEB822})
    assert debian_mirror(apt, environ={}) == "http://mirror.example/debian"


def test_env_override_wins(tmp_path: Path) -> None:
    apt = _apt_dir(tmp_path, {"sources.list.d/debian.sources": DEB822})
    env = {ENV_VAR: "http://override.example/debian/"}
    assert debian_mirror(apt, environ=env) == "http://override.example/debian"


def test_no_mirror_is_a_config_error_naming_the_override(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=ENV_VAR):
        debian_mirror(tmp_path, environ={})
