"""The alerts query: readings straight from Kafka -> every rule -> gold/alerts (Delta, keyed
on alert_id) and Kafka `iot-alerts`.

One hop: the query reads the input topic itself through silver's parse and rules
(`jobs.silver_job.source_readings`), so an alert waits for no bronze or silver commit; the
rules see each (sensor_id, event_time) once, as silver keeps it (`gold.alerts`).

Delivery: each micro-batch's alerts are collected on the driver (they are few), the ones whose
deterministic alert_id gold/alerts does not hold yet are published to Kafka (acks=all, flushed)
and then appended to the table. A crash between the two replays the batch: the alerts are
published again with the same alert_id (at-least-once) and written once. Static-threshold
alerts that the real-time query (`jobs.realtime_alerts_job`) publishes are written here but not
published again. The episodes a batch ends (resolution rows, `deliver_alerts`) are published
as `kind` resolution messages and set ``resolved_at`` on their alerts: in the batch's own
rows before the append, in older rows by one MERGE only in a batch that has such an episode.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, Row, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.types import StringType, StructField, StructType, TimestampType

from gold.alerts import (
    ALERT,
    EARLY_COLUMN,
    KIND_COLUMN,
    RESOLUTION,
    SINCE_COLUMN,
    alert_stream,
)
from gold.schema import ALERT_SCHEMA, RESOLVED_AT
from jobs import kafka_client, realtime_alerts_job, tables
from jobs.config import Config, KafkaConfig
from jobs.kafka_client import ClientSettings
from jobs.silver_job import ensure_readings_table, source_readings
from jobs.streaming import (
    ProgressJsonListener,
    checkpoint_query_id,
    committed_batch,
    compact_partitions,
    ensure_table,
    holds_no_files,
    in_few_tasks,
    keep_table_properties,
    marked_write,
    observe_produce_time,
    reset_if_first_batch_uncommitted,
    stoppable,
    table_exists,
)

logger = logging.getLogger(__name__)

QUERY_NAME = "alerts"


class AlertPublisher:
    """Kafka producer for `iot-alerts`, created on first use (key = sensor_id, JSON value)."""

    def __init__(self, cfg: KafkaConfig, client: ClientSettings | None = None) -> None:
        self.cfg = cfg
        self.client = client or kafka_client.settings_of(cfg)
        self._producer: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        if self._producer is None:
            from kafka import KafkaProducer

            self._producer = KafkaProducer(
                **self.client.python_kwargs(KafkaProducer), acks="all", linger_ms=5,
                key_serializer=str.encode,
                value_serializer=lambda v: json.dumps(v, sort_keys=True).encode(),
            )
        return self._producer

    def connect_in_background(self) -> None:
        """Create the producer now, off the query's thread: a cold client's connection and
        metadata round-trips would otherwise come out of the first alerts' batch."""
        def connect() -> None:
            try:
                with self._lock:
                    self._get()
            except Exception:  # noqa: BLE001 - publish() retries and raises what it meets
                logger.warning("alert producer not connected yet; the first publish retries",
                               exc_info=True)

        threading.Thread(target=connect, name="alerts-producer-connect", daemon=True).start()

    def publish(self, alerts: Iterable[dict[str, Any]],
                resolutions: Iterable[dict[str, Any]] = ()) -> int:
        """Send and wait for every acknowledgement; raise if any send failed. ``resolutions``
        go out as `to_json(..., RESOLUTION)` messages."""
        messages = [(a, to_json(a)) for a in alerts] + \
            [(e, to_json(e, RESOLUTION)) for e in resolutions]
        if not messages:
            return 0
        with self._lock:
            producer = self._get()
        futures = [producer.send(self.cfg.topic_alerts, key=a["sensor_id"], value=value)
                   for a, value in messages]
        producer.flush()
        for f in futures:
            f.get(timeout=30)
        return len(futures)

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                self._producer.close()
                self._producer = None


def to_json(alert: dict[str, Any], kind: str = ALERT) -> dict[str, Any]:
    """An alert row as the JSON object published on `iot-alerts` (times ISO-8601 UTC), with
    ``kind``: ``alert``, or ``resolution`` for the end of the alert's episode (same alert_id,
    ``resolved_at`` set)."""
    out = {**alert, KIND_COLUMN: kind}
    for key in ("event_time", "detected_at", RESOLVED_AT):
        ts = out.get(key)
        if isinstance(ts, datetime):
            ts = ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # Spark returns naive UTC
            out[key] = ts.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return out


