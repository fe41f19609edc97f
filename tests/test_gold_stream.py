"""Silver -> gold through the streaming path, checked against a batch recomputation.

gold_aggregates keeps one partial state per sensor and 5-min bucket and merges the 10-min and
location windows from those buckets; the batch functions aggregate readings directly.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from checkpoints import forget_last_commit
from pyspark.sql import functions as F

from gold import aggregates as agg
from jobs.config import Config
from jobs.gold_job import AGGREGATES_QUERY, start_aggregates, start_alert_counts
from jobs.tables import (
    ALERT_COUNTS_5M,
    LOCATION_5M,
    SENSOR_STATUS,
    SILVER_READINGS,
    STATS_5M,
    STATS_10M,
)
from silver.schema import SILVER_SCHEMA

pytestmark = pytest.mark.timeout(600)

T0 = datetime(2024, 1, 10, 14, 0, tzinfo=UTC)
LOCATIONS = {"S1": "Building A - Floor 1", "S2": "Building A - Floor 1",
             "S3": "Building B - Floor 2"}


def _row(sensor: str, seconds: int, temperature: float, humidity: float = 50.0,
         location: str | None = None) -> dict:
    t = T0 + timedelta(seconds=seconds)
    alert = temperature > 30
    return {"sensor_id": sensor, "event_time": t, "temperature": temperature,
            "humidity": float(humidity), "pressure": 1000.0 + seconds / 100,
            "location": location or LOCATIONS[sensor],
            "event_date": t.date(), "event_hour": t.hour, "is_alert": alert,
            "severity": "WARNING" if alert else None,
            "alert_types": ["HIGH_TEMP"] if alert else [], "partition": 0, "offset": seconds}


def _batches() -> tuple[list[list[dict]], list[dict]]:
    """Silver appends, in order, and the rows that arrive later than the watermark.

    (sensor_id, event_time) is unique across all of them, as silver guarantees.
    """
    first = [_row(s, i * 20, 20 + (i * 7 % 11) / 3 + k, 40 + i % 9)
             for i in range(90) for k, s in enumerate(("S1", "S2", "S3"))
             if s != "S3" or i < 60]                          # 14:00-14:30, S3 until 14:20
    first.append(_row("S1", 125, 31.5))                       # a static alert
    # Out of order but within the watermark, which is at least 14:19:40 (10 min behind the
    # first batch's max event time) however Spark groups the appends into micro-batches.
    # S3 reports once from another location (greater by name) in a bucket it already filled
    # from its own: the whole bucket moves there, and Building B's 14:15 window, S3's alone,
    # is gone.
    second = [_row("S2", 1510, 25.0), _row("S3", 1325, 18.0), _row("S1", 2100, 22.0),
              _row("S2", 2110, 23.0), _row("S3", 1190, 19.0, location="Building C - Floor 1")]
    # Windows ending by 14:10 are closed whatever the grouping: these must be dropped.
    late = [_row("S1", 30, 35.0), _row("S3", 210, 10.5)]
    third = [*late, _row("S1", 2200, 24.0), _row("S2", 2205, 24.5)]   # S3 silent since 14:22
    return [first, second, third], late


def _gold(spark, cfg: Config, table: str):
    return spark.read.format("delta").load(str(cfg.paths.table(table)))


def _run(spark, cfg: Config) -> dict[str, list[dict]]:
    trigger = {"availableNow": True}
    queries = [*start_aggregates(spark, cfg, trigger=trigger),
               start_alert_counts(spark, cfg, trigger=trigger)]
    for q in queries:
        q.awaitTermination()
        assert q.exception() is None, f"{q.name}: {q.exception()}"
    return {q.name: q.recentProgress for q in queries}


def _rows(df, keys: tuple[str, ...]) -> dict[tuple, dict]:
    return {tuple(r[k] for k in keys): r.asDict() for r in df.collect()}


def _assert_same(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), f"{what}: windows differ"
    for key, w in want.items():
        g = got[key]
        for col, value in w.items():
            if isinstance(value, float) and isinstance(g[col], float):
                assert math.isclose(g[col], value, rel_tol=1e-9, abs_tol=1e-9), (what, key, col)
            else:
                assert g[col] == value, (what, key, col, g[col], value)


@pytest.fixture()
def gold_cfg(base_cfg: Config, tmp_path: Path) -> Config:
    # one silver file per micro-batch, so the watermark moves between the appends
    return base_cfg.with_overrides({"paths.data_dir": str(tmp_path / "data"),
                                    "streaming.max_files_per_trigger": 1,
                                    "gold.alert_counts_source": "silver"})


def test_gold_matches_batch_recomputation(spark, gold_cfg: Config) -> None:
    cfg = gold_cfg
    silver_path = str(cfg.paths.table(SILVER_READINGS))
    batches, late = _batches()
    for rows in batches:
        (spark.createDataFrame([tuple(r.get(f.name) for f in SILVER_SCHEMA.fields) for r in rows],
                               SILVER_SCHEMA)
         .coalesce(1).write.format("delta").mode("append").save(silver_path))
    progress = _run(spark, cfg)

    silver = spark.read.format("delta").load(silver_path)
    late_keys = [(r["sensor_id"], r["event_time"]) for r in late]
    on_time = silver.where(~F.struct("sensor_id", "event_time").isin(
        [F.struct(F.lit(s), F.lit(t)) for s, t in late_keys]))
    assert on_time.count() == silver.count() - len(late)

    acc = cfg.gold.percentile_accuracy
    checks = [
        (STATS_5M, agg.sensor_stats(on_time, window="5 minutes", percentile_accuracy=acc),
         agg.SENSOR_STATS_KEYS),
        (STATS_10M, agg.sensor_stats(on_time, window="10 minutes", slide="5 minutes",
                                     percentile_accuracy=acc), agg.SENSOR_STATS_KEYS),
        (LOCATION_5M, agg.location_stats(on_time, window="5 minutes"), agg.LOCATION_STATS_KEYS),
        # Spark pushes the is_alert filter below the watermark, so the alert-count stream's
        # watermark follows alert event times (13:52:05 here): the late reading's alert is on
        # time for it and counted.
        (ALERT_COUNTS_5M, agg.alert_counts(agg.static_alert_rows(silver), window="5 minutes"),
         agg.ALERT_COUNTS_KEYS),
    ]
    for table, expected, keys in checks:
        _assert_same(_rows(_gold(spark, cfg, table), keys), _rows(expected, keys), table)

    # S3's 14:15 bucket moved to Building C: Building B keeps no row of that window
    places = _rows(_gold(spark, cfg, LOCATION_5M), agg.LOCATION_STATS_KEYS)
    quarter = (T0 + timedelta(minutes=15)).replace(tzinfo=None)  # Spark returns naive UTC
    assert ("Building B - Floor 2", quarter) not in places
    assert places[("Building C - Floor 1", quarter)]["sensors"] == 1

    # an independent check of one window by hand: S1, 14:00-14:05
    s1 = [r for r in batches[0] if r["sensor_id"] == "S1" and r["event_time"] < T0 + timedelta(
        minutes=5)]
    temps = sorted(r["temperature"] for r in s1)
    win = _gold(spark, cfg, STATS_5M).where(
        "sensor_id = 'S1' AND window_start = TIMESTAMP'2024-01-10 14:00:00'").first()
    n = len(temps)
    mean = sum(temps) / n
    assert win.readings == n and win.min_temperature == temps[0]
    assert win.max_temperature == temps[-1] == 31.5
    assert math.isclose(win.avg_temperature, mean, rel_tol=1e-12)
    assert math.isclose(win.stddev_temperature,
                        math.sqrt(sum((t - mean) ** 2 for t in temps) / (n - 1)), rel_tol=1e-9)
    for name, p in agg.PERCENTILES:  # n <= k: the KLL sketch holds every value, nearest rank
        assert win[f"{name}_temperature"] == temps[max(0, math.ceil(p * n) - 1)]

    # late rows are excluded above and counted by the stateful operator
    dropped = sum(op.get("numRowsDroppedByWatermark", 0)
                  for p in progress[AGGREGATES_QUERY] for op in p["stateOperators"])
    assert dropped == len(late)

    status = _rows(_gold(spark, cfg, SENSOR_STATUS), ("sensor_id",))
    assert status[("S1",)]["last_event_time"] == (T0 + timedelta(seconds=2200)).replace(tzinfo=None)
    assert {k[0]: v["status"] for k, v in status.items()} == {
        "S1": "ONLINE", "S2": "ONLINE", "S3": "OFFLINE"}

    # replaying the last micro-batch of every gold query leaves gold unchanged
    tables = (STATS_5M, STATS_10M, LOCATION_5M, ALERT_COUNTS_5M, SENSOR_STATUS)
    def snapshot() -> dict[str, list[str]]:
        return {t: sorted(map(str, _gold(spark, cfg, t).drop("updated_at").collect()))
                for t in tables}

    before = snapshot()
    for name in progress:
        forget_last_commit(cfg.paths.checkpoint(name))
    _run(spark, cfg)
    assert snapshot() == before
