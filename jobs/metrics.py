"""Per-micro-batch metrics of every streaming query into the Delta table gold/pipeline_metrics.

A `StreamingQueryListener` turns each progress event into one row (`progress_record`, pure) and
only appends it to an in-memory buffer: the listener runs on Spark's listener bus thread and
must not block it. A background thread appends the buffer to the table every
`streaming.metrics_flush_s` seconds (one small Delta commit per flush, none when idle), and
`MetricsRecorder.stop()` flushes what is left after the listener bus has drained.

    recorder = start_recording(spark, cfg)
    ...                       # run queries
    recorder.stop()           # last rows are written

Latency is measured from produce time: the Kafka record timestamps a query's input carries,
reported per micro-batch by `jobs.streaming.observe_produce_time` in the progress's
``observedMetrics``. A batch commits at its progress timestamp (trigger start) plus
``durationMs.triggerExecution``; ``produce_to_commit_ms`` is that commit time minus the oldest
produce time of the batch (how long its longest-waiting record waited),
``produce_to_commit_min_ms`` minus the newest. Event time says how old the data was when it was
produced, not how long the pipeline took: ``data_age_ms`` (commit time minus the newest event
time, from the watermark's eventTime stats) is a separate figure. Tables written before these
columns existed gain them on the next append (mergeSchema); their old rows keep the data age in
``event_to_commit_latency_ms`` and readers coalesce the two (`jobs.serving.latency_columns`).
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pyspark.sql import SparkSession
from pyspark.sql.types import (
    DoubleType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from jobs.config import Config
from jobs.streaming import (
    PRODUCE_MAX_MS,
    PRODUCE_MIN_MS,
    PRODUCE_OBSERVATION,
    ProgressJsonListener,
    compact_partitions,
)
from jobs.tables import PIPELINE_METRICS

logger = logging.getLogger(__name__)

# gold/pipeline_metrics: one row per query x micro-batch. The dashboard and /metrics read
# these names (dashboard/panels.py, dashboard/metrics.py).
METRICS_SCHEMA = StructType(
    [
        StructField("query_name", StringType()),
        StructField("batch_id", LongType(), nullable=False),
        StructField("batch_time", TimestampType(), nullable=False),
        StructField("input_rows", LongType()),
        StructField("input_rows_per_second", DoubleType()),
        StructField("processed_rows_per_second", DoubleType()),
        StructField("batch_duration_ms", LongType()),
        StructField("rows_dropped_late", LongType()),
        StructField("state_rows", LongType()),
        StructField("watermark", TimestampType()),
        # Last, where mergeSchema appends them in a table of the first layout as well.
        StructField("produce_to_commit_ms", DoubleType()),
        StructField("produce_to_commit_min_ms", DoubleType()),
        StructField("data_age_ms", DoubleType()),
    ]
)
COLUMNS: tuple[str, ...] = tuple(f.name for f in METRICS_SCHEMA.fields)

# Events kept while the table cannot be written (e.g. disk full); the oldest are dropped first.
MAX_BUFFERED = 100_000


def parse_spark_time(text: str | None) -> datetime | None:
    """A progress timestamp (``2024-01-10T14:30:00.000Z``) as an aware UTC datetime."""
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


def _float(value: Any) -> float | None:
    # Spark leaves NaN/Infinity rates out of the progress JSON; keep them null, not NaN.
    if value is None:
        return None
    v = float(value)
    return v if v == v and v not in (float("inf"), float("-inf")) else None


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_ms(t: datetime) -> int:
    # Integer arithmetic: progress times have millisecond precision, and so do the results.
    return (t - _EPOCH) // timedelta(milliseconds=1)


def produce_times(progress: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """(oldest, newest) produce time in epoch ms the batch observed; None when the query has
    no produce-time observation or the batch read no row with a Kafka timestamp."""
    observed = (progress.get("observedMetrics") or {}).get(PRODUCE_OBSERVATION) or {}
    lo, hi = observed.get(PRODUCE_MIN_MS), observed.get(PRODUCE_MAX_MS)
    return (None if lo is None else int(lo)), (None if hi is None else int(hi))


def commit_time(progress: Mapping[str, Any]) -> datetime:
    """When the micro-batch committed: trigger start plus the trigger's execution time."""
    start = parse_spark_time(progress.get("timestamp"))
    if start is None:
        raise ValueError("progress without a timestamp")
    durations = progress.get("durationMs") or {}
    took = durations.get("triggerExecution", progress.get("batchDuration")) or 0
    return start + timedelta(milliseconds=int(took))


def progress_record(progress: Mapping[str, Any]) -> dict[str, Any]:
    """One gold/pipeline_metrics row from a progress event's JSON (`StreamingQueryProgress.json`).

    ``batch_time`` is the progress timestamp (trigger start). Against the batch's commit time
    (`commit_time`): ``produce_to_commit_ms`` from its oldest produce time,
    ``produce_to_commit_min_ms`` from its newest (both null without an observation or without
    Kafka timestamps in the batch), ``data_age_ms`` from its newest event time (null for
    queries without an event-time watermark).
    """
    batch_time = parse_spark_time(progress["timestamp"])
    if batch_time is None:
        raise ValueError("progress without a timestamp")
    committed_ms = _epoch_ms(commit_time(progress))
    oldest, newest = produce_times(progress)
    event_time = progress.get("eventTime") or {}
    max_event = parse_spark_time(event_time.get("max"))
    ops = progress.get("stateOperators") or []
    return {
        "query_name": progress.get("name") or str(progress.get("id")),
        "batch_id": int(progress["batchId"]),
        "batch_time": batch_time,
        "input_rows": int(progress.get("numInputRows") or 0),
        "input_rows_per_second": _float(progress.get("inputRowsPerSecond")),
        "processed_rows_per_second": _float(progress.get("processedRowsPerSecond")),
        "batch_duration_ms": int(progress.get("batchDuration") or 0),
        "rows_dropped_late": sum(int(op.get("numRowsDroppedByWatermark") or 0) for op in ops),
        "state_rows": sum(int(op.get("numRowsTotal") or 0) for op in ops),
        "watermark": parse_spark_time(event_time.get("watermark")),
        "produce_to_commit_ms": None if oldest is None else float(committed_ms - oldest),
        "produce_to_commit_min_ms": None if newest is None else float(committed_ms - newest),
        "data_age_ms": (None if max_event is None
                        else float(committed_ms - _epoch_ms(max_event))),
    }


