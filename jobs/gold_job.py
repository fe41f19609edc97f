"""The gold queries: windowed aggregates, sensor status and alert counts from silver.

``gold_aggregates`` is one stateful query over the silver stream: a streaming aggregation per
sensor and tumbling window (``gold.tumbling``) keeps each bucket's mergeable partial state
(gold/aggregates.py ``bucket_partials``), in update mode, and its foreachBatch writes
everything those buckets feed, from the buckets the micro-batch changed:

1. gold/sensor_stats_5m: the changed buckets, MERGEd by (sensor_id, window_start), with their
   partial state in extra columns (``m2_<metric>``, ``temperature_sketch``);
2. gold/sensor_stats_10m: the sliding windows that hold a changed bucket, each merged from its
   buckets as gold/sensor_stats_5m holds them after step 1 (buckets no longer in this batch,
   nor in the query's state once past the watermark, are read back from there);
3. gold/location_stats_5m: the (location, window) pairs of the changed buckets, merged from
   every sensor bucket of that location and window; a pair left without sensors (its sensor
   moved) is deleted;
4. gold/sensor_status: rewritten whole from its previous version and the changed buckets'
   latest readings.

Every write is keyed and computed from the checkpointed state and the tables as the original
run left them, so a replayed micro-batch writes the same rows again. Rows later than the
watermark are dropped by Spark and counted in the query progress
(``numRowsDroppedByWatermark``), which the metrics listener records.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StructType

from gold import aggregates as agg
from gold.schema import ALERT_SCHEMA
from jobs.config import Config
from jobs.streaming import (
    checkpoint_query_id,
    ensure_table,
    idempotent_write,
    reset_if_first_batch_uncommitted,
    side_by_side,
    stoppable,
    table_exists,
)
from jobs.tables import (
    ALERT_COUNTS_5M,
    ALERTS,
    LOCATION_5M,
    SENSOR_STATUS,
    SILVER_READINGS,
    STATS_5M,
    STATS_10M,
)
from silver.schema import SILVER_SCHEMA

logger = logging.getLogger(__name__)

AGGREGATES_QUERY = "gold_aggregates"


def _silver_stream(spark: SparkSession, cfg: Config, *, watermark: bool = True) -> DataFrame:
    df = (
        spark.readStream.format("delta")
        .option("maxFilesPerTrigger", cfg.streaming.max_files_per_trigger)
        .load(str(cfg.paths.table(SILVER_READINGS)))
    )
    return df.withWatermark("event_time", cfg.streaming.watermark) if watermark else df


def _ts(column: str) -> F.Column:
    # Spark formats in the session zone (UTC), and reads the literal back in the same zone.
    return F.date_format(column, "yyyy-MM-dd HH:mm:ss.SSSSSS")


def merge_batch(
    batch: DataFrame, batch_id: int, *, path: Path, keys: tuple[str, ...],
    since: str | None = None, delete_if: str | None = None,
) -> None:
    """Upsert one micro-batch of aggregate rows, keyed by ``keys``.

    ``since`` (a SQL expression) bounds the target scan to windows starting at or after it:
    Delta skips files whose window_start stats are all older. Without it, the oldest window
    in the batch is the bound. A source row matching ``delete_if`` deletes its target row.
    """
    if since is None:
        lo = batch.agg(_ts(F.min("window_start"))).first()[0]
        if lo is None:
            return
        since = f"TIMESTAMP'{lo}'"
    condition = " AND ".join(f"t.{k} = s.{k}" for k in keys) + f" AND t.window_start >= {since}"
    merge = DeltaTable.forPath(batch.sparkSession, str(path)).alias("t").merge(
        batch.alias("s"), condition)
    if delete_if:
        merge = (merge.whenMatchedDelete(condition=delete_if)
                 .whenMatchedUpdateAll().whenNotMatchedInsertAll(condition=f"NOT ({delete_if})"))
    else:
        merge = merge.whenMatchedUpdateAll().whenNotMatchedInsertAll()
    merge.execute()
    logger.debug("batch %d merged into %s", batch_id, path.name)


def _start_merge(
    spark: SparkSession, cfg: Config, *, name: str, df: DataFrame, table: str,
    keys: tuple[str, ...], trigger: dict,
) -> StreamingQuery:
    path = cfg.paths.table(table)
    ensure_table(spark, path, df.schema)
    reset_if_first_batch_uncommitted(cfg.paths.checkpoint(name))

    def write(batch: DataFrame, batch_id: int) -> None:
        batch = batch.persist()
        try:
            merge_batch(batch, batch_id, path=path, keys=keys)
        finally:
            batch.unpersist()

    return (
        df.writeStream.queryName(name)
        .outputMode("update")
        .foreachBatch(stoppable(write))
        .option("checkpointLocation", str(cfg.paths.checkpoint(name)))
        .trigger(**trigger)
        .start()
    )


def _timed(name: str, fn: Callable[[], None], times: dict[str, float]) -> None:
    t = time.monotonic()
    fn()
    times[name] = time.monotonic() - t


def write_aggregates_batch(batch: DataFrame, batch_id: int, *, cfg: Config) -> None:
    """One micro-batch of changed sensor buckets -> the four tables they feed (module doc)."""
    spark, g = batch.sparkSession, cfg.gold
    times: dict[str, float] = {}
    t0 = time.monotonic()
    changed = batch.persist()
    try:
        lo, hi = changed.agg(_ts(F.min("window_start")), _ts(F.max("window_start"))).first()
        times["state"] = time.monotonic() - t0
        if lo is None:
            return
        lo_ts, hi_ts = f"TIMESTAMP'{lo}'", f"TIMESTAMP'{hi}'"
        stats_5m = cfg.paths.table(STATS_5M)
        _timed("5m", lambda: merge_batch(
            agg.finish_sensor_stats(changed, keep_partials=True), batch_id, path=stats_5m,
            keys=agg.SENSOR_STATS_KEYS, since=lo_ts), times)

        # Read after the MERGE: this batch's buckets and their neighbours, as committed.
        buckets = spark.read.format("delta").load(str(stats_5m))

        def sliding() -> None:
            span = f"INTERVAL {g.sliding}"
            neighbours = buckets.where(
                f"window_start > {lo_ts} - {span} AND window_start < {hi_ts} + {span}"
            ).join(F.broadcast(changed.select("sensor_id").distinct()), "sensor_id", "left_semi")
            touched = agg.sliding_windows_of(changed, window=g.sliding, slide=g.slide)
            merge_batch(
                agg.sliding_stats_from_buckets(neighbours, touched, window=g.sliding,
                                               slide=g.slide),
                batch_id, path=cfg.paths.table(STATS_10M), keys=agg.SENSOR_STATS_KEYS,
                since=f"{lo_ts} - {span}")

        def locations() -> None:
            # Every location a changed bucket counted for, before or now (its locations).
            places = changed.select(F.explode("locations").alias("location"), "window_start") \
                .distinct()
            in_place = buckets.where(f"window_start >= {lo_ts} AND window_start <= {hi_ts}") \
                .join(F.broadcast(places), ["location", "window_start"], "left_semi")
            located = places.join(agg.location_stats_from_buckets(in_place),
                                  ["location", "window_start"], "left")
            merge_batch(located, batch_id, path=cfg.paths.table(LOCATION_5M),
                        keys=agg.LOCATION_STATS_KEYS, since=lo_ts,
                        delete_if="s.readings IS NULL")

        def status() -> None:
            write_status_batch(changed.select("sensor_id", "last.*"), batch_id, cfg=cfg)

        side_by_side(spark, *(functools.partial(_timed, name, fn, times) for name, fn in
                              (("10m", sliding), ("location", locations), ("status", status))))
    finally:
        changed.unpersist()
        logger.debug("batch %d: %s (%.1f s)", batch_id,
                     ", ".join(f"{k} {v:.1f} s" for k, v in times.items()),
                     time.monotonic() - t0)


def _empty(spark: SparkSession, schema: StructType) -> DataFrame:
    return spark.createDataFrame([], schema)


def _add_missing_columns(spark: SparkSession, path: Path, schema: StructType) -> None:
    """Add the columns of ``schema`` that an existing table lacks (a table of an older layout).

    gold/sensor_stats_5m written by the three queries before gold_aggregates has no partial
    state columns. The new query's checkpoint is new: it re-reads silver from the start and
    rewrites every bucket, partial state included.
    """
    have = {f.name for f in DeltaTable.forPath(spark, str(path)).toDF().schema.fields}
    missing = [f for f in schema.fields if f.name not in have]
    if missing:
        columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
        logger.warning("%s: adding columns %s (filled as gold_aggregates rewrites each window)",
                       path, ", ".join(f.name for f in missing))
        spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")


def start_aggregates(spark: SparkSession, cfg: Config, *, trigger: dict) -> list[StreamingQuery]:
    """gold_aggregates: sensor_stats_5m, sensor_stats_10m, location_stats_5m, sensor_status."""
    g = cfg.gold
    agg.check_window_grid(tumbling=g.tumbling, sliding=g.sliding, slide=g.slide)
    partials = agg.bucket_partials(_silver_stream(spark, cfg), window=g.tumbling,
                                   sketch_k=agg.sketch_k(g.percentile_accuracy))

    empty = agg.bucket_partials(_empty(spark, SILVER_SCHEMA), window=g.tumbling, sketch_k=8)
    for table, df in (
        (STATS_5M, agg.finish_sensor_stats(empty, keep_partials=True)),
        (STATS_10M, agg.finish_sensor_stats(empty)),
        (LOCATION_5M, agg.location_stats_from_buckets(agg.finish_sensor_stats(
            empty, keep_partials=True))),
    ):
        path = cfg.paths.table(table)
        ensure_table(spark, path, df.schema)
        _add_missing_columns(spark, path, df.schema)
    checkpoint = cfg.paths.checkpoint(AGGREGATES_QUERY)
    reset_if_first_batch_uncommitted(checkpoint)
    query = (
        partials.writeStream.queryName(AGGREGATES_QUERY)
        .outputMode("update")
        .foreachBatch(stoppable(functools.partial(write_aggregates_batch, cfg=cfg)))
        .option("checkpointLocation", str(checkpoint))
        .trigger(**trigger)
        .start()
    )
    logger.info("gold aggregate query started: %s", query.name)
    return [query]


def start_alert_counts(spark: SparkSession, cfg: Config, *, trigger: dict) -> StreamingQuery:
    """gold/alert_counts_5m from gold/alerts (or silver's static alerts, by config)."""
    if cfg.gold.alert_counts_source == "alerts":
        path = cfg.paths.table(ALERTS)
        ensure_table(spark, path, ALERT_SCHEMA)
        alerts = (
            spark.readStream.format("delta").option("skipChangeCommits", "true").load(str(path))
            .withWatermark("event_time", cfg.streaming.watermark)
        )
    elif cfg.gold.alert_counts_source == "silver":
        alerts = agg.static_alert_rows(_silver_stream(spark, cfg))
    else:
        raise ValueError(f"gold.alert_counts_source must be alerts or silver, not "
                         f"{cfg.gold.alert_counts_source!r}")
    return _start_merge(
        spark, cfg, name="gold_alert_counts_5m",
        df=agg.alert_counts(alerts, window=cfg.gold.tumbling), table=ALERT_COUNTS_5M,
        keys=agg.ALERT_COUNTS_KEYS, trigger=trigger,
    )


def write_status_batch(batch: DataFrame, batch_id: int, *, cfg: Config) -> None:
    """Fold a batch's latest readings into gold/sensor_status and recompute status columns.

    ``batch``: readings (sensor_id, event_time, location, temperature, humidity, pressure);
    gold_aggregates passes the latest reading of each changed bucket, which is as good as all
    the batch's readings for the latest per sensor. The table is small (one row per sensor)
    and rewritten whole, deterministically from its previous version and the batch, in a
    commit named by gold_aggregates' checkpoint and the batch id, so a replay is skipped.
    """
    spark = batch.sparkSession
    path = cfg.paths.table(SENSOR_STATUS)
    latest = agg.latest_per_sensor(batch)
    if table_exists(spark, path):
        previous = spark.read.format("delta").load(str(path)).select(*latest.columns)
        latest = agg.latest_per_sensor(
            previous.union(latest).withColumnsRenamed({
                "last_event_time": "event_time", "last_temperature": "temperature",
                "last_humidity": "humidity", "last_pressure": "pressure"})
        )
    alerts_path = cfg.paths.table(ALERTS)
    alerts = (spark.read.format("delta").load(str(alerts_path))
              if table_exists(spark, alerts_path) else None)
    status = agg.with_status(
        latest, alerts, offline_after_s=cfg.alerts.offline.after_s,
        open_alert_window_s=cfg.gold.open_alert_window_s, lifecycle=cfg.alerts.adaptive,
    ).withColumn("updated_at", F.current_timestamp())
    app_id = f"gold-status-{checkpoint_query_id(cfg.paths.checkpoint(AGGREGATES_QUERY))}"
    idempotent_write(status, path, app_id=app_id, batch_id=batch_id, mode="overwrite")


def start_alert_dependents(
    spark: SparkSession, cfg: Config, *, trigger: dict
) -> list[StreamingQuery]:
    """The gold queries that read gold/alerts as a stream: they run after the alert query.

    (gold/sensor_status reads gold/alerts too, as a table, in gold_aggregates' batches.)
    """
    return [start_alert_counts(spark, cfg, trigger=trigger)]
