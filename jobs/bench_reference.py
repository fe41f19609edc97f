"""The bench's reference: what a plain Spark job does on the same load, beside the pipeline.

One micro-batch query, nothing else: Kafka -> from_json (the wire schema) -> range filter ->
static thresholds -> Kafka, at a 1 s trigger, on a fresh checkpoint. No bronze, silver, gold,
quarantine, de-duplication or state. The bench produces the same fleet and probes to its own
topic and times each probe's alert by the broker's append time, so the report can show what
the medallion's guarantees cost as a ratio of latency and CPU.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from bronze.schema import READING_SCHEMA
from jobs import kafka_client
from jobs.config import Config

logger = logging.getLogger(__name__)

QUERY_NAME = "bench_reference"


def start_reference(spark: SparkSession, cfg: Config, *, topic_in: str, topic_out: str,
                    checkpoint: str) -> Any:
    """The plain query, started: every breach of the static thresholds as a JSON record."""
    a, (t_lo, t_hi), (h_lo, h_hi) = (cfg.alerts, cfg.validation.temperature,
                                     cfg.validation.humidity)
    readings = (
        spark.readStream.format("kafka")
        .options(**kafka_client.settings(cfg).spark_options())
        .option("subscribe", topic_in).option("startingOffsets", "earliest").load()
        .select(F.from_json(F.col("value").cast("string"), READING_SCHEMA).alias("r"))
        .select("r.*")
        .where(F.col("temperature").between(t_lo, t_hi) & F.col("humidity").between(h_lo, h_hi))
    )
    t, h = F.col("temperature"), F.col("humidity")
    kind = (F.when(t > a.high_temp.threshold, "HIGH_TEMP")
            .when(t < a.low_temp.threshold, "LOW_TEMP")
            .when(h > a.high_humidity.threshold, "HIGH_HUMIDITY"))
    alerts = readings.where(kind.isNotNull()).select(
        F.col("sensor_id").alias("key"),
        F.to_json(F.struct(F.col("sensor_id"), kind.alias("alert_type"),
                           F.col("timestamp").alias("event_time"), t.alias("temperature")))
        .alias("value"))
    return (
        alerts.writeStream.format("kafka").queryName(QUERY_NAME)
        .options(**kafka_client.settings(cfg).spark_options()).option("topic", topic_out)
        .option("checkpointLocation", checkpoint)
        .trigger(processingTime="1 second").start()
    )


def probe_latencies(cfg: Config, *, topic_in: str, topic_out: str, probe_temperature: float,
                    since_epoch_s: float) -> dict[str, Any]:
    """Seconds from each probe's produce time to its alert's append time (first delivery)."""
    from kafka import KafkaConsumer

    def read(topic: str) -> list[Any]:
        consumer = KafkaConsumer(topic, **kafka_client.settings(cfg).python_kwargs(KafkaConsumer),
                                 auto_offset_reset="earliest", enable_auto_commit=False,
                                 consumer_timeout_ms=5000)
        try:
            return [r for r in consumer if r.timestamp >= since_epoch_s * 1000]
        finally:
            consumer.close()

    produced: dict[tuple[str, str], int] = {}
    for r in read(topic_in):
        try:
            body = json.loads(r.value)
        except ValueError:
            continue
        if isinstance(body, dict) and body.get("temperature") == probe_temperature:
            produced[(body.get("sensor_id"), body.get("timestamp"))] = r.timestamp
    first: dict[tuple[str, str], int] = {}
    for r in read(topic_out):
        a = json.loads(r.value)
        key = (a["sensor_id"], a["event_time"])
        first[key] = min(first.get(key, r.timestamp), r.timestamp)
    lat = sorted((first[k] - t) / 1000 for k, t in produced.items() if k in first)
    return {"probes": len(produced), "n": len(lat), "latencies": lat}


def wait_for_alerts(cfg: Config, topic_out: str, expected: int, timeout_s: float) -> None:
    """Until ``topic_out`` holds ``expected`` records, or the timeout."""
    from kafka import KafkaConsumer
    from kafka.structs import TopicPartition

    consumer = KafkaConsumer(**kafka_client.settings(cfg).python_kwargs(KafkaConsumer))
    try:
        parts = [TopicPartition(topic_out, p)
                 for p in consumer.partitions_for_topic(topic_out) or ()]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if sum(consumer.end_offsets(parts).values()) >= expected:
                return
            time.sleep(1.0)
        logger.warning("reference: fewer than %d alerts after %.0f s", expected, timeout_s)
    finally:
        consumer.close()
