"""The `alerts_realtime` query: static-threshold alerts from Kafka to `iot-alerts` in Spark's
Real-Time Mode, milliseconds after a reading is produced.

Kafka `iot-sensors` -> silver's parse and rules -> the readings fresh enough for the stateful
alerts query to keep (`gold.alerts.published_early`) -> HIGH_TEMP / LOW_TEMP / HIGH_HUMIDITY
rows (`gold.alerts.static_alert_rows`, the alert_id the stateful rules give them) -> Kafka.

Real-Time Mode runs one long-running task per Kafka partition and checkpoints every
`streaming.realtime_batch`; a restart replays from the last checkpoint, so delivery is
at-least-once with stable alert ids, like the stateful query's. The stateful `alerts` query
writes the same alerts to gold/alerts and leaves these off Kafka (`published_early`). In a
`run --once` the same query runs with an availableNow trigger from the same checkpoint.
"""

from __future__ import annotations

import logging
import re

from pyspark.sql import Column, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery

from gold.alerts import ALERT, KIND_COLUMN, published_early, static_alert_rows
from jobs import kafka_client
from jobs.config import Config
from jobs.silver_job import source_readings
from jobs.streaming import observe_produce_time

logger = logging.getLogger(__name__)

QUERY_NAME = "alerts_realtime"
# Times on `iot-alerts` as ISO-8601 UTC with a Z (the session zone is UTC).
JSON_OPTIONS = {"timestampFormat": "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX", "ignoreNullFields": "false"}


class RealtimeSetupError(RuntimeError):
    """Real-Time Mode cannot run as configured; the message names the fix."""


def enabled(cfg: Config) -> bool:
    """Real-Time Mode needs a Kafka source; with files or a socket it is off."""
    return cfg.streaming.realtime_alerts and cfg.streaming.source == "kafka"


def early_window_s(cfg: Config) -> int | None:
    """How late after its event time a reading may be produced and still be alerted here
    (the watermark), or None when this query does not run."""
    return cfg.streaming.watermark_s if enabled(cfg) else None


def wall_clock() -> Column:
    """The time each row is evaluated (current_timestamp() is fixed per batch, and a
    real-time batch lasts minutes)."""
    return F.timestamp_millis(
        F.expr("reflect('java.lang.System', 'currentTimeMillis')").cast("long"))


def local_slots(master: str) -> int | None:
    """Task slots of a local master (local[4] -> 4), None for local[*] or a cluster."""
    m = re.fullmatch(r"local\[(\d+)(?:,\s*\d+)?\]", master.strip())
    return int(m.group(1)) if m else (1 if master.strip() == "local" else None)


def check_slots(cfg: Config, partitions: int) -> None:
    """One long-running task per partition, plus a slot for every other query's tasks."""
    slots = local_slots(cfg.spark.master)
    if slots is not None and slots < partitions + 1:
        raise RealtimeSetupError(
            f"spark.master {cfg.spark.master} has {slots} task slots, but Real-Time Mode holds "
            f"one per partition of {cfg.kafka.topic_in} ({partitions}) and the other queries "
            f"need one more: set --set spark.master=local[{partitions + 2}], or "
            "--set streaming.realtime_alerts=false")


def start(spark: SparkSession, cfg: Config, *, trigger: dict) -> list[StreamingQuery]:
    if not enabled(cfg):
        logger.info("alerts_realtime off (streaming.realtime_alerts=%s, source %s)",
                    cfg.streaming.realtime_alerts, cfg.streaming.source)
        return []
    realtime = "realTime" in trigger
    if realtime:
        check_slots(cfg, cfg.kafka.partitions_in)
    readings = observe_produce_time(source_readings(spark, cfg, rate_limit=not realtime))
    fresh = readings.where(published_early(F.col("event_time"), F.col("kafka_timestamp"),
                                           cfg.streaming.watermark_s))
    alerts = static_alert_rows(fresh, cfg=cfg.alerts, detected_at=wall_clock())
    records = alerts.select(
        F.col("sensor_id").alias("key"),
        F.to_json(F.struct(*alerts.columns, F.lit(ALERT).alias(KIND_COLUMN)),
                  JSON_OPTIONS).alias("value"))
    query = (
        records.writeStream.format("kafka").queryName(QUERY_NAME)
        .outputMode("update")
        .options(**kafka_client.settings(cfg).spark_options())
        .option("topic", cfg.kafka.topic_alerts)
        .option("checkpointLocation", str(cfg.paths.checkpoint(QUERY_NAME)))
        .trigger(**trigger)
        .start()
    )
    logger.info("alerts_realtime query started (%s) -> %s", trigger, cfg.kafka.topic_alerts)
    return [query]
