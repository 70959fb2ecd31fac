"""jsonlite: json.dumps and json.loads on the C accelerator alone, the same text and values as
json's for every line the agent and its helpers exchange, the same errors for a bad one."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "testbed" / "in_guest"))
import jsonlite  # noqa: E402  (in-guest helpers: modules of their own directory)

VALUES = [
    None,
    True,
    0,
    -17,
    10**40,
    1.5,
    -0.0,
    1e300,
    float("inf"),
    float("-inf"),
    "",
    "plain",
    'quote " backslash \\ newline \n tab \t',
    "\x00\x1f control",
    "é ü 雪 \U0001f600 \ud800",
    [],
    {},
    [1, [2, [3, {"a": None}]]],
    {"id": 7, "result": {"ok": True, "lines": ["a", "b"], "next": 12}},
    {0: "int key", 2.5: "float key", True: "bool key", None: "none key"},
    (1, 2),
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_dumps_writes_what_json_writes(value):
    assert jsonlite.dumps(value) == json.dumps(value)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_loads_reads_what_json_reads(value):
    text = json.dumps(value)
    assert repr(jsonlite.loads(text)) == repr(json.loads(text))


def test_nan_round_trips_as_json_does():
    assert jsonlite.dumps(float("nan")) == "NaN"
    assert math.isnan(jsonlite.loads("NaN"))


@pytest.mark.parametrize("text", ['  {"a": 1}\n', b'{"a": 1}', bytearray(b"[1]"), "\t7\r\n"])
def test_loads_takes_surrounding_whitespace_and_bytes(text):
    assert jsonlite.loads(text) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    ["", " ", "[1,", "1 2", "\ufeff1", '{"a" 1}', "nul", '"\x01"', "[1] x", '{"a": }', "01"],
    ids=repr,
)
def test_a_bad_document_raises_what_json_raises(text):
    with pytest.raises(json.JSONDecodeError) as theirs:
        json.loads(text)
    with pytest.raises(json.JSONDecodeError) as ours:
        jsonlite.loads(text)
    assert (ours.value.msg, ours.value.pos) == (theirs.value.msg, theirs.value.pos)


def test_what_json_cannot_encode_raises_what_json_raises():
    with pytest.raises(TypeError, match="Object of type set is not JSON serializable"):
        jsonlite.dumps({1, 2})
    loop: list = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular reference detected"):
        jsonlite.dumps(loop)
    with pytest.raises(TypeError, match="must be str, bytes or bytearray, not int"):
        jsonlite.loads(1)


def test_dump_writes_one_document(tmp_path):
    with open(tmp_path / "out", "w") as f:
        jsonlite.dump({"a": [1]}, f)
    assert (tmp_path / "out").read_text() == '{"a": [1]}'
