"""The gold queries: windowed aggregates, alert counts and sensor status from silver.

Windowed aggregates run in update mode (open windows are visible while they fill) and are
written by an idempotent MERGE keyed by window and key in foreachBatch: a replayed micro-batch
recomputes the same rows from the checkpointed state and MERGE writes the same values again.
Rows later than the watermark are dropped by Spark and counted in the query progress
(``numRowsDroppedByWatermark``), which the metrics listener records.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from gold import aggregates as agg
from gold.schema import ALERT_SCHEMA
from jobs.config import Config
from jobs.streaming import (
    checkpoint_query_id,
    ensure_table,
    reset_if_first_batch_uncommitted,
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

logger = logging.getLogger(__name__)


def _silver_stream(spark: SparkSession, cfg: Config, *, watermark: bool = True) -> DataFrame:
    df = (
        spark.readStream.format("delta")
        .option("maxFilesPerTrigger", cfg.streaming.max_files_per_trigger)
        .load(str(cfg.paths.table(SILVER_READINGS)))
    )
    return df.withWatermark("event_time", cfg.streaming.watermark) if watermark else df


def merge_batch(batch: DataFrame, batch_id: int, *, path: Path, keys: tuple[str, ...]) -> None:
    """Upsert one micro-batch of updated aggregate rows, keyed by ``keys``."""
    batch = batch.persist()
    try:
        # The oldest window in the batch, formatted by Spark in the session zone (UTC), bounds
        # the target scan: Delta skips files whose window_start stats are all older.
        lo = batch.agg(F.date_format(F.min("window_start"), "yyyy-MM-dd HH:mm:ss")).first()[0]
        if lo is None:
            return
        condition = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        condition += f" AND t.window_start >= TIMESTAMP'{lo}'"
        (
            DeltaTable.forPath(batch.sparkSession, str(path)).alias("t")
            .merge(batch.alias("s"), condition)
            .whenMatchedUpdateAll()
            .whenNotMatchedInsertAll()
            .execute()
        )
        logger.debug("batch %d merged into %s", batch_id, path.name)
    finally:
        batch.unpersist()


def _start_merge(
    spark: SparkSession, cfg: Config, *, name: str, df: DataFrame, table: str,
    keys: tuple[str, ...], trigger: dict,
) -> StreamingQuery:
    path = cfg.paths.table(table)
    ensure_table(spark, path, df.schema)
    reset_if_first_batch_uncommitted(cfg.paths.checkpoint(name))
    return (
        df.writeStream.queryName(name)
        .outputMode("update")
        .foreachBatch(stoppable(functools.partial(merge_batch, path=path, keys=keys)))
        .option("checkpointLocation", str(cfg.paths.checkpoint(name)))
        .trigger(**trigger)
        .start()
    )


def start_aggregates(spark: SparkSession, cfg: Config, *, trigger: dict) -> list[StreamingQuery]:
    """gold/sensor_stats_5m, gold/sensor_stats_10m and gold/location_stats_5m."""
    g = cfg.gold
    specs: list[tuple[str, str, tuple[str, ...], Callable[[DataFrame], DataFrame]]] = [
        ("gold_sensor_stats_5m", STATS_5M, agg.SENSOR_STATS_KEYS,
         lambda s: agg.sensor_stats(s, window=g.tumbling,
                                    percentile_accuracy=g.percentile_accuracy)),
        ("gold_sensor_stats_10m", STATS_10M, agg.SENSOR_STATS_KEYS,
         lambda s: agg.sensor_stats(s, window=g.sliding, slide=g.slide,
                                    percentile_accuracy=g.percentile_accuracy)),
        ("gold_location_stats_5m", LOCATION_5M, agg.LOCATION_STATS_KEYS,
         lambda s: agg.location_stats(s, window=g.tumbling)),
    ]
    queries = [
        _start_merge(spark, cfg, name=name, df=build(_silver_stream(spark, cfg)), table=table,
                     keys=keys, trigger=trigger)
        for name, table, keys, build in specs
    ]
    logger.info("gold aggregate queries started: %s", ", ".join(q.name for q in queries))
    return queries


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

    The table is small (one row per sensor) and rewritten whole, deterministically from its
    previous version and the batch, under a Delta transaction id so a replay is skipped.
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
        open_alert_window_s=cfg.gold.open_alert_window_s,
    ).withColumn("updated_at", F.current_timestamp())
    app_id = f"gold-status-{checkpoint_query_id(cfg.paths.checkpoint('gold_sensor_status'))}"
    (
        status.write.format("delta").mode("overwrite")
        .option("txnAppId", app_id).option("txnVersion", batch_id)
        .save(str(path))
    )


def start_sensor_status(spark: SparkSession, cfg: Config, *, trigger: dict) -> StreamingQuery:
    """gold/sensor_status: the last value per sensor, ONLINE/OFFLINE, open alerts."""
    renamed = _silver_stream(spark, cfg, watermark=False).select(
        "sensor_id", "event_time", "location", "temperature", "humidity", "pressure")
    return (
        renamed.writeStream.queryName("gold_sensor_status")
        .foreachBatch(stoppable(functools.partial(write_status_batch, cfg=cfg)))
        .option("checkpointLocation", str(cfg.paths.checkpoint("gold_sensor_status")))
        .trigger(**trigger)
        .start()
    )


def start_alert_dependents(
    spark: SparkSession, cfg: Config, *, trigger: dict
) -> list[StreamingQuery]:
    """The gold queries that read gold/alerts: they run after the alert query."""
    return [start_alert_counts(spark, cfg, trigger=trigger),
            start_sensor_status(spark, cfg, trigger=trigger)]
