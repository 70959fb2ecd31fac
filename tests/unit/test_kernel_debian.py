"""Debian linux-source: mirror discovery from sample apt sources, the private apt setup."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.kernel import debian

ONE_LINE = """\
# the host's main list
deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://security.example/debian-security bookworm-security main
deb http://mirror.example/debian bookworm main contrib
deb http://second.example/debian bookworm main
"""

DEB822 = """\
Types: deb
# a comment inside a stanza
URIs: http://snapshot.example/archive/debian-security/20250520T000000Z
Suites: bookworm-security
Components: main

Types: deb deb-src
URIs: http://mirror822.example/debian/
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""

THIRD_PARTY = "deb https://vendor.example/apt cloud-sdk-bookworm main\n"


def _apt_dir(tmp_path: Path, main: str | None = None, parts: dict[str, str] | None = None) -> Path:
    apt = tmp_path / "apt"
    (apt / "sources.list.d").mkdir(parents=True)
    if main is not None:
        (apt / "sources.list").write_text(main)
    for name, text in (parts or {}).items():
        (apt / "sources.list.d" / name).write_text(text)
    return apt


def test_one_line_format_skips_security(tmp_path):
    apt = _apt_dir(tmp_path, ONE_LINE)
    assert debian.debian_mirror(apt, {}) == "http://mirror.example/debian"


def test_deb822_format_skips_security_and_trailing_slash(tmp_path):
    apt = _apt_dir(tmp_path, parts={"debian.sources": DEB822})
    assert debian.debian_mirror(apt, {}) == "http://mirror822.example/debian"


def test_third_party_and_disabled_files_are_ignored(tmp_path):
    apt = _apt_dir(
        tmp_path,
        parts={
            "a-vendor.list": THIRD_PARTY,
            "b-old.list.disabled": "deb http://disabled.example/debian bookworm main\n",
            "debian.sources": DEB822,
        },
    )
    assert debian.debian_mirror(apt, {}) == "http://mirror822.example/debian"


def test_sources_list_comes_before_parts(tmp_path):
    apt = _apt_dir(tmp_path, ONE_LINE, {"debian.sources": DEB822})
    assert debian.debian_mirror(apt, {}) == "http://mirror.example/debian"


def test_env_overrides_discovery(tmp_path):
    apt = _apt_dir(tmp_path, ONE_LINE)
    env = {"TESTBED_DEBIAN_MIRROR": "http://override.example/debian/"}
    assert debian.debian_mirror(apt, env) == "http://override.example/debian"


def test_no_debian_archive_is_a_config_error_naming_the_variable(tmp_path):
    apt = _apt_dir(tmp_path, parts={"vendor.list": THIRD_PARTY})
    with pytest.raises(ConfigError, match="TESTBED_DEBIAN_MIRROR"):
        debian.debian_mirror(apt, {})


def test_suites_default_and_override():
    assert debian.debian_suites({}) == ("sid", "trixie-backports")
    assert debian.debian_suites({"TESTBED_DEBIAN_SUITES": "trixie-backports"}) == ("trixie-backports",)


def test_private_sources_list_pins_the_keyring():
    text = debian.sources_list("http://mirror.example/debian", ("sid", "trixie-backports"))
    assert text.splitlines() == [
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian sid main",
        "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://mirror.example/debian trixie-backports main",
    ]


def test_private_apt_never_uses_host_state(tmp_path):
    apt = debian.PrivateApt(tmp_path / "apt")
    apt.prepare("http://mirror.example/debian", ("sid",))
    opts = dict(o.split("=", 1) for o in apt.options()[1::2])
    assert opts["Dir::State::status"] == "/dev/null"
    for key in ("Dir::Etc::SourceList", "Dir::Etc::SourceParts", "Dir::State::Lists", "Dir::Cache::archives"):
        assert opts[key].startswith(str(tmp_path)), key
    assert (tmp_path / "apt" / "sources.list").read_text().startswith("deb [signed-by=")
    assert not any((tmp_path / "apt" / "sources.list.d").iterdir())


def test_parse_control_takes_the_first_stanza():
    text = (
        "Package: linux-source-7.2\nVersion: 7.2.13-1\nDescription: Linux\n source\n"
        "SHA256: abc\n\nPackage: linux-source-7.2\nVersion: 7.2.10-1\n"
    )
    assert debian.parse_control(text) == {
        "Package": "linux-source-7.2",
        "Version": "7.2.13-1",
        "Description": "Linux",
        "SHA256": "abc",
    }


def test_pinned_source_needs_a_complete_tree(tmp_path):
    tree = tmp_path / "src" / "linux-source-7.2_7.2.13-1" / "linux-source-7.2"
    tree.mkdir(parents=True)
    (tree / "Makefile").write_text("")
    state = {"package": "linux-source-7.2", "version": "7.2.13-1", "sha256": "ab", "tree": str(tree)}
    (tmp_path / "linux-source-7.2.json").write_text(json.dumps(state))
    assert debian.pinned_source(tmp_path) is None  # extraction never finished
    (tree.parent / ".complete").touch()
    src = debian.pinned_source(tmp_path)
    assert src and src.identity == "debian:linux-source-7.2=7.2.13-1:sha256=ab"
