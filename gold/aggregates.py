"""Gold aggregates over silver readings and alerts. Pure DataFrame -> DataFrame.

Window columns are flattened to ``window_start``/``window_end``; measure columns are named
``<measure>_<metric>`` (DESIGN.md "Tables").

Two paths compute the windowed statistics, and they agree (floats within 1e-9 relative):

- the streaming path keeps one *partial state* per sensor and tumbling window
  (:func:`bucket_partials`: count, mean, M2 (sum of squared deviations), min and max per
  metric, and a KLL sketch of temperature), all of which merge: the sliding windows and the
  location windows are merged from those buckets (:func:`merge_partials`) instead of being
  aggregated from readings again;
- the batch path (:func:`sensor_stats`, :func:`location_stats`) aggregates readings directly,
  for the tests and the chaos harness to check the streaming result against.

Percentiles are quantiles of Spark's KLL sketch (``kll_sketch_agg_double``) with
``k = percentile_accuracy`` (:func:`sketch_k`): while a window holds at most ``k`` readings the
sketch keeps every value and a percentile is the exact nearest rank (the sorted value at index
``ceil(p * n) - 1``, as Spark's ``percentile_approx`` gives for fewer readings than its
accuracy). Beyond ``k`` readings the sketch compacts at random: the rank error is about
``2.3 / k**0.97`` of the readings (0.03 % for k = 10,000), and two computations of the same
window may differ within it.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from jobs.config import interval_seconds

METRICS: tuple[str, ...] = ("temperature", "humidity", "pressure")
PERCENTILES: tuple[tuple[str, float], ...] = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))

SENSOR_STATS_KEYS: tuple[str, ...] = ("sensor_id", "window_start")
LOCATION_STATS_KEYS: tuple[str, ...] = ("location", "window_start")
ALERT_COUNTS_KEYS: tuple[str, ...] = ("window_start", "alert_type", "severity")

SKETCH = "temperature_sketch"
# What gold/sensor_stats_5m keeps besides its documented measures, so that a later micro-batch
# (or a replay) can merge a bucket it does not see again into its sliding and location windows.
PARTIAL_COLUMNS: tuple[str, ...] = (*(f"m2_{m}" for m in METRICS), SKETCH)
SENSOR_STATS_COLUMNS: tuple[str, ...] = (
    "sensor_id", "location", "window_start", "window_end", "readings",
    *(f"{m}_{c}" for c in METRICS for m in ("avg", "min", "max", "stddev")),
    *(f"{name}_temperature" for name, _ in PERCENTILES),
)
LOCATION_STATS_COLUMNS: tuple[str, ...] = (
    "location", "window_start", "window_end", "readings", "sensors",
    *(f"{m}_{c}" for c in METRICS for m in ("min", "max", "avg")),
)

_SKETCH_K_RANGE = (8, 65_535)  # what kll_sketch_agg_double accepts


def sketch_k(percentile_accuracy: int) -> int:
    """The KLL ``k`` for ``gold.percentile_accuracy``: windows up to ``k`` readings are exact."""
    lo, hi = _SKETCH_K_RANGE
    return max(lo, min(hi, percentile_accuracy))


def check_window_grid(*, tumbling: str, sliding: str, slide: str) -> None:
    """Refuse sliding windows that are not made of whole tumbling buckets.

    The sliding windows are merged from the tumbling buckets, which needs both the window
    length and the slide to be multiples of the tumbling window (windows start at multiples of
    their slide from the epoch, so their edges then fall on bucket edges).
    """
    t, length, step = (interval_seconds(x) for x in (tumbling, sliding, slide))
    if length % t or step % t:
        raise ValueError(
            f"gold.sliding ({sliding}) and gold.slide ({slide}) must be multiples of "
            f"gold.tumbling ({tumbling}): the sliding windows are merged from tumbling buckets")


def _flatten(window: str = "window") -> list[Column]:
    return [F.col(f"{window}.start").alias("window_start"),
            F.col(f"{window}.end").alias("window_end")]


def _metric_measures(measures: tuple[str, ...]) -> list[Column]:
    fns = {"avg": F.avg, "min": F.min, "max": F.max, "stddev": F.stddev_samp}
    return [fns[m](c).alias(f"{m}_{c}") for c in METRICS for m in measures]


def _quantiles(sketch: Column, *, any_value: Column) -> Column:
    # An empty sketch (no temperature at all) has no quantiles; asking it raises.
    ranks = F.array(*[F.lit(p) for _, p in PERCENTILES])
    return F.when(any_value, F.kll_sketch_get_quantile_double(sketch, ranks))


def sensor_stats(
    readings: DataFrame, *, window: str, slide: str | None = None, percentile_accuracy: int
) -> DataFrame:
    """Per sensor and event-time window (tumbling, or sliding when ``slide`` is given).

    Columns: sensor_id, location (the greatest of the window's readings), window_start,
    window_end, readings, avg/min/max/stddev of each metric (sample stddev), p50/p95/p99 of
    temperature (KLL sketch quantiles, see the module docstring). The batch definition the
    streaming path is checked against.
    """
    w = F.window("event_time", window, slide) if slide else F.window("event_time", window)
    agg = readings.groupBy(w.alias("window"), "sensor_id").agg(
        F.max("location").alias("location"),
        F.count(F.lit(1)).alias("readings"),
        *_metric_measures(("avg", "min", "max", "stddev")),
        _quantiles(F.kll_sketch_agg_double("temperature", sketch_k(percentile_accuracy)),
                   any_value=F.count("temperature") > 0).alias("_pct"),
    )
    return agg.select(
        "sensor_id", "location", *_flatten(), "readings",
        *[f"{m}_{c}" for c in METRICS for m in ("avg", "min", "max", "stddev")],
        *[F.col("_pct")[i].alias(f"{name}_temperature") for i, (name, _) in enumerate(PERCENTILES)],
    )


def location_stats(readings: DataFrame, *, window: str) -> DataFrame:
    """Per location and tumbling window: readings, distinct sensors, min/max/avg per metric.

    A sensor's readings of one window count for one location: the greatest location among
    them, the one gold/sensor_stats_5m shows (a sensor that reports from two locations within
    a window is not split between them). Batch only (a window function); the streaming path
    merges the sensors' buckets instead (:func:`location_stats_from_buckets`).
    """
    w = F.window("event_time", window)
    attributed = readings.withColumn("window", w).withColumn(
        "location", F.max("location").over(Window.partitionBy("window", "sensor_id")))
    agg = attributed.groupBy("window", "location").agg(
        F.count(F.lit(1)).alias("readings"),
        # Exact distinct count, as an int like the streaming path's bucket count.
        F.size(F.collect_set("sensor_id")).alias("sensors"),
        *_metric_measures(("min", "max", "avg")),
    )
    return agg.select(*LOCATION_STATS_COLUMNS[:1], *_flatten(), *LOCATION_STATS_COLUMNS[3:])


# -- mergeable partial states (the streaming path) ----------------------------------------------


def bucket_partials(readings: DataFrame, *, window: str, sketch_k: int) -> DataFrame:
    """Per sensor and tumbling window: the mergeable partial state of its readings.

    Works the same on a stream (the job adds the watermark) and on a batch. Columns:
    sensor_id, window_start, window_end, location (greatest), locations (every location
    seen, sorted), readings, avg/min/max/m2 of each metric (m2 = sum of squared deviations from
    the mean), temperature_sketch (KLL, binary) and last (the latest reading: event_time,
    location, temperature, humidity, pressure).
    """
    measures: list[Column] = []
    for c in METRICS:
        measures += [F.avg(c).alias(f"avg_{c}"), F.min(c).alias(f"min_{c}"),
                     F.max(c).alias(f"max_{c}"),
                     # Welford's M2 as Spark keeps it for var_pop (= M2 / n), not a sum of
                     # squares: pressure is ~1000 hPa with a spread of hundredths.
                     (F.var_pop(c) * F.count(c)).alias(f"m2_{c}")]
    last = F.max_by(
        F.struct("event_time", "location", "temperature", "humidity", "pressure"), "event_time")
    agg = readings.groupBy(F.window("event_time", window).alias("window"), "sensor_id").agg(
        F.max("location").alias("location"),
        F.array_sort(F.collect_set("location")).alias("locations"),
        F.count(F.lit(1)).alias("readings"),
        *measures,
        F.kll_sketch_agg_double("temperature", sketch_k).alias(SKETCH),
        last.alias("last"),
    )
    return agg.select("sensor_id", *_flatten(), "location", "locations", "readings",
                      *[f"{m}_{c}" for c in METRICS for m in ("avg", "min", "max", "m2")],
                      SKETCH, "last")


def _chan(a: Column, b: Column) -> Column:
    """Two partial states combined: Chan, Golub and LeVeque's update of (n, mean, M2)."""
    n = a["n"] + b["n"]
    fields = [n.alias("n")]
    for c in METRICS:
        delta = b[f"avg_{c}"] - a[f"avg_{c}"]
        fields += [
            (a[f"avg_{c}"] + delta * b["n"] / n).alias(f"avg_{c}"),
            (a[f"m2_{c}"] + b[f"m2_{c}"] + delta * delta * a["n"] * b["n"] / n).alias(f"m2_{c}"),
        ]
    return F.struct(*fields)


def merge_partials(
    partials: DataFrame, *, by: list[str | Column], sketch: bool = True
) -> DataFrame:
    """Partial states merged per ``by``: the partial state of the union of their readings.

    Columns: ``by``, location (greatest, unless grouped by), readings, sensors (partial rows
    merged), avg/min/max/m2 of each metric, temperature_sketch (unless ``sketch`` is false,
    a merge costs most for it). Means and M2 are folded
    pairwise in the order of (window_start, sensor_id), so the result does not depend on how
    rows reach the group (a replay writes the same bits).
    """
    state = F.array_sort(F.collect_list(F.struct(
        "window_start", "sensor_id", F.col("readings").cast("double").alias("n"),
        *[F.col(f"{m}_{c}") for c in METRICS for m in ("avg", "m2")])))
    mins_maxs = [*[F.min(f"min_{c}").alias(f"min_{c}") for c in METRICS],
                 *[F.max(f"max_{c}").alias(f"max_{c}") for c in METRICS]]
    location = [] if "location" in by else [F.max("location").alias("location")]
    merged = partials.groupBy(*by).agg(
        *location,
        F.sum("readings").alias("readings"),
        F.count(F.lit(1)).alias("sensors"),
        *mins_maxs,
        state.alias("_state"),
        *([F.kll_merge_agg_double(SKETCH).alias(SKETCH)] if sketch else []),
    )
    first = F.col("_state")[0]
    start = F.struct(first["n"].alias("n"),
                     *[first[f"{m}_{c}"].alias(f"{m}_{c}") for c in METRICS for m in ("avg", "m2")])
    folded = F.aggregate(F.slice("_state", 2, F.size("_state")), start, _chan)
    return merged.withColumn("_state", folded).select(
        *[c for c in merged.columns if c not in ("_state", SKETCH)],
        *[F.col("_state")[f"{m}_{c}"].alias(f"{m}_{c}") for c in METRICS for m in ("avg", "m2")],
        *([SKETCH] if sketch else []),
    )


def finish_sensor_stats(partials: DataFrame, *, keep_partials: bool = False) -> DataFrame:
    """Partial states (one per sensor and window) -> the sensor_stats columns.

    Sample stddev = sqrt(M2 / (n - 1)), null for a single reading (as ``stddev_samp``).
    ``keep_partials`` adds m2_<metric> and temperature_sketch (gold/sensor_stats_5m keeps them).
    """
    n = F.col("readings")
    stddev = {c: F.when(n > 1, F.sqrt(F.col(f"m2_{c}") / (n - 1))) for c in METRICS}
    df = partials.withColumn(
        "_pct", _quantiles(F.col(SKETCH), any_value=F.col("min_temperature").isNotNull()))
    return df.select(
        *SENSOR_STATS_COLUMNS[:5],
        *[(stddev[c] if m == "stddev" else F.col(f"{m}_{c}")).alias(f"{m}_{c}")
          for c in METRICS for m in ("avg", "min", "max", "stddev")],
        *[F.col("_pct")[i].alias(f"{name}_temperature") for i, (name, _) in enumerate(PERCENTILES)],
        *(PARTIAL_COLUMNS if keep_partials else ()),
    )


def sliding_stats_from_buckets(
    buckets: DataFrame, touched: DataFrame, *, window: str, slide: str
) -> DataFrame:
    """The sensor_stats of the sliding windows in ``touched``, merged from tumbling buckets.

    ``buckets``: partial states per sensor and tumbling window (gold/sensor_stats_5m rows),
    holding every bucket with readings of each touched window; ``touched``: sensor_id,
    window_start of the sliding windows to compute (:func:`sliding_windows_of`). A bucket
    belongs to the sliding windows that contain its start: Spark's ``window`` over
    ``window_start`` (tumbling and sliding edges coincide, :func:`check_window_grid`).
    """
    placed = buckets.withColumn("_w", F.window("window_start", window, slide))
    keys = touched.select(F.col("sensor_id").alias("_ts"), F.col("window_start").alias("_tw"))
    placed = placed.join(
        keys, (F.col("sensor_id") == F.col("_ts")) & (F.col("_w.start") == F.col("_tw")),
        "left_semi")
    merged = merge_partials(placed, by=["sensor_id", "_w"])
    return finish_sensor_stats(merged.select("*", *_flatten("_w")).drop("_w"))


def sliding_windows_of(buckets: DataFrame, *, window: str, slide: str) -> DataFrame:
    """sensor_id, window_start of every sliding window that contains one of ``buckets``."""
    return buckets.select(
        "sensor_id", F.window("window_start", window, slide).start.alias("window_start")
    ).distinct()


def location_stats_from_buckets(buckets: DataFrame) -> DataFrame:
    """The location_stats of the tumbling windows of ``buckets``, merged from sensor buckets.

    ``buckets``: every sensor bucket of each (location, window) to compute; a bucket counts
    for its location (see :func:`location_stats`), so ``sensors`` is the number of buckets.
    """
    merged = merge_partials(buckets, by=["location", "window_start", "window_end"], sketch=False)
    return merged.withColumn("sensors", F.col("sensors").cast("int")).select(
        *LOCATION_STATS_COLUMNS)


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
                open_alert_window_s: int, lifecycle: bool = False) -> DataFrame:
    """Add ``status`` (ONLINE/OFFLINE) and ``open_alerts`` to one-row-per-sensor ``status``.

    Event time: a sensor is OFFLINE when its last reading is more than ``offline_after_s``
    older than the newest reading of the whole fleet. ``open_alerts``: with ``lifecycle`` (the
    cadence-aware profiles) the sensor's open episodes, one per (alert_type, metric) with an
    alert whose ``resolved_at`` is null; else (the seed) the sensor's alerts whose event time is
    within ``open_alert_window_s`` of the fleet's newest reading.
    """
    fleet_now = status.agg(F.max("last_event_time").alias("fleet_now"))
    df = status.crossJoin(F.broadcast(fleet_now))
    offline = F.col("last_event_time") < F.col("fleet_now") - F.expr(
        f"INTERVAL {offline_after_s} SECONDS")
    df = df.withColumn("status", F.when(offline, "OFFLINE").otherwise("ONLINE"))
    if alerts is None:
        df = df.withColumn("open_alerts", F.lit(0).cast("long"))
    elif lifecycle and "resolved_at" in alerts.columns:
        episodes = (
            alerts.where(F.col("resolved_at").isNull()).groupBy("sensor_id")
            .agg(F.count_distinct("alert_type", F.coalesce("metric", F.lit("")))
                 .alias("open_alerts"))
        )
        df = df.join(episodes, "sensor_id", "left").fillna({"open_alerts": 0})
    else:
        horizon = F.col("fleet_now") - F.expr(f"INTERVAL {open_alert_window_s} SECONDS")
        recent = (
            alerts.crossJoin(F.broadcast(fleet_now)).where(F.col("event_time") >= horizon)
            .groupBy("sensor_id").agg(F.count(F.lit(1)).alias("open_alerts"))
        )
        df = df.join(recent, "sensor_id", "left").fillna({"open_alerts": 0})
    return df.drop("fleet_now")
