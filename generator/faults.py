"""Bad input: each fault kind turns one clean reading into a message with exactly one reason.

The reason codes are silver's (DESIGN.md "Validation", silver/transform.py ``parse``):
malformed_json -> MALFORMED_JSON, missing_field -> MISSING_FIELD:<f>, wrong_type ->
BAD_TYPE:<f>, out_of_range -> OUT_OF_RANGE:<f>, bad_timestamp -> BAD_TIMESTAMP. The other kinds
(duplicate, out_of_order, late_within_watermark, late_beyond_watermark, extra_fields) are valid
readings and expect no reason; duplicate, out_of_order and late_* are produced by the stream
(they are about when a message is sent, not what it says).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from datetime import datetime, timedelta

FAULT_KINDS: tuple[str, ...] = (
    "malformed_json", "missing_field", "wrong_type", "out_of_range", "bad_timestamp",
    "duplicate", "out_of_order", "late_within_watermark", "late_beyond_watermark",
    "extra_fields",
)
# Kinds that change the message body; the rest change when a message is sent.
CONTENT_FAULTS: frozenset[str] = frozenset(
    {"malformed_json", "missing_field", "wrong_type", "out_of_range", "bad_timestamp",
     "extra_fields"}
)
VALID_FAULTS: frozenset[str] = frozenset(
    {"duplicate", "out_of_order", "late_within_watermark", "late_beyond_watermark",
     "extra_fields"}
)
READING_FIELDS: tuple[str, ...] = (
    "sensor_id", "timestamp", "temperature", "humidity", "pressure", "location",
)
NUMERIC_FIELDS: tuple[str, ...] = ("temperature", "humidity", "pressure")

# Strings that no JSON reader nor Spark's cast turns into a number ("NaN"/"Infinity" would be).
_WORDS = ("hot", "cold", "n/a", "high", "error", "unknown", "--", "twenty")
_BAD_TIMESTAMPS = (
    "not-a-timestamp", "2024-13-45T99:61:00Z", "yesterday at noon", "31/02/2024 25:61",
    "T::Z", "12:30 PM", "2024-02-30T10:00:00ZZ", "",
)
_EXTRA_FIELDS: tuple[tuple[str, object], ...] = (
    ("firmware", "v2.3.1"), ("battery", 87), ("rssi", -61), ("unit", "C"),
    ("calibrated", True), ("seq", 1024), ("gateway", "gw-07"),
)
# Far-future timestamps: this far past the reading's event time, so they stay more than a day
# ahead of any processing time for replayed data from the 1930s onwards.
_FUTURE_DAYS = (36_500, 40_000)


def apply_fault(
    kind: str,
    fields: Mapping[str, object],
    event_time: datetime,
    rng: random.Random,
    ranges: Mapping[str, tuple[float, float]],
) -> tuple[str, list[str]]:
    """The faulty JSON text for one reading and the reasons silver must give it."""
    body = dict(fields)
    if kind == "malformed_json":
        return _malformed(body, rng), ["MALFORMED_JSON"]
    if kind == "missing_field":
        name = rng.choice(READING_FIELDS)
        del body[name]
        return _dumps(body), [f"MISSING_FIELD:{name}"]
    if kind == "wrong_type":
        name = rng.choice(NUMERIC_FIELDS)
        value = body[name]
        body[name] = rng.choice((rng.choice(_WORDS), True, False, [value], {"value": value}))
        return _dumps(body), [f"BAD_TYPE:{name}"]
    if kind == "out_of_range":
        name = rng.choice(NUMERIC_FIELDS)
        low, high = ranges[name]
        margin = rng.uniform(5.0, 50.0)
        body[name] = round(high + margin if rng.random() < 0.5 else low - margin, 2)
        return _dumps(body), [f"OUT_OF_RANGE:{name}"]
    if kind == "bad_timestamp":
        if rng.random() < 0.5:
            body["timestamp"] = rng.choice(_BAD_TIMESTAMPS[:-1])
        else:
            future = event_time + timedelta(days=rng.randint(*_FUTURE_DAYS))
            body["timestamp"] = future.strftime("%Y-%m-%dT%H:%M:%S.") + \
                f"{future.microsecond // 1000:03d}Z"
        return _dumps(body), ["BAD_TIMESTAMP"]
    if kind == "extra_fields":
        for name, value in rng.sample(_EXTRA_FIELDS, rng.randint(1, 3)):
            body[name] = value
        return _dumps(body), []
    raise ValueError(f"{kind!r} is not a content fault")


def _dumps(body: Mapping[str, object]) -> str:
    return json.dumps(body, ensure_ascii=False)


def _malformed(body: dict[str, object], rng: random.Random) -> str:
    text = _dumps(body)
    style = rng.randrange(3)
    if style == 0:
        # cut short: a prefix of an object never closes it
        return text[: rng.randint(1, len(text) - 2)]
    if style == 1:
        # a comma lost between two members
        commas = [i for i, c in enumerate(text) if c == "," and text[i + 1 : i + 3] == ' "']
        i = rng.choice(commas)
        return text[:i] + text[i + 1 :]
    # not JSON at all: what a misconfigured device prints
    return (
        f"{body['sensor_id']} {body['timestamp']} T={body['temperature']} "
        f"H={body['humidity']} P={body['pressure']}"
    )