def ensure_alerts_table(spark: SparkSession, cfg: Config) -> str:
    """Create gold/alerts, or bring a table of an older schema up to ALERT_SCHEMA
    (`add_resolved_at`)."""
    path = cfg.paths.table(tables.ALERTS)
    if table_exists(spark, path):
        add_resolved_at(spark, path)
        keep_table_properties(spark, path)
    else:
        ensure_table(spark, path, ALERT_SCHEMA)
    return str(path)


def add_resolved_at(spark: SparkSession, path: Path) -> bool:
    """A gold/alerts table from before the lifecycle reached it gains ``resolved_at``; False
    when it has it already.

    Its rows' episodes were never recorded, so each is closed at its own event time: left null
    they would count as active alerts for ever. One commit rewrites the table with the column
    (an overwrite: readers of the table as a stream skip it, as they skip the resolutions'
    MERGEs), so a crash leaves either the old table or the migrated one, and the next start
    migrates again or finds nothing to do. An episode still open at the upgrade thus shows as
    closed; a static threshold's is active again from its next breaching reading.
    """
    table = spark.read.format("delta").load(str(path))
    if RESOLVED_AT in table.columns:
        return False
    n = table.count()
    migrated = table.withColumn(RESOLVED_AT, F.col("event_time"))
    (migrated.select(*ALERT_SCHEMA.fieldNames()).write.format("delta").mode("overwrite")
     .option("overwriteSchema", "true")
     .option("userMetadata", json.dumps({"migration": "alerts resolved_at"}))
     .save(str(path)))
    logger.info("gold/alerts %s: column resolved_at added, its %d older alerts closed at "
                "their event time", path, n)
    return True


# The alerts query's state layout (gold/alerts.py) and input, recorded beside its
# checkpoint: Spark cannot tell that a checkpoint was made with another alerts.key_buckets
# (same key schema, other sensors per key) and would go on with every sensor's state out of
# reach. v1 read the silver table; v2 reads the source (Kafka, or bronze for other sources);
# v3 adds each sensor's reporting intervals and adaptive detectors to its state blob
# (gold.alert_rules.pack_state). A v2 checkpoint is read as it is (its blobs are v3 blobs
# with nothing learnt yet) and its marker rewritten to v3; older code refuses a v3 one.
STATE_LAYOUT = "sensor-buckets-v3"
MIGRATED_LAYOUTS = frozenset({"sensor-buckets-v2"})
LAYOUT_FILE = "lakehouse-state-layout.json"


def _input(cfg: Config) -> str:
    return "kafka" if cfg.streaming.source == "kafka" else "bronze"


def state_layout(cfg: Config) -> dict[str, Any]:
    return {"layout": STATE_LAYOUT, "key_buckets": cfg.alerts.key_buckets,
            "input": _input(cfg)}


def layout_problem(cfg: Config) -> str | None:
    """Why the alerts checkpoint's state does not fit this config, or None (fresh, or fits)."""
    ckpt = cfg.paths.checkpoint(QUERY_NAME)
    offsets = ckpt / "offsets"
    if not offsets.is_dir() or not any(offsets.iterdir()):
        return None
    marker = ckpt / LAYOUT_FILE
    if not marker.is_file():
        return ("its state was written before the state layout was recorded (one state key "
                "per sensor, older than this version)")
    try:
        found = json.loads(marker.read_text())
    except (OSError, ValueError) as exc:
        return f"{marker} cannot be read ({exc})"
    if found.get("layout") in MIGRATED_LAYOUTS:
        found = {**found, "layout": STATE_LAYOUT}
    if found == state_layout(cfg):
        return None
    if found.get("layout") == STATE_LAYOUT and found.get("input") != _input(cfg):
        return (f"it reads {found.get('input')} but streaming.source={cfg.streaming.source} "
                f"reads {_input(cfg)}: set the source back or start the query afresh")
    if found.get("layout") == STATE_LAYOUT:
        return (f"it was made with alerts.key_buckets={found.get('key_buckets')} but the config "
                f"says {cfg.alerts.key_buckets}: set it back "
                f"(--set alerts.key_buckets={found.get('key_buckets')}) or start the query "
                "afresh")
    return f"its state layout is {found.get('layout')!r}, this version reads {STATE_LAYOUT!r}"


