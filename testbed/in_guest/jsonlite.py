"""json.dumps and json.loads with the json package's defaults, on its C accelerator alone.

`import json` costs ~0.15 s of a boot under TCG, most of it not JSON: json.decoder and
json.encoder import re (and re imports enum) for their pure-Python fallbacks and compile
patterns as they load. The agent and the helpers of a boot's first calls exchange JSON lines
and nothing else, so they use this: the same encoder and scanner json itself runs, started
with json.dumps' and json.loads' defaults (ensure_ascii, check_circular, allow_nan, the ", "
and ": " separators, NaN and Infinity read back). A malformed document raises what json raises
(json.JSONDecodeError, a ValueError: _json imports json.decoder for it, on that error only).
Without _json (another Python), json itself.
"""

try:
    import _json
except ImportError:  # pragma: no cover - CPython builds it; the fallback is json itself
    from json import dump, dumps, loads  # noqa: F401
else:
    _WHITESPACE = " \t\n\r"
    _CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}

    def _unknown(obj):  # json.JSONEncoder.default
        raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")

    class _Decoding:
        """What _json.make_scanner reads off a json.JSONDecoder() made with no arguments."""

        strict = True
        object_hook = None
        object_pairs_hook = None
        parse_float = float
        parse_int = int
        parse_constant = _CONSTANTS.__getitem__

    _scan = _json.make_scanner(_Decoding())

    def dumps(obj) -> str:
        # a fresh markers dict per call, as json's check_circular: a cycle raises ValueError
        encode = _json.make_encoder({}, _unknown, _json.encode_basestring_ascii, None, ": ", ", ", False, False, True)
        return "".join(encode(obj, 0))

    def dump(obj, fp) -> None:
        fp.write(dumps(obj))

    def loads(text):
        if isinstance(text, (bytes, bytearray)):  # UTF-8 only (json also detects UTF-16 and -32)
            text = text.decode("utf-8", "surrogatepass")
        elif not isinstance(text, str):
            raise TypeError(f"the JSON object must be str, bytes or bytearray, not {text.__class__.__name__}")
        if text.startswith("\ufeff"):
            _fail("Unexpected UTF-8 BOM (decode using utf-8-sig)", text, 0)
        try:
            obj, end = _scan(text, _past_whitespace(text, 0))
        except StopIteration as exc:
            _fail("Expecting value", text, exc.value)
        end = _past_whitespace(text, end)
        if end != len(text):
            _fail("Extra data", text, end)
        return obj

    def _past_whitespace(text, pos):
        return len(text) - len(text[pos:].lstrip(_WHITESPACE))

    def _fail(message, text, pos):
        from json import JSONDecodeError  # only now: an error is worth json's import

        raise JSONDecodeError(message, text, pos) from None
