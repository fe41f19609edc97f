"""Gold aggregates over silver readings and alerts. Pure DataFrame -> DataFrame.

Each function works the same on a batch frame and on a stream (the streaming job adds the
watermark before calling it). Window columns are flattened to ``window_start``/``window_end``;
measure columns are named ``<measure>_<metric>`` (DESIGN.md "Tables").
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

METRICS: tuple[str, ...] = ("temperature", "humidity", "pressure")
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

SENSOR_STATS_KEYS: tuple[str, ...] = ("sensor_id", "window_start")
LOCATION_STATS_KEYS: tuple[str, ...] = ("location", "window_start")
ALERT_COUNTS_KEYS: tuple[str, ...] = ("window_start", "alert_type", "severity")


def _flatten(window: str = "window") -> list[Column]:
    return [F.col(f"{window}.start").alias("window_start"),
            F.col(f"{window}.end").alias("window_end")]


def _metric_measures(measures: tuple[str, ...]) -> list[Column]:
    fns = {"avg": F.avg, "min": F.min, "max": F.max, "stddev": F.stddev_samp}
    return [fns[m](c).alias(f"{m}_{c}") for c in METRICS for m in measures]


def sensor_stats(
    readings: DataFrame, *, window: str, slide: str | None = None, percentile_accuracy: int
) -> DataFrame:
    """Per sensor and event-time window (tumbling, or sliding when ``slide`` is given).

    Columns: sensor_id, location, window_start, window_end, readings, avg/min/max/stddev of
    each metric (sample stddev), p50/p95/p99 of temperature. Percentiles are Spark's
    ``percentile_approx``: the returned value's rank is within ``readings / accuracy`` of the
    exact rank (exact for windows with fewer readings than ``accuracy``).
    """
    w = F.window("event_time", window, slide) if slide else F.window("event_time", window)
    pct = F.percentile_approx(
        "temperature", [p for _, p in PERCENTILES], percentile_accuracy
    ).alias("_pct")
    agg = readings.groupBy(w.alias("window"), "sensor_id").agg(
        F.max("location").alias("location"),
        F.count(F.lit(1)).alias("readings"),
        *_metric_measures(("avg", "min", "max", "stddev")),
        pct,
    )
    return agg.select(
        "sensor_id", "location", *_flatten(), "readings",
        *[f"{m}_{c}" for c in METRICS for m in ("avg", "min", "max", "stddev")],
        *[F.col("_pct")[i].alias(f"{name}_temperature") for i, (name, _) in enumerate(PERCENTILES)],
    )


def location_stats(readings: DataFrame, *, window: str) -> DataFrame:
    """Per location and tumbling window: readings, distinct sensors, min/max/avg per metric."""
    agg = readings.groupBy(F.window("event_time", window).alias("window"), "location").agg(
        F.count(F.lit(1)).alias("readings"),
        # Exact distinct count: collect_set is a streaming-safe aggregate, countDistinct is not.
        F.size(F.collect_set("sensor_id")).alias("sensors"),
        *_metric_measures(("min", "max", "avg")),
    )
    return agg.select(
        "location", *_flatten(), "readings", "sensors",
        *[f"{m}_{c}" for c in METRICS for m in ("min", "max", "avg")],
    )


def alert_counts(alerts: DataFrame, *, window: str) -> DataFrame:
    """Per tumbling window of alert event time, alert type and severity: ``alerts`` (count)."""
    agg = alerts.groupBy(F.window("event_time", window).alias("window"), "alert_type",
                         "severity").agg(F.count(F.lit(1)).alias("alerts"))
    return agg.select(*_flatten(), "alert_type", "severity", "alerts")


def static_alert_rows(readings: DataFrame) -> DataFrame:
    """Silver readings -> one row per static alert (alert_type, severity, event_time).

    The fallback source of alert counts when gold/alerts is not produced.
    """
    return readings.where("is_alert").select(
        F.explode("alert_types").alias("alert_type"), "severity", "event_time"
    )


def latest_per_sensor(readings: DataFrame) -> DataFrame:
    """The latest reading of each sensor in ``readings`` (a micro-batch), by event time."""
    latest = F.max_by(
        F.struct("event_time", "location", "temperature", "humidity", "pressure"), "event_time"
    )
    return readings.groupBy("sensor_id").agg(latest.alias("r")).select(
        "sensor_id",
        F.col("r.location").alias("location"),
        F.col("r.event_time").alias("last_event_time"),
        F.col("r.temperature").alias("last_temperature"),
        F.col("r.humidity").alias("last_humidity"),
        F.col("r.pressure").alias("last_pressure"),
    )


def with_status(status: DataFrame, alerts: DataFrame | None, *, offline_after_s: int,
                open_alert_window_s: int) -> DataFrame:
    """Add ``status`` (ONLINE/OFFLINE) and ``open_alerts`` to one-row-per-sensor ``status``.

    Event time: a sensor is OFFLINE when its last reading is more than ``offline_after_s``
    older than the newest reading of the whole fleet. ``open_alerts`` counts the sensor's alerts
    whose event time is within ``open_alert_window_s`` of the fleet's newest reading.
    """
    fleet_now = status.agg(F.max("last_event_time").alias("fleet_now"))
    df = status.crossJoin(F.broadcast(fleet_now))
    offline = F.col("last_event_time") < F.col("fleet_now") - F.expr(
        f"INTERVAL {offline_after_s} SECONDS")
    df = df.withColumn("status", F.when(offline, "OFFLINE").otherwise("ONLINE"))
    if alerts is None:
        df = df.withColumn("open_alerts", F.lit(0).cast("long"))
    else:
        horizon = F.col("fleet_now") - F.expr(f"INTERVAL {open_alert_window_s} SECONDS")
        recent = (
            alerts.crossJoin(F.broadcast(fleet_now)).where(F.col("event_time") >= horizon)
            .groupBy("sensor_id").agg(F.count(F.lit(1)).alias("open_alerts"))
        )
        df = df.join(recent, "sensor_id", "left").fillna({"open_alerts": 0})
    return df.drop("fleet_now")