def record_layout(cfg: Config) -> None:
    """Fail on a checkpoint whose state does not fit; else record the layout beside it."""
    if problem := layout_problem(cfg):
        raise RuntimeError(f"alerts checkpoint {cfg.paths.checkpoint(QUERY_NAME)}: {problem}")
    marker = cfg.paths.checkpoint(QUERY_NAME) / LAYOUT_FILE
    older = json.loads(marker.read_text()).get("layout") if marker.is_file() else None
    if older in MIGRATED_LAYOUTS:
        logger.info("alerts checkpoint: state layout %s read as %s (sensors migrate as they "
                    "are next stored)", older, STATE_LAYOUT)
    if not marker.is_file() or older in MIGRATED_LAYOUTS:
        marker.parent.mkdir(parents=True, exist_ok=True)
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(state_layout(cfg), sort_keys=True))
        tmp.replace(marker)


# The batch sink and the silent-fleet watchdog both deliver; one at a time, so that the
# check for rows already written and the write that follows it cannot interleave.
_DELIVERY = threading.Lock()


# Alerts that two paths can raise with one alert_id: the silent-fleet watchdog's fallback
# OFFLINE, and the event-time OFFLINE once data resumes. A batch looks these up in gold/alerts;
# every other alert_id comes from one batch of one query, whose replay the commit marker finds.
CROSS_PATH_TYPES = frozenset({"SENSOR_OFFLINE"})


def deliver_alerts(spark: SparkSession, cfg: Config, publisher: AlertPublisher,
                   rows: list[Row], *, batch: tuple[str, int] | None = None) -> tuple[int, int]:
    """Publish the alerts gold/alerts does not hold yet and the batch's resolutions, then
    write them; returns (unique alerts, new alerts).

    Idempotent, under the delivery lock. ``batch`` = (app_id, batch_id) of a micro-batch: a
    replay of a batch already appended (`jobs.streaming.committed_batch`) publishes and writes
    nothing, and of its rows only CROSS_PATH_TYPES are looked up in the table. Without it
    (the watchdog), or before this writer's first marked commit, every row is looked up. The
    lookup reads only files whose event-time range meets the rows'. A row whose
    ``published_early`` is true (the real-time query put it on Kafka) is written but not
    published again.

    Resolution rows (KIND_COLUMN = RESOLUTION) close their episode's alerts
    (`resolve_in_batch`): those of this batch are appended with ``resolved_at`` set, those in
    the table get it by one MERGE (`merge_resolutions`), only when an episode began before
    this batch (or is a SENSOR_OFFLINE, which the watchdog may have written). Order: publish
    (alerts and resolutions, at least once), MERGE (idempotent: it sets only a null
    ``resolved_at``, to the same value on a replay), then the append whose commit marks the
    batch done; a crash before that replays the batch, and the replay does it all again.
    """
    names = ALERT_SCHEMA.fieldNames()
    by_id: dict[str, dict[str, Any]] = {}
    ends: dict[str, dict[str, Any]] = {}
    early: set[str] = set()
    for r in rows:
        d = r.asDict()
        if d.get(KIND_COLUMN) == RESOLUTION:
            ends[d["alert_id"]] = d
            continue
        if d.get(EARLY_COLUMN):
            early.add(d["alert_id"])
        by_id[d["alert_id"]] = {k: d.get(k) for k in names}
    unique = list(by_id.values())
    if not unique and not ends:
        return 0, 0
    resolutions = list(ends.values())
    path = cfg.paths.table(tables.ALERTS)
    with _DELIVERY:
        committed = committed_batch(spark, path, batch[0]) if batch else None
        if batch and committed is not None and committed >= batch[1]:
            logger.info("alerts batch %d was delivered already: skipped", batch[1])
            return len(unique), 0
        # A writer with no marker yet may be a checkpoint started afresh
        # (reset_if_first_batch_uncommitted) re-running a batch another id appended.
        lookup = [a for a in unique if committed is None or a["alert_type"] in CROSS_PATH_TYPES]
        existing: set[str] = set()
        if lookup and not holds_no_files(spark, path):
            times = [_utc(a["event_time"]) for a in lookup]
            existing = {r["alert_id"] for r in spark.read.format("delta").load(str(path))
                        .where(F.col("event_time").between(_sql_ts(min(times)),
                                                          _sql_ts(max(times))))
                        .where(F.col("alert_id").isin([a["alert_id"] for a in lookup]))
                        .select("alert_id").collect()}
        new = resolve_in_batch([a for a in unique if a["alert_id"] not in existing],
                               resolutions)
        appended = {a["alert_id"] for a in new}
        publisher.publish([a for a in new if a["alert_id"] not in early],
                          [{k: e[k] for k in names} for e in resolutions])
        in_table = [e for e in resolutions
                    if e["alert_id"] not in appended or e["alert_type"] in CROSS_PATH_TYPES]
        merge_s = 0.0
        if in_table:
            t0 = time.monotonic()
            merge_resolutions(spark, path, in_table)
            merge_s = time.monotonic() - t0
        if new:
            # One file per append: a batch's alerts are few, and every file is an entry each
            # later lookup, MERGE and reader of the table pays for.
            df = spark.createDataFrame([tuple(a[k] for k in names) for a in new],
                                       ALERT_SCHEMA).coalesce(1)
            if batch:
                marked_write(df, path, app_id=batch[0], batch_id=batch[1], committed=committed)
            else:
                df.write.format("delta").mode("append").save(str(path))
        if resolutions:
            logger.info("alerts: %d episodes resolved (%d in the table by MERGE, %.1f s)",
                        len(resolutions), len(in_table), merge_s)
    return len(unique), len(new)


