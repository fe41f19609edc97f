"""Every validation rule and reason code, on small batch frames (the same code runs on streams)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from bronze.schema import BRONZE_SCHEMA
from jobs.config import load_config
from silver.transform import dedup_batch, enrich, parse, quarantine_rows, valid_rows

CFG = load_config(env={})
GOOD = {"sensor_id": "SENSOR_001", "timestamp": "2024-01-10T14:30:00Z", "temperature": 22.5,
        "humidity": 65.0, "pressure": 1013.25, "location": "Building A - Floor 2"}
T0 = datetime(2024, 1, 10, 15, 0, tzinfo=UTC)


def _bronze(spark, values: list[str | None]):
    rows = [("k", v, "iot-sensors", 0, i, T0, T0, T0.date(), None, None)
            for i, v in enumerate(values)]
    return spark.createDataFrame(rows, BRONZE_SCHEMA)


def _reasons(spark, value: str | None) -> list[str]:
    (row,) = parse(_bronze(spark, [value]), cfg=CFG.validation).collect()
    return sorted(row.reasons)


def _with(**changes) -> str:
    record = {**GOOD, **changes}
    return json.dumps({k: v for k, v in record.items() if v is not _DROP})


_DROP = object()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (_with(), []),
        (_with(extra_field="x", nested={"a": [1, 2]}), []),
        (_with(timestamp="2024-01-10T16:30:00+02:00"), []),
        (_with(temperature=-50, humidity=0, pressure=1085), []),
        ('{"sensor_id": "S", "timestamp": "2024-01-10T14:30:00Z", "temperature": 2',
         ["MALFORMED_JSON"]),
        ("not json at all", ["MALFORMED_JSON"]),
        ("[1, 2, 3]", ["MALFORMED_JSON"]),
        ("42", ["MALFORMED_JSON"]),
        ("", ["MALFORMED_JSON"]),
        (None, ["MALFORMED_JSON"]),
        (_with(temperature=_DROP), ["MISSING_FIELD:temperature"]),
        (_with(location=_DROP), ["MISSING_FIELD:location"]),
        (_with(sensor_id=""), ["MISSING_FIELD:sensor_id"]),
        (_with(sensor_id="   "), ["MISSING_FIELD:sensor_id"]),
        (_with(humidity=None), ["MISSING_FIELD:humidity"]),
        ("{}", sorted(f"MISSING_FIELD:{f}" for f in GOOD)),
        (_with(temperature="hot"), ["BAD_TYPE:temperature"]),
        (_with(pressure=True), ["BAD_TYPE:pressure"]),
        (_with(humidity={"v": 1}), ["BAD_TYPE:humidity"]),
        (_with(temperature=50.01), ["OUT_OF_RANGE:temperature"]),
        (_with(humidity=-0.1), ["OUT_OF_RANGE:humidity"]),
        (_with(pressure=869.9), ["OUT_OF_RANGE:pressure"]),
        # NaN/Infinity are not JSON numbers (Python's json writes them anyway)
        (_with(temperature=float("nan")), ["BAD_TYPE:temperature"]),
        (_with(temperature=float("-inf")), ["BAD_TYPE:temperature"]),
        (_with(timestamp="yesterday"), ["BAD_TIMESTAMP"]),
        (_with(timestamp="2999-01-01T00:00:00Z"), ["BAD_TIMESTAMP"]),
        (_with(timestamp=_DROP, temperature="x", humidity=101),
         ["BAD_TYPE:temperature", "MISSING_FIELD:timestamp", "OUT_OF_RANGE:humidity"]),
        # found by fuzzing (tests/test_hostile_input.py)
        (_with(timestamp="-0001-01-01T00:00:00Z"), ["BAD_TIMESTAMP"]),
        (_with(timestamp="1899-12-31T23:59:59Z"), ["BAD_TIMESTAMP"]),
        (_with(sensor_id={"a": 1}), ["BAD_TYPE:sensor_id"]),
        (_with(sensor_id=42, location=["x"]), ["BAD_TYPE:location", "BAD_TYPE:sensor_id"]),
        (_with(temperature="22.5", timestamp=1704897000),
         ["BAD_TYPE:temperature", "BAD_TYPE:timestamp"]),
        (_with().replace('"', "'"), ["MALFORMED_JSON"]),
        (_with() + _with(), ["MALFORMED_JSON"]),
        (_with() + "]", ["MALFORMED_JSON"]),
        (_with() + "}", ["MALFORMED_JSON"]),
        ("\r\n\t" + _with() + "\n", []),
        (_with(sensor_id="\t\n\u200b"), ["MISSING_FIELD:sensor_id"]),
        # the JVM parser's edges (silver/jvm/ReadingJson.java): a repeated field counts by its
        # last value, as in from_json and Python's json; a key named like Spark's corrupt-record
        # column is just another field; a number beyond a double is not finite
        (_with()[:-1] + ', "temperature": 60}', ["OUT_OF_RANGE:temperature"]),
        ('{"temperature": 60, ' + _with()[1:], []),
        (_with(_corrupt_record="x"), []),
        (_with()[:-1] + ', "pressure": 1e400}', ["BAD_TYPE:pressure"]),
        (_with()[:-1] + ', "humidity": 1' + "0" * 300 + "}", ["OUT_OF_RANGE:humidity"]),
        (_with()[:-1] + ', "location": {"a": ["\\ud800"]}}', ["MALFORMED_JSON"]),
        (_with()[:-1] + ', "note": "\\udfff\\ud800"}', []),  # not a reading field: skipped
        ("\ufeff" + _with(), ["MALFORMED_JSON"]),
        (_with()[:-1] + ', "humidity": 065}', ["MALFORMED_JSON"]),
        (_with()[:-1] + " /* c */}", ["MALFORMED_JSON"]),
        (_with()[:-1] + ', "temperature": +Infinity}', ["BAD_TYPE:temperature"]),
    ],
)
def test_reason_codes(spark, value, expected) -> None:
    assert _reasons(spark, value) == expected


def test_reasons_keep_the_documented_order(spark) -> None:
    value = _with(timestamp=_DROP, temperature="x", humidity=101, sensor_id=7)
    (row,) = parse(_bronze(spark, [value]), cfg=CFG.validation).collect()
    assert row.reasons == ["BAD_TYPE:sensor_id", "MISSING_FIELD:timestamp",
                           "BAD_TYPE:temperature", "OUT_OF_RANGE:humidity"]


def test_every_record_lands_once(spark) -> None:
    values = [_with(), _with(temperature="x"), "garbage", _with(), _with(sensor_id="S2")]
    parsed = parse(_bronze(spark, values), cfg=CFG.validation)
    q = quarantine_rows(parsed).collect()
    v = valid_rows(parsed)
    kept = dedup_batch(v).collect()
    assert len(q) == 2
    assert {r.value for r in q} == {values[1], "garbage"}
    assert q[0].reasons and q[0].quarantined_at is not None
    # two identical readings of SENSOR_001 -> one kept, the first by offset
    assert sorted((r.sensor_id, r.offset) for r in kept) == [("S2", 4), ("SENSOR_001", 0)]
    assert len(q) + len(kept) + (v.count() - len(kept)) == len(values)


def test_enrich_joins_registry_and_derives_static_alerts(spark) -> None:
    values = [_with(temperature=41.0), _with(sensor_id="UNKNOWN", temperature=31.0),
              _with(temperature=20.0, humidity=85.0, timestamp="2024-01-10T14:31:00Z"),
              _with(temperature=-1.0, timestamp="2024-01-10T14:32:00Z")]
    registry = spark.createDataFrame(
        [("SENSOR_001", "Building A - Floor 2", "Building A", 2, "201", "North")],
        "sensor_id string, location string, building string, floor int, room string, zone string")
    parsed = parse(_bronze(spark, values), cfg=CFG.validation)
    rows = {(r.sensor_id, r.temperature): r for r in
            enrich(valid_rows(parsed), registry, alerts=CFG.alerts).collect()}
    hot = rows[("SENSOR_001", 41.0)]
    assert (hot.building, hot.floor, hot.zone) == ("Building A", 2, "North")
    assert (hot.is_alert, hot.severity, hot.alert_types) == (True, "CRITICAL", ["HIGH_TEMP"])
    # collect() gives naive datetimes in the process time zone, which conftest pins to UTC
    assert hot.event_time == datetime(2024, 1, 10, 14, 30, tzinfo=UTC).replace(tzinfo=None)
    assert (hot.event_date.isoformat(), hot.event_hour) == ("2024-01-10", 14)
    unknown = rows[("UNKNOWN", 31.0)]
    assert unknown.building is None and unknown.severity == "WARNING"
    humid = rows[("SENSOR_001", 20.0)]
    assert (humid.alert_types, humid.severity) == (["HIGH_HUMIDITY"], "WARNING")
    cold = rows[("SENSOR_001", -1.0)]
    assert (cold.alert_types, cold.severity) == (["LOW_TEMP"], "CRITICAL")
