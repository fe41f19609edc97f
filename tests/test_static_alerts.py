"""The static thresholds, three ways, held to one answer: silver's columns (is_alert, severity,
alert_types), the real-time query's alert rows (gold.alerts.static_alert_rows, Spark columns)
and the stateful rules' plain Python (gold.alert_rules.static_alerts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pyspark.sql import functions as F

from gold.alert_rules import Reading, static_alerts
from gold.alerts import published_early, static_alert_rows
from jobs.config import load_config
from silver.transform import static_alerts as silver_static

pytestmark = pytest.mark.spark

CFG = load_config(env={}).alerts
T0 = datetime(2024, 1, 10, 14, 0, tzinfo=UTC)
# Edges of every threshold (30/40, 10/0, 80/90), either side, and values in between.
TEMPS = [None, -5.0, 0.0, 0.5, 9.99, 10.0, 21.0, 30.0, 30.01, 40.0, 40.5]
HUMS = [None, 50.0, 80.0, 80.5, 90.0, 95.0]


def _readings() -> list[tuple]:
    out = []
    for i, temp in enumerate(TEMPS):
        for j, hum in enumerate(HUMS):
            t = T0 + timedelta(seconds=i * 100 + j, microseconds=123_456 * (j % 2))
            out.append((f"S{i}", t, temp, hum, 1000.0, f"loc-{i}"))
    return out


def test_realtime_rows_equal_the_python_rules(spark) -> None:
    rows = _readings()
    df = spark.createDataFrame(rows, "sensor_id string, event_time timestamp, temperature "
                                     "double, humidity double, pressure double, location string")
    got = {(r.alert_id, r.sensor_id, r.location, r.alert_type, r.severity,
            r.event_time.replace(tzinfo=UTC), r.metric, r.value, r.threshold, r.details)
           for r in static_alert_rows(df, cfg=CFG, detected_at=F.current_timestamp()).collect()}
    want = set()
    for sid, t, temp, hum, pres, loc in rows:
        for a in static_alerts(sid, Reading.at(t, temp, hum, pres, loc), CFG, detected_at=t):
            want.add((a.alert_id, a.sensor_id, a.location, a.alert_type, a.severity,
                      # the rules keep milliseconds: the id is of the reading's millisecond
                      a.event_time, a.metric, a.value, a.threshold, a.details))
    assert {w[0] for w in want} == {g[0] for g in got}
    by_id = {g[0]: g for g in got}
    for w in want:
        g = by_id[w[0]]
        assert g[1:5] == w[1:5] and g[6:] == w[6:], (g, w)
        assert abs(g[5] - w[5]) < timedelta(milliseconds=1)
    assert len(want) > 10


def test_silver_columns_agree_with_the_python_rules(spark) -> None:
    rows = _readings()
    df = spark.createDataFrame(rows, "sensor_id string, event_time timestamp, temperature "
                                     "double, humidity double, pressure double, location string")
    types, severity = silver_static(CFG)
    for r, (sid, t, temp, hum, pres, loc) in zip(
            df.select(types.alias("types"), severity.alias("severity")).collect(), rows,
            strict=True):
        alerts = static_alerts(sid, Reading.at(t, temp, hum, pres, loc), CFG, detected_at=t)
        assert sorted(r.types) == sorted(a.alert_type for a in alerts), (temp, hum)
        worst = "CRITICAL" if any(a.severity == "CRITICAL" for a in alerts) else (
            "WARNING" if alerts else None)
        assert r.severity == worst, (temp, hum)


def test_a_reading_is_fresh_within_the_watermark_of_its_event_time(spark) -> None:
    produced = datetime(2024, 1, 10, 14, 10, tzinfo=UTC)
    cases = [(produced, True), (produced - timedelta(minutes=10), True),
             (produced - timedelta(minutes=10, milliseconds=1), False),
             (produced + timedelta(hours=1), True)]
    df = spark.createDataFrame([(t, produced) for t, _ in cases], "e timestamp, p timestamp")
    got = [r.fresh for r in df.select(published_early(F.col("e"), F.col("p"), 600)
                                      .alias("fresh")).collect()]
    assert got == [fresh for _, fresh in cases]
