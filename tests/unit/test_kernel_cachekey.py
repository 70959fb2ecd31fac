"""The kernel cache key: stable for the same inputs, different when any input changes."""

from __future__ import annotations

import dataclasses

import pytest

from testbed.kernel.cachekey import KeyInputs, compiler_version

BASE = KeyInputs(
    source="debian:linux-source-7.2=7.2.13-1:sha256=00ff",
    patches="",
    fragment="CONFIG_A=y\n",
    compiler="gcc (Debian 12.2.0-14) 12.2.0",
    config_set="default",
)


def test_same_inputs_same_key():
    again = KeyInputs(**dataclasses.asdict(BASE))
    assert BASE.key() == again.key()
    assert len(BASE.key()) == 16 and int(BASE.key(), 16) >= 0


@pytest.mark.parametrize(
    "field, value",
    [
        ("source", "git:1234:diff=aa:untracked=bb"),
        ("patches", "ffee"),
        ("fragment", "CONFIG_A=y\nCONFIG_B=y\n"),
        ("compiler", "gcc (Debian 14.2.0-1) 14.2.0"),
        ("config_set", "debug"),
        ("base_fixes", "ab12"),
        ("coverage", "cd34"),
    ],
)
def test_each_input_changes_the_key(field, value):
    assert dataclasses.replace(BASE, **{field: value}).key() != BASE.key()


def test_fields_do_not_bleed_into_each_other():
    # "ab" + "c" must not hash like "a" + "bc"
    a = dataclasses.replace(BASE, patches="ab", config_set="c")
    b = dataclasses.replace(BASE, patches="a", config_set="bc")
    assert a.key() != b.key()


def test_compiler_version_first_line():
    assert compiler_version().startswith(("gcc", "cc"))
