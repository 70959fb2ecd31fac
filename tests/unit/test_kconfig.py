"""Kconfig fragments: parsing, merging (later wins), rendering, and checking a final .config."""

from __future__ import annotations

from pathlib import Path

import pytest

from testbed.errors import ConfigError
from testbed.kernel import kconfig
from testbed.kernel.configsets import CONFIG_SETS, fragment_paths, load_config_set
from testbed.kernel.kconfig import Option, merge, parse_dotconfig, parse_fragment, verify


def test_parses_values_comments_and_not_set():
    opts = parse_fragment(
        "# a comment\n"
        "\n"
        "CONFIG_A=y\n"
        "CONFIG_B=m\n"
        "CONFIG_C=n\n"
        "# CONFIG_D is not set\n"
        'CONFIG_E="-testbed"\n'
        "CONFIG_F=8\n"
        "CONFIG_G=0x1000\n"
        "CONFIG_H=-1\n"
        "   CONFIG_I=y   \n",
        "frag",
    )
    assert [(o.name, o.value) for o in opts] == [
        ("CONFIG_A", "y"),
        ("CONFIG_B", "m"),
        ("CONFIG_C", "n"),
        ("CONFIG_D", "n"),
        ("CONFIG_E", '"-testbed"'),
        ("CONFIG_F", "8"),
        ("CONFIG_G", "0x1000"),
        ("CONFIG_H", "-1"),
        ("CONFIG_I", "y"),
    ]
    assert opts[0].origin == "frag:3"
    assert opts[0].symbol == "A"


def test_lines_render_as_dotconfig():
    assert Option("CONFIG_X", "n", "f:1").line() == "# CONFIG_X is not set"
    assert Option("CONFIG_X", '"s"', "f:1").line() == 'CONFIG_X="s"'


@pytest.mark.parametrize(
    "line, needle",
    [
        ("CONFIG_A", "cannot parse"),
        ("A=y", "cannot parse"),
        ("CONFIG_A=yes", "bad value"),
        ("CONFIG_A=", "bad value"),
        ('CONFIG_A="unterminated', "bad value"),
        ('CONFIG_A="a"b"', "stray quote"),
        ("CONFIG_A y", "cannot parse"),
        ("CONFIG-A=y", "cannot parse"),
    ],
)
def test_malformed_lines_name_file_and_line(line, needle):
    with pytest.raises(ConfigError) as err:
        parse_fragment(f"# header\nCONFIG_OK=y\n{line}\n", "kernel-configs/x.config")
    assert "kernel-configs/x.config:3" in str(err.value)
    assert needle in str(err.value)


def test_escaped_quote_in_string_is_fine():
    (opt,) = parse_fragment('CONFIG_CMDLINE="a \\"b\\""\n', "f")
    assert opt.value == '"a \\"b\\""'


def test_duplicate_in_one_fragment_same_value_is_harmless():
    opts = parse_fragment("CONFIG_A=y\nCONFIG_B=y\nCONFIG_A=y\n", "f")
    assert [o.name for o in opts] == ["CONFIG_A", "CONFIG_B"]


def test_contradicting_duplicate_in_one_fragment_is_an_error():
    with pytest.raises(ConfigError) as err:
        parse_fragment("CONFIG_A=y\n# CONFIG_A is not set\n", "f")
    assert "f:2" in str(err.value) and "f:1" in str(err.value)


def test_later_fragment_overrides_in_place():
    base = parse_fragment('CONFIG_A=y\nCONFIG_B=y\nCONFIG_C="x"\n', "base")
    debug = parse_fragment("CONFIG_B=n\nCONFIG_D=y\nCONFIG_A=y\n", "debug")
    merged = merge([base, debug])
    assert [(o.name, o.value) for o in merged.options] == [
        ("CONFIG_A", "y"),
        ("CONFIG_B", "n"),
        ("CONFIG_C", '"x"'),
        ("CONFIG_D", "y"),
    ]
    assert merged.get("CONFIG_B").origin == "debug:1"
    # only real changes are overrides; repeating the same value is not
    assert [(o.earlier.origin, o.later.origin) for o in merged.overrides] == [("base:2", "debug:1")]
    assert merged.render() == ('CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C="x"\nCONFIG_D=y\n')