def _episode_of(row: dict[str, Any]) -> tuple[str, str, str | None]:
    return row["sensor_id"], row["alert_type"], row["metric"]


def resolve_in_batch(alerts: list[dict[str, Any]], resolutions: list[dict[str, Any]]
                     ) -> list[dict[str, Any]]:
    """The alerts with ``resolved_at`` set where one of the resolutions closes them: same
    (sensor_id, alert_type, metric), event time in [since, resolved_at), not resolved yet.
    Pure; the alerts are returned as new dicts in their order."""
    by_episode: dict[tuple, list[tuple[datetime, datetime]]] = {}
    for e in resolutions:
        by_episode.setdefault(_episode_of(e), []).append(
            (_utc(e[SINCE_COLUMN] or e["event_time"]), _utc(e[RESOLVED_AT])))
    out = []
    for a in alerts:
        a = dict(a)
        if a.get(RESOLVED_AT) is None:
            t = _utc(a["event_time"])
            for lo, hi in by_episode.get(_episode_of(a), ()):
                if lo <= t < hi:
                    a[RESOLVED_AT] = hi
                    break
        out.append(a)
    return out


RESOLUTION_MERGE_SCHEMA = StructType([
    StructField("sensor_id", StringType(), False), StructField("alert_type", StringType(), False),
    StructField("metric", StringType()), StructField("since", TimestampType(), False),
    StructField("resolved_at", TimestampType(), False),
])


def merge_resolutions(spark: SparkSession, path: Path, resolutions: list[dict[str, Any]]
                      ) -> None:
    """One MERGE: every alert of gold/alerts that a resolution closes (`resolve_in_batch`'s
    rule) and that has no ``resolved_at`` yet gets the resolution's. The literal event-time
    bounds let Delta skip the files outside all the episodes. Idempotent."""
    src = spark.createDataFrame(
        [(e["sensor_id"], e["alert_type"], e["metric"], _utc(e[SINCE_COLUMN] or e["event_time"]),
          _utc(e[RESOLVED_AT])) for e in resolutions], RESOLUTION_MERGE_SCHEMA)
    lo = min(_utc(e[SINCE_COLUMN] or e["event_time"]) for e in resolutions)
    hi = max(_utc(e[RESOLVED_AT]) for e in resolutions)
    cond = (f"t.event_time >= {_ts_sql(lo)} AND t.event_time < {_ts_sql(hi)}"
            " AND t.sensor_id = s.sensor_id AND t.alert_type = s.alert_type"
            " AND t.metric <=> s.metric"
            " AND t.event_time >= s.since AND t.event_time < s.resolved_at")
    (DeltaTable.forPath(spark, str(path)).alias("t").merge(src.alias("s"), cond)
     .whenMatchedUpdate(condition="t.resolved_at IS NULL", set={"resolved_at": "s.resolved_at"})
     .execute())


