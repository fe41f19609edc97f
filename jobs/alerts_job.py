"""The alerts query: silver readings -> gold/alerts (Delta MERGE) and Kafka `iot-alerts`.

Delivery: each micro-batch's alerts are collected on the driver (they are few), the ones not
yet in gold/alerts are published to Kafka (acks=all, flushed) and then MERGEd into the table
keyed on the deterministic alert_id. A crash between the two replays the batch: the alerts are
published again with the same alert_id (at-least-once) and the MERGE inserts nothing twice.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery, StreamingQueryListener

from gold.alerts import alert_stream
from gold.schema import ALERT_SCHEMA
from jobs import tables
from jobs.config import Config, KafkaConfig

logger = logging.getLogger(__name__)

QUERY_NAME = "alerts"


class AlertPublisher:
    """Kafka producer for `iot-alerts`, created on first use (key = sensor_id, JSON value)."""

    def __init__(self, cfg: KafkaConfig) -> None:
        self.cfg = cfg
        self._producer: Any = None

    def _get(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                bootstrap_servers=self.cfg.bootstrap, acks="all", linger_ms=5,
                key_serializer=str.encode,
                value_serializer=lambda v: json.dumps(v, sort_keys=True).encode(),
            )
        return self._producer

    def publish(self, alerts: Iterable[dict[str, Any]]) -> int:
        """Send and wait for every acknowledgement; raise if any send failed."""
        producer = self._get()
        futures = [producer.send(self.cfg.topic_alerts, key=a["sensor_id"], value=to_json(a))
                   for a in alerts]
        producer.flush()
        for f in futures:
            f.get(timeout=30)
        return len(futures)

    def close(self) -> None:
        if self._producer is not None:
            self._producer.close()
            self._producer = None


def to_json(alert: dict[str, Any]) -> dict[str, Any]:
    """An alert row as the JSON object published on `iot-alerts` (times ISO-8601 UTC)."""
    out = dict(alert)
    for key in ("event_time", "detected_at"):
        ts = out.get(key)
        if isinstance(ts, datetime):
            ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # Spark returns naive UTC
            out[key] = ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return out


def ensure_alerts_table(spark: SparkSession, cfg: Config) -> str:
    path = str(cfg.paths.table(tables.ALERTS))
    (DeltaTable.createIfNotExists(spark).location(path).addColumns(ALERT_SCHEMA).execute())
    return path


def write_alerts_batch(batch: DataFrame, batch_id: int, *, cfg: Config,
                       publisher: AlertPublisher) -> None:
    """foreachBatch sink: publish the batch's new alerts, then MERGE them (idempotent)."""
    rows = batch.collect()  # one execution of the stateful plan; alerts are few
    if not rows:
        return
    spark = batch.sparkSession
    unique = list({r["alert_id"]: r for r in rows}.values())
    incoming = spark.createDataFrame(unique, ALERT_SCHEMA)
    path = cfg.paths.table(tables.ALERTS)
    existing = {r["alert_id"] for r in spark.read.format("delta").load(str(path))
                .join(incoming.select("alert_id"), "alert_id", "left_semi")
                .select("alert_id").collect()}
    new = [r.asDict() for r in unique if r["alert_id"] not in existing]
    sent = publisher.publish(new)
    (DeltaTable.forPath(spark, str(path)).alias("t")
     .merge(incoming.alias("s"), "t.alert_id = s.alert_id")
     .whenNotMatchedInsertAll().execute())
    logger.info("alerts batch %d: %d alerts, %d new, %d published", batch_id, len(rows),
                len(new), sent)


class _ClosePublisherOnEnd(StreamingQueryListener):
    """Closes the query's Kafka producer when the query ends (no lingering client)."""

    def __init__(self, spark: SparkSession, publisher: AlertPublisher) -> None:
        self.spark, self.publisher, self.query_id = spark, publisher, None

    def onQueryStarted(self, event: Any) -> None:
        pass

    def onQueryProgress(self, event: Any) -> None:
        pass

    def onQueryIdle(self, event: Any) -> None:
        pass

    def onQueryTerminated(self, event: Any) -> None:
        if str(event.id) == self.query_id:
            self.publisher.close()
            self.spark.streams.removeListener(self)


def start_alerts(spark: SparkSession, cfg: Config, *, trigger: dict[str, Any]) -> StreamingQuery:
    """Start the `alerts` query over the silver Delta stream; `trigger` goes to .trigger()."""
    ensure_alerts_table(spark, cfg)
    silver = str(cfg.paths.table(tables.SILVER_READINGS))
    readings = spark.readStream.format("delta").load(silver)
    alerts = alert_stream(readings, cfg=cfg.alerts, watermark=cfg.streaming.watermark)
    publisher = AlertPublisher(cfg.kafka)
    sink = functools.partial(write_alerts_batch, cfg=cfg, publisher=publisher)
    listener = _ClosePublisherOnEnd(spark, publisher)
    spark.streams.addListener(listener)
    query = (
        alerts.writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", str(cfg.paths.checkpoint(QUERY_NAME)))
        .foreachBatch(sink)
        .trigger(**trigger)
        .start()
    )
    listener.query_id = str(query.id)
    logger.info("alerts query started (%s) from %s", trigger, silver)
    return query


def format_alert(alert: dict[str, Any]) -> str:
    """One line per alert for `lakehouse alerts tail`."""
    metric = f" {alert['metric']}={alert['value']:.2f}" if alert.get("metric") and \
        alert.get("value") is not None else ""
    threshold = f" (threshold {alert['threshold']:.2f})" if alert.get("threshold") is not None \
        else ""
    return (f"{alert['event_time']}  {alert['severity']:<8} {alert['alert_type']:<18} "
            f"{alert['sensor_id']}{metric}{threshold}  [{alert.get('location') or '-'}] "
            f"id={alert['alert_id'][:12]}")


def tail_alerts(cfg: Config, *, from_beginning: bool = False, limit: int | None = None,
                idle_s: float | None = None) -> Iterable[dict[str, Any]]:
    """Alerts as they arrive on `iot-alerts` (no consumer group: nothing is committed)."""
    from kafka import KafkaConsumer

    consumer = KafkaConsumer(
        cfg.kafka.topic_alerts, bootstrap_servers=cfg.kafka.bootstrap, group_id=None,
        auto_offset_reset="earliest" if from_beginning else "latest",
        consumer_timeout_ms=int(idle_s * 1000) if idle_s else float("inf"),
        value_deserializer=lambda b: json.loads(b),
    )
    try:
        for n, message in enumerate(consumer, start=1):
            yield message.value
            if limit is not None and n >= limit:
                return
    finally:
        consumer.close()