class MetricsListener(ProgressJsonListener):
    """Buffers one record per progress event; never touches the table itself."""

    def __init__(self, recorder: MetricsRecorder) -> None:
        super().__init__()
        self._recorder = recorder

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802 - Spark's API
        logger.info("query %s started (id %s)", event.name, event.id)

    def on_progress(self, progress: dict[str, Any]) -> None:
        try:
            self._recorder.add(progress_record(progress))
        except Exception:  # a bad event must never break the listener bus
            logger.exception("cannot record a progress event")

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        if event.exception:
            logger.error("query %s terminated with: %s", event.id, event.exception)
        else:
            logger.info("query %s terminated", event.id)


class MetricsRecorder:
    """Owns the buffer, the listener and the flushing thread for one SparkSession."""

    def __init__(self, spark: SparkSession, table: Path, *, flush_s: float = 5.0,
                 compact_every: int = 0, compact_below_mb: float = 16.0) -> None:
        self.spark = spark
        self.table = table
        self.flush_s = flush_s
        # Every compact_every-th flush compacts the table's small files (one a flush).
        self.compact_every = compact_every
        self.compact_below_mb = compact_below_mb
        self._compact_session: SparkSession | None = None
        self._buffer: deque[dict[str, Any]] = deque(maxlen=MAX_BUFFERED)
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="pipeline-metrics", daemon=True)
        self.listener = MetricsListener(self)
        self.rows_written = 0
        self.flushes = 0

    def add(self, record: dict[str, Any]) -> None:
        with self._lock:
            if len(self._buffer) == self._buffer.maxlen:
                logger.warning("metrics buffer full (%d): dropping the oldest", MAX_BUFFERED)
            self._buffer.append(record)

    def start(self) -> MetricsRecorder:
        self.spark.streams.addListener(self.listener)
        self._thread.start()
        logger.info("recording micro-batch metrics to %s every %.0f s", self.table, self.flush_s)
        return self

    def _loop(self) -> None:
        while not self._stop.wait(self.flush_s):
            try:
                self.flush()
            except Exception:  # keep the rows and try again next time
                logger.exception("metrics flush to %s failed; will retry", self.table)

    def flush(self) -> int:
        """Append the buffered rows in one Delta commit; returns how many were written."""
        with self._write_lock:
            with self._lock:
                rows = list(self._buffer)
                self._buffer.clear()
            if not rows:
                return 0
            try:
                data = [tuple(r[c] for c in COLUMNS) for r in rows]
                # mergeSchema: a table of an older layout gains the new columns (its old
                # rows read them as null); columns only it has are null in these rows.
                (self.spark.createDataFrame(data, METRICS_SCHEMA).coalesce(1)
                 .write.format("delta").mode("append").option("mergeSchema", "true")
                 .save(str(self.table)))
            except Exception:
                with self._lock:
                    self._buffer.extendleft(reversed(rows))
                raise
            self.rows_written += len(rows)
            self.flushes += 1
            logger.debug("metrics: %d rows appended to %s", len(rows), self.table)
            self._compact()
            return len(rows)

    def _compact(self) -> None:
        if self.compact_every <= 0:
            return
        if self._compact_session is None:  # compaction's file-size setting stays in its own
            self._compact_session = self.spark.newSession()
        try:
            compact_partitions(self._compact_session, self.table, None,
                               batch_id=self.flushes - 1, every=self.compact_every,
                               below_mb=self.compact_below_mb)
        except Exception:  # the rows are written; the next compaction takes these files too
            logger.warning("metrics: compaction of %s failed", self.table, exc_info=True)

    def _drain_listener_bus(self, timeout_s: float) -> None:
        """Wait until Spark has delivered every pending event (the last batches' progress)."""
        try:
            bus = self.spark.sparkContext._jsc.sc().listenerBus()  # noqa: SLF001
            bus.waitUntilEmpty(int(timeout_s * 1000))
        except Exception as exc:  # best effort: a stopped context or a timeout
            logger.debug("listener bus not drained: %s", exc)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop listening and write what is buffered (call before spark.stop())."""
        self._drain_listener_bus(timeout_s)
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        try:
            self.spark.streams.removeListener(self.listener)
        except Exception as exc:
            logger.debug("listener already gone: %s", exc)
        try:
            self.flush()
        except Exception:
            logger.exception("final metrics flush to %s failed", self.table)
        logger.info("metrics recorder stopped: %d rows in %d flushes", self.rows_written,
                    self.flushes)


def start_recording(spark: SparkSession, cfg: Config) -> MetricsRecorder:
    """Register the listener on `spark` and start flushing to gold/pipeline_metrics."""
    return MetricsRecorder(spark, cfg.paths.table(PIPELINE_METRICS),
                           flush_s=cfg.streaming.metrics_flush_s,
                           compact_every=cfg.maintenance.compact_every_batches,
                           compact_below_mb=cfg.maintenance.compact_below_mb).start()