def _utc(t: datetime) -> datetime:
    """A timestamp from collect(): naive ones are in this process's zone (PySpark's rule)."""
    return t.astimezone(UTC)


def _sql_ts(t: datetime) -> Column:
    # A literal in the session zone (UTC), not a Python datetime PySpark would re-zone.
    return F.expr(_ts_sql(t))


def _ts_sql(t: datetime) -> str:
    return f"TIMESTAMP'{t.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}'"


def write_alerts_batch(batch: DataFrame, batch_id: int, *, cfg: Config,
                       publisher: AlertPublisher) -> None:
    """foreachBatch sink: publish the batch's new alerts, then append them (idempotent)."""
    t0 = time.monotonic()
    rows = batch.collect()  # one execution of the stateful plan; alerts are few
    if rows:
        t_rules = time.monotonic()
        app_id = f"gold-alerts-{checkpoint_query_id(cfg.paths.checkpoint(QUERY_NAME))}"
        unique, new = deliver_alerts(batch.sparkSession, cfg, publisher, rows,
                                     batch=(app_id, batch_id))
        logger.info("alerts batch %d: %d alerts, %d new (published) (rules %.1f s, "
                    "publish and write %.1f s)", batch_id, unique, new, t_rules - t0,
                    time.monotonic() - t_rules)
    with _DELIVERY:  # not beside the watchdog's MERGE of resolutions, which reads the files
        compact_partitions(batch.sparkSession, cfg.paths.table(tables.ALERTS), None,
                           batch_id=batch_id, every=cfg.maintenance.compact_every_batches,
                           below_mb=cfg.maintenance.compact_below_mb)


def silent_fleet_offline(spark: SparkSession, cfg: Config, *, anchor_ms: int,
                         now: datetime) -> list[Row]:
    """Processing-time fallback: SENSOR_OFFLINE rows for every sensor silent since the fleet
    went quiet, without waiting for a watermark that no data will advance.

    `anchor_ms` = the newest event time the query has seen. Only sensors whose last reading is
    within offline.after_s + watermark of it can still lack their event-time OFFLINE; each gets
    the alert the event-time path would raise (event_time = last + after_s, same alert_id), so
    when data resumes the timer's copy is found in gold/alerts and not delivered twice.
    """
    from gold.alert_rules import alert_id as make_id
    from gold.alert_rules import from_ms, severity

    after_s = cfg.alerts.offline.after_s
    delay_s = cfg.streaming.watermark_s
    since = from_ms(anchor_ms - (after_s + delay_s) * 1000)
    last = (spark.read.format("delta").load(str(cfg.paths.table(tables.SILVER_READINGS)))
            .where(F.col("event_time") > F.lit(since))
            .groupBy("sensor_id")
            .agg(F.max_by("location", "event_time").alias("location"),
                 F.max("event_time").alias("last")).collect())
    out = []
    for r in last:
        last_t = r["last"] if r["last"].tzinfo else r["last"].replace(tzinfo=UTC)
        t = last_t + timedelta(seconds=after_s)
        details = json.dumps({"detected_by": "processing-time fallback",
                              "last_reading": last_t.isoformat()}, sort_keys=True)
        out.append(Row(alert_id=make_id(r["sensor_id"], "SENSOR_OFFLINE", None, t),
                       sensor_id=r["sensor_id"], location=r["location"],
                       alert_type="SENSOR_OFFLINE",
                       severity=severity(cfg.alerts, "SENSOR_OFFLINE"), event_time=t,
                       detected_at=now, metric=None, value=float(after_s),
                       threshold=float(after_s), details=details))
    return out


