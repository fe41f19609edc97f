"""Hostile wire-format input for the fuzz tests: hypothesis strategies and an independent oracle.

A message is ``(key, value)`` as a producer sends it: bytes or None each. ``expected_reasons``
models silver's rules (DESIGN.md "Validation") from the wire format alone, with Python's own
JSON reader and no Spark, so a disagreement with ``silver.transform.parse`` is a finding. Where
the oracle cannot know the answer (Spark reads more timestamp spellings than strict ISO-8601),
it says which reasons *may* appear instead of guessing.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from bronze.schema import NUMERIC_FIELDS, READING_FIELDS
from jobs.config import ValidationConfig

MALFORMED = "MALFORMED_JSON"
GOOD = {"sensor_id": "SENSOR_001", "timestamp": "2024-01-10T14:30:00Z", "temperature": 22.5,
        "humidity": 65.0, "pressure": 1013.25, "location": "Building A - Floor 2"}

# Characters that break naive code: NUL and other controls, bidi overrides (RTL), zero-width
# and format characters, a BOM, the replacement character, combining marks, emoji (outside the
# BMP, so a surrogate pair in JSON escapes), JSON's own syntax.
ODD_CHARS = (
    "\x00", "\x01", "\x1f", "\x7f", "\x85", "\xa0", "\u200b", "\u200e", "\u200f", "\u202e",
    "\u2066", "\u2028", "\u3000", "\ufeff", "\ufffd", "\u0301", "é", "ß", "İ", "\u05d0",
    "\u0627", "\U0001f600", "\U0001f468\u200d\U0001f469", "\U0010fffd", "\\", '"', "'", "{",
    "}", "[", "]", ",", ":", " ", "\t", "\n", "\r", "NaN",
)
# Byte sequences that are not UTF-8: a lone continuation byte, an overlong '/', an encoded
# surrogate (CESU-8), a 5-byte form, bytes that never occur.
INVALID_UTF8 = (b"\x80", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xff", b"\xfe",
                b"\xe2\x82")
# Timestamps Spark's cast may or may not read; the oracle leaves them open unless strict ISO.
ODD_TIMESTAMPS = (
    "-0001-01-01T00:00:00Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z",
    "+10000-01-01T00:00:00Z", "-2024-01-10T14:30:00Z", "1899-12-31T23:59:59Z",
    "1900-01-01T00:00:00Z", "2024", "2024-01-10", "2024-01-10 14:30", " 2024-01-10T14:30:00Z ",
    "2024-01-10T14:30:00.123456789Z", "2024-02-30T10:00:00Z", "2024-01-10T25:00:00Z",
    "2024-01-10T14:30:00+25:00", "1704897000", "yesterday", "T::Z", "", " ", "9999-12-31T23:59:59Z",
)
_STRICT_ISO = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?"
    r"(Z|[+-](0[0-9]|1[0-4]):[0-5][0-9])"
)
_BLANK_CATEGORIES = ("Cc", "Cf", "Zs", "Zl", "Zp")
# Generated times are valid up to PAST or too far ahead from FAR_FUTURE on: no wall clock.
PAST = datetime(2025, 1, 1, tzinfo=UTC)
FAR_FUTURE = datetime(2100, 1, 1, tzinfo=UTC)
MAX_DEPTH = 1000  # Jackson's default nesting limit (StreamReadConstraints), which Spark keeps


class _NonFinite:
    """What NaN, Infinity and -Infinity read as: not a JSON number."""


NON_FINITE = _NonFinite()


@dataclass(frozen=True)
class Expected:
    """Acceptable outcomes: any of ``alternatives``, each reasons ``must`` <= got <= must | may."""

    alternatives: tuple[tuple[frozenset[str], frozenset[str]], ...]

    def admits(self, reasons: set[str]) -> bool:
        return any(must <= reasons <= must | may for must, may in self.alternatives)


@dataclass
class _Rules:
    must: set[str] = field(default_factory=set)
    may: set[str] = field(default_factory=set)


def _exactly(*reasons: str) -> Expected:
    return Expected(((frozenset(reasons), frozenset()),))


def _walk(x: object) -> tuple[int, bool]:
    """(nesting depth, whether any string or key holds a UTF-16 surrogate), without recursion."""
    depth, surrogate = 0, False
    stack = [(x, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, str):
            surrogate = surrogate or any(0xD800 <= ord(c) <= 0xDFFF for c in item)
        elif isinstance(item, list | dict):
            depth = max(depth, level + 1)
            children = [*item.keys(), *item.values()] if isinstance(item, dict) else item
            stack.extend((c, level + 1) for c in children)
    return depth, surrogate


def _has_surrogate(x: object) -> bool:
    return _walk(x)[1]


def is_blank(text: str) -> bool:
    """Only whitespace, control or format characters: no usable identifier."""
    return all(unicodedata.category(c) in _BLANK_CATEGORIES for c in text)


def _timestamp(text: str, v: ValidationConfig, rules: _Rules) -> None:
    if not _STRICT_ISO.fullmatch(text):
        rules.may.add("BAD_TIMESTAMP")  # Spark reads more spellings; the invariants bound them
        return
    try:
        when = datetime.fromisoformat(text)
    except ValueError:  # Feb 30, hour 25, year 0
        rules.must.add("BAD_TIMESTAMP")
        return
    # Ahead of processing time by more than max_future is bad; no wall clock here: the
    # strategies write times up to 2024 or from 2100 on, clear of the moving edge.
    if when < datetime.fromisoformat(v.min_event_time) or when >= FAR_FUTURE:
        rules.must.add("BAD_TIMESTAMP")
    elif when > PAST:
        rules.may.add("BAD_TIMESTAMP")


def _number(name: str, x: object, v: ValidationConfig, rules: _Rules) -> None:
    if isinstance(x, bool) or not isinstance(x, int | float) or x is NON_FINITE:
        rules.must.add(f"BAD_TYPE:{name}")
        return
    try:
        number = float(x)
    except OverflowError:  # an integer beyond any double
        number = math.inf
    if not math.isfinite(number):
        rules.must.add(f"BAD_TYPE:{name}")
        return
    low, high = v.ranges()[name]
    if not low <= number <= high:
        rules.must.add(f"OUT_OF_RANGE:{name}")


def expected_reasons(value: bytes | None, v: ValidationConfig) -> Expected:
    """What silver must say about one message value (empty reasons: a valid reading)."""
    if value is None:
        return _exactly(MALFORMED)
    try:
        text = value.decode("utf-8")  # strict: RFC 8259 JSON text is UTF-8
    except UnicodeDecodeError:  # not JSON text at all
        return _exactly(MALFORMED)
    try:
        doc = json.loads(text, parse_constant=lambda _: NON_FINITE)
    except (ValueError, RecursionError):
        return _exactly(MALFORMED)
    if not isinstance(doc, dict) or _walk(doc)[0] > MAX_DEPTH:
        return _exactly(MALFORMED)
    rules = _Rules()
    for name in READING_FIELDS:
        x = doc.get(name)
        if x is None:
            rules.must.add(f"MISSING_FIELD:{name}")
        elif _has_surrogate(x):
            # A lone UTF-16 surrogate escape is JSON grammar but no Unicode text.
            return _exactly(MALFORMED)
        elif name in NUMERIC_FIELDS:
            _number(name, x, v, rules)
        elif not isinstance(x, str):
            rules.must.add(f"BAD_TYPE:{name}")
        elif name == "sensor_id" and is_blank(x):
            rules.must.add("MISSING_FIELD:sensor_id")
        elif name == "timestamp":
            _timestamp(x, v, rules)
    outcome = (frozenset(rules.must), frozenset(rules.may))
    if _has_surrogate(doc):
        # In a field silver skips: the parser need not look inside it.
        return Expected((outcome, (frozenset({MALFORMED}), frozenset())))
    return Expected((outcome,))


# --- strategies ------------------------------------------------------------------------------

odd_text = st.lists(
    st.sampled_from(ODD_CHARS) | st.characters(min_codepoint=0x20, max_codepoint=0x24F),
    max_size=12,
).map("".join)
lone_surrogate = st.tuples(odd_text, st.sampled_from(["\ud800", "\udfff", "\udc00"]),
                           odd_text).map("".join)
json_scalar = (st.none() | st.booleans() | st.integers(-(10**30), 10**30)
               | st.floats(allow_nan=False, allow_infinity=False) | odd_text)
json_any = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(odd_text, inner, max_size=3),
    max_leaves=8,
)


@dataclass(frozen=True)
class Deep:
    """A value nested ``depth`` levels (objects and arrays in turn), written out by ``dumps``."""

    depth: int

    def text(self) -> str:
        opens = "".join('{"a":' if i % 2 else "[" for i in range(self.depth))
        closes = "".join("}" if i % 2 else "]" for i in reversed(range(self.depth)))
        return f"{opens}1{closes}"


# Deep nesting either well inside or well beyond the parsers' limit (Jackson: 1000 levels,
# Python: its recursion limit); never at the edge, where the two differ.
deep = st.one_of(st.integers(1, 60), st.integers(1500, 3000)).map(Deep)
_DEEP = re.compile(r'"@@deep:([0-9]+)@@"')


def dumps(doc: object, *, ascii_only: bool = True) -> str:
    """json.dumps that also writes ``Deep`` values (too deep for json.dumps itself)."""
    def marker(o: object) -> str:
        if isinstance(o, Deep):
            return f"@@deep:{o.depth}@@"
        raise TypeError(type(o).__name__)

    text = json.dumps(doc, ensure_ascii=ascii_only, default=marker)
    return _DEEP.sub(lambda m: Deep(int(m.group(1))).text(), text)




def utc_times(low: datetime, high: datetime) -> st.SearchStrategy[datetime]:
    """Aware UTC datetimes in [low, high] to the microsecond."""
    return st.integers(round(low.timestamp() * 1e6), round(high.timestamp() * 1e6)).map(
        lambda us: datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us))


_iso_datetimes = utc_times(datetime(1900, 1, 2, tzinfo=UTC), datetime(2024, 12, 31, tzinfo=UTC))


@st.composite
def iso_timestamp(draw: st.DrawFn, when: st.SearchStrategy[datetime] = _iso_datetimes) -> str:
    dt = draw(when)
    minutes = draw(st.sampled_from([0, 0, 60, -300, 330, 840, -720]))
    zone = timedelta(minutes=minutes)
    local = dt + zone
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    digits = draw(st.sampled_from([0, 3, 6]))
    if digits:
        text += f".{local.microsecond:06d}"[: digits + 1]
    if minutes == 0 and draw(st.booleans()):
        return text + "Z"
    sign = "+" if minutes >= 0 else "-"
    return text + f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def _numbers(name: str) -> tuple[st.SearchStrategy[object], st.SearchStrategy[object]]:
    """(values in range, odd values) for a numeric field."""
    low, high = ValidationConfig().ranges()[name]
    inside = st.floats(low, high) | st.integers(math.ceil(low), math.floor(high))
    odd = st.one_of(
        st.floats(high, 1e308, exclude_min=True), st.floats(-1e308, low, exclude_max=True),
        st.integers(10**20, 10**300), st.just(1e-320),
        st.sampled_from([math.nan, math.inf, -math.inf, True, "22.5", "0x1p3", "22.5d", " 22.5 ",
                         "NaN", "Infinity"]),
    )
    return inside, odd


def _strings(name: str) -> tuple[st.SearchStrategy[object], st.SearchStrategy[object]]:
    """(good values, odd values) for a string field."""
    if name == "timestamp":
        return iso_timestamp(), st.one_of(
            iso_timestamp(utc_times(datetime(1000, 1, 1, tzinfo=UTC),
                                    datetime(1899, 12, 30, tzinfo=UTC))),
            iso_timestamp(utc_times(datetime(2100, 1, 1, tzinfo=UTC),
                                    datetime(9998, 12, 31, tzinfo=UTC))),
            st.sampled_from(ODD_TIMESTAMPS), odd_text,
        )
    good = odd_text.filter(lambda t: not is_blank(t))
    odd = st.one_of(odd_text, st.sampled_from(["", " ", "\t\n", "\u3000", "\x00", "\u200b"]))
    if name == "location":
        # up to just over 1 MB in one field
        odd = odd | st.integers(1, 1_100_000).map(lambda n: "x" * n)
    return st.one_of(st.just(GOOD[name]), good), odd


_MISSING = object()


@st.composite
def reading(draw: st.DrawFn) -> dict[str, object]:
    """A reading object: a few fields odd, missing, null or of another JSON type; extra fields.

    The other fields get varied good values, so that many readings are valid (and some collide
    on (sensor_id, timestamp), which silver must count as duplicates).
    """
    broken = draw(st.sets(st.sampled_from(READING_FIELDS), max_size=3))
    doc: dict[str, object] = {}
    for name in READING_FIELDS:
        good, bad = _FIELDS[name]
        value = draw(bad if name in broken else good)
        if value is not _MISSING:
            doc[name] = value
    for key, value in draw(_EXTRAS):
        doc[key] = value  # a repeated reading field: the last one written wins
    return doc


def _field_strategies(name: str) -> tuple[st.SearchStrategy[object], st.SearchStrategy[object]]:
    good, odd = _numbers(name) if name in NUMERIC_FIELDS else _strings(name)
    return (st.one_of(st.just(GOOD[name]), good),
            st.one_of(st.just(_MISSING), st.none(), odd, json_any, lone_surrogate, deep))


_FIELDS = {name: _field_strategies(name) for name in READING_FIELDS}
_EXTRAS = st.lists(st.tuples(
    odd_text | st.sampled_from(["Temperature", "sensor_id ", "_corrupt_record", "value",
                                "reasons", "", "temperature"]),
    json_any | deep,
), max_size=3)


def _encode(text: str) -> bytes:
    # Raw lone surrogates cannot be UTF-8: written as CESU-8 they are invalid bytes on the wire.
    return text.encode("utf-8", "surrogatepass")


@st.composite
def message_value(draw: st.DrawFn) -> bytes | None:
    """One Kafka message value: a reading framed well or badly, or no JSON at all."""
    kind = draw(st.sampled_from([
        "plain", "whitespace", "trailing", "concatenated", "array", "scalar", "truncated",
        "single_quotes", "invalid_utf8", "bom", "random_bytes", "random_text", "empty", "null",
        "nan_token",
    ]) | st.just("plain"))
    if kind == "empty":
        return b""
    if kind == "null":
        return None
    if kind == "random_bytes":
        return draw(st.binary(max_size=64))
    if kind == "random_text":
        return _encode(draw(odd_text))
    if kind == "scalar":
        return _encode(dumps(draw(json_scalar)))
    doc = draw(reading())
    text = dumps(doc, ascii_only=draw(st.booleans()))
    if kind == "whitespace":
        return _encode(draw(st.sampled_from([" ", "\n", "\t", "\r\n"])) + text
                       + draw(st.sampled_from(["", "\n", " \t "])))
    if kind == "trailing":
        return _encode(text + draw(st.sampled_from(
            ["x", " junk", "]", "}", "]}", "}]", ",", "\x00", "] {}", ", {}", "\n{", "//"])))
    if kind == "concatenated":
        return _encode(text + draw(st.sampled_from(["", "\n", ","])) + dumps(GOOD))
    if kind == "array":
        return _encode(f"[{text}]")
    if kind == "truncated":
        return _encode(text[: draw(st.integers(0, max(0, len(text) - 1)))])
    if kind == "single_quotes":
        return _encode(text.replace('"', "'"))
    if kind == "bom":
        return b"\xef\xbb\xbf" + _encode(text)
    if kind == "nan_token":
        return _encode(dumps({**doc, draw(st.sampled_from(NUMERIC_FIELDS)): math.nan}))
    if kind == "invalid_utf8":
        raw = _encode(text)
        at = draw(st.integers(0, len(raw)))
        return raw[:at] + draw(st.sampled_from(INVALID_UTF8)) + raw[at:]
    return _encode(text)


message_key = st.one_of(st.none(), st.just(b"SENSOR_001"), st.binary(max_size=16),
                        st.sampled_from(INVALID_UTF8), st.just(b""))
message = st.tuples(message_key, message_value())