def test_parse_dotconfig():
    final = parse_dotconfig(
        "#\n# Automatically generated file; DO NOT EDIT.\n#\nCONFIG_A=y\n"
        '# CONFIG_B is not set\nCONFIG_S="-testbed"\nCONFIG_N=8\n\n# Section\n'
    )
    assert final == {"CONFIG_A": "y", "CONFIG_B": "n", "CONFIG_S": '"-testbed"', "CONFIG_N": "8"}


def test_verify_reports_every_dropped_option():
    merged = merge(
        [
            parse_fragment(
                "CONFIG_KEPT=y\nCONFIG_DROPPED=y\nCONFIG_WRONG=y\nCONFIG_OFF=n\nCONFIG_ABSENT_OFF=n\n"
                'CONFIG_ON_BUT_N=n\nCONFIG_STR="-testbed"\nCONFIG_BADSTR="a"\nCONFIG_NUM=8\n'
                "CONFIG_HEX=0x10\nCONFIG_BADNUM=4\nCONFIG_MOD=m\n",
                "f",
            )
        ]
    )
    final = parse_dotconfig(
        "CONFIG_KEPT=y\n# CONFIG_DROPPED is not set\nCONFIG_WRONG=m\n# CONFIG_OFF is not set\n"
        'CONFIG_ON_BUT_N=y\nCONFIG_STR="-testbed"\nCONFIG_BADSTR="b"\nCONFIG_NUM=8\n'
        "CONFIG_HEX=0x0010\nCONFIG_BADNUM=2\nCONFIG_MOD=y\n"
    )
    bad = verify(merged, final)
    assert [(m.wanted.name, m.actual) for m in bad] == [
        ("CONFIG_DROPPED", "n"),
        ("CONFIG_WRONG", "m"),
        ("CONFIG_ON_BUT_N", "y"),
        ("CONFIG_BADSTR", '"b"'),
        ("CONFIG_BADNUM", "2"),
        ("CONFIG_MOD", "y"),
    ]
    assert "CONFIG_DROPPED=y (from f:2) is not set" in bad[0].describe()
    assert "is =m" in bad[1].describe()


def test_verify_absent_option_is_dropped():
    merged = merge([parse_fragment("CONFIG_GONE=y\n", "f")])
    (bad,) = verify(merged, {})
    assert bad.actual is None and "not set" in bad.describe()


def test_load_fragment_missing_file(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        kconfig.load_fragment(tmp_path / "nope.config")


# the fragments shipped in kernel-configs/


def test_shipped_config_sets_parse():
    for name in CONFIG_SETS:
        merged = load_config_set(name)
        assert merged.get("CONFIG_LOCALVERSION").value == '"-testbed"'
    assert load_config_set("default").get("CONFIG_PCI_P2PDMA").value == "y"
    debug = load_config_set("debug")
    assert debug.get("CONFIG_KASAN").value == "y"
    assert debug.get("CONFIG_DEBUG_KMEMLEAK_AUTO_SCAN").value == "n"


def test_config_set_order_and_unknown_set(tmp_path: Path):
    (tmp_path / "base.config").write_text("CONFIG_A=y\nCONFIG_B=y\n")
    (tmp_path / "p2p.config").write_text("CONFIG_C=y\n")
    (tmp_path / "debug.config").write_text("CONFIG_B=n\n")
    (tmp_path / "selftest.config").write_text("CONFIG_D=y\n")
    assert [p.name for p in fragment_paths("debug", tmp_path)] == [
        "base.config", "p2p.config", "debug.config", "selftest.config"
    ]  # fmt: skip
    assert load_config_set("debug", tmp_path).get("CONFIG_B").value == "n"
    assert load_config_set("default", tmp_path).get("CONFIG_B").value == "y"
    with pytest.raises(ConfigError, match="allowed: coverage, debug, default"):
        load_config_set("fast", tmp_path)