class SilentFleetWatchdog(threading.Thread):
    """Driver thread beside a live alerts query: when no input has arrived for
    offline.after_s of wall-clock time, raise the fallback SENSOR_OFFLINE alerts once."""

    def __init__(self, spark: SparkSession, cfg: Config, query: StreamingQuery,
                 publisher: AlertPublisher, *, poll_s: float = 5.0) -> None:
        super().__init__(name="alerts-silent-fleet", daemon=True)
        self.spark, self.cfg, self.query, self.publisher = spark, cfg, query, publisher
        self.poll_s = poll_s

    def run(self) -> None:
        last_input: float | None = None
        anchor_ms: int | None = None
        swept = False
        while self.query.isActive:
            for p in reversed(self.query.recentProgress):
                if p.get("numInputRows", 0) > 0:
                    seen = datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00"))
                    if last_input is None or seen.timestamp() > last_input:
                        last_input, swept = seen.timestamp(), False
                        top = (p.get("eventTime") or {}).get("max")
                        if top:
                            anchor_ms = int(datetime.fromisoformat(top.replace(
                                "Z", "+00:00")).timestamp() * 1000)
                    break
            now = datetime.now(tz=UTC)
            quiet = last_input is not None and \
                now.timestamp() - last_input >= self.cfg.alerts.offline.after_s
            if quiet and not swept and anchor_ms is not None:
                try:
                    rows = silent_fleet_offline(self.spark, self.cfg, anchor_ms=anchor_ms,
                                                now=now)
                    unique, new = deliver_alerts(self.spark, self.cfg, self.publisher, rows)
                    logger.warning("fleet silent for %ds: %d fallback SENSOR_OFFLINE, %d new",
                                   self.cfg.alerts.offline.after_s, unique, new)
                    swept = True
                except Exception:  # the watchdog must never take the query down
                    logger.exception("silent-fleet sweep failed; will retry")
            time.sleep(self.poll_s)


class _ClosePublisherOnEnd(ProgressJsonListener):
    """Closes the query's Kafka producer when the query ends (no lingering client)."""

    def __init__(self, spark: SparkSession, publisher: AlertPublisher) -> None:
        super().__init__()
        self.spark, self.publisher, self.query_id = spark, publisher, None

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802 - Spark's API
        if str(event.id) == self.query_id:
            self.publisher.close()
            self.spark.streams.removeListener(self)


def start_alerts(spark: SparkSession, cfg: Config, *, trigger: dict[str, Any]) -> StreamingQuery:
    """Start the `alerts` query over the source's readings; `trigger` goes to .trigger()."""
    ensure_alerts_table(spark, cfg)
    # Keyed sink (alert_id looked up before writing, at-least-once Kafka): re-running batch 0
    # is safe.
    reset_if_first_batch_uncommitted(cfg.paths.checkpoint(QUERY_NAME))
    record_layout(cfg)
    # The silent-fleet watchdog reads silver's last readings.
    ensure_readings_table(spark, cfg)
    readings = in_few_tasks(source_readings(spark, cfg), cfg.spark.shuffle_partitions)
    alerts = alert_stream(observe_produce_time(readings), cfg=cfg.alerts,
                          watermark=cfg.streaming.watermark,
                          early_window_s=realtime_alerts_job.early_window_s(cfg))
    publisher = AlertPublisher(cfg.kafka, kafka_client.settings(cfg))
    if "processingTime" in trigger:  # a live query: its first alerts should not wait for it
        publisher.connect_in_background()
    sink = functools.partial(write_alerts_batch, cfg=cfg, publisher=publisher)
    listener = _ClosePublisherOnEnd(spark, publisher)
    spark.streams.addListener(listener)
    query = (
        alerts.writeStream.queryName(QUERY_NAME)
        .option("checkpointLocation", str(cfg.paths.checkpoint(QUERY_NAME)))
        .foreachBatch(stoppable(sink))
        .trigger(**trigger)
        .start()
    )
    listener.query_id = str(query.id)
    if "processingTime" in trigger:  # a live query: watch for a fleet gone silent
        SilentFleetWatchdog(spark, cfg, query, publisher).start()
    logger.info("alerts query started (%s) from %s", trigger, cfg.streaming.source)
    return query


def format_alert(alert: dict[str, Any]) -> str:
    """One line per alert for `lakehouse alerts tail` (a resolution: RESOLVED, its time and
    the opening alert's)."""
    if alert.get(KIND_COLUMN) == RESOLUTION:
        metric = f" {alert['metric']}" if alert.get("metric") else ""
        return (f"{alert.get(RESOLVED_AT)}  RESOLVED {alert['alert_type']:<18} "
                f"{alert['sensor_id']}{metric}  opened {alert['event_time']}  "
                f"[{alert.get('location') or '-'}] id={alert['alert_id'][:12]}")
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
        cfg.kafka.topic_alerts, **kafka_client.settings(cfg).python_kwargs(KafkaConsumer),
        group_id=None,
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
