"""`lakehouse status`: broker, input-topic lag, each query's last batch, table versions and rows.

No Spark: the lag compares the topic's end offsets (kafka-python) with the offsets the bronze
query has committed (its checkpoint's ``offsets/<batch>`` file of the newest batch that also
has a ``commits/<batch>`` file); the rest is read from the Delta logs and through DuckDB.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from jobs import broker, kafka_client
from jobs.config import Config
from jobs.tables import VIEWS

logger = logging.getLogger(__name__)

BRONZE_QUERY = "bronze"


@dataclass(frozen=True)
class PartitionLag:
    partition: int
    end_offset: int
    committed: int | None  # next offset bronze will read; None: bronze has not read it yet

    @property
    def lag(self) -> int:
        return self.end_offset - (self.committed or 0)


@dataclass(frozen=True)
class QueryBatch:
    query_name: str
    batch_id: int
    batch_time: datetime
    input_rows: int
    processed_rows_per_second: float | None
    batch_duration_ms: int | None
    produce_to_commit_ms: float | None  # from the oldest record's Kafka timestamp
    produce_to_commit_min_ms: float | None
    data_age_ms: float | None  # from the newest event time: event-time lag, not latency


@dataclass(frozen=True)
class TableState:
    view: str
    table: str
    version: int | None  # None: the table does not exist yet
    rows: int | None


@dataclass
class Status:
    broker: str
    broker_up: bool
    topic: str
    lag: list[PartitionLag] = field(default_factory=list)
    lag_error: str | None = None
    bronze_batch: int | None = None
    pipeline_pid: int | None = None
    queries: list[QueryBatch] = field(default_factory=list)
    tables: list[TableState] = field(default_factory=list)

    @property
    def total_lag(self) -> int:
        return sum(p.lag for p in self.lag)

    def to_json(self) -> str:
        out: dict[str, Any] = asdict(self)
        out["total_lag"] = self.total_lag
        for p, raw in zip(out["lag"], self.lag, strict=True):
            p["lag"] = raw.lag
        return json.dumps(out, default=str, indent=2)

    def describe(self) -> str:
        lines = [self.broker]
        pipe = f"running (pid {self.pipeline_pid})" if self.pipeline_pid else "not running"
        lines.append(f"pipeline: {pipe}")
        if self.lag_error:
            lines.append(f"lag of {self.topic}: unknown ({self.lag_error})")
        elif self.lag:
            batch = "no batch yet" if self.bronze_batch is None else f"batch {self.bronze_batch}"
            lines.append(f"lag of {self.topic} (bronze {batch}): {self.total_lag} messages")
            for p in self.lag:
                committed = "-" if p.committed is None else str(p.committed)
                lines.append(f"  partition {p.partition}: end {p.end_offset}  "
                             f"bronze {committed}  lag {p.lag}")
        lines.append("queries (last batch):")
        if not self.queries:
            lines.append("  none recorded yet (gold/pipeline_metrics)")
        for q in self.queries:
            rate = q.processed_rows_per_second
            latency, age = q.produce_to_commit_ms, q.data_age_ms
            lines.append(
                f"  {q.query_name:<18} batch {q.batch_id:<6} at {q.batch_time:%Y-%m-%d %H:%M:%S}"
                f"  {q.input_rows} rows  {0 if rate is None else rate:.0f} rows/s"
                f"  {q.batch_duration_ms or 0} ms"
                + ("" if latency is None else f"  produce->commit {latency / 1000:.1f} s")
                + ("" if age is None else f"  data age {age / 1000:.1f} s"))
        lines.append("tables:")
        for t in self.tables:
            state = ("not created yet" if t.version is None
                     else f"version {t.version:<6} {t.rows} rows")
            lines.append(f"  {t.table:<26} {state}")
        return "\n".join(lines)


def _latest_batch(folder: Path) -> int | None:
    if not folder.is_dir():
        return None
    ids = [int(p.name) for p in folder.iterdir() if p.name.isdigit()]
    return max(ids) if ids else None


def committed_offsets(checkpoint: Path, topic: str) -> tuple[int | None, dict[int, int]]:
    """(batch id, partition -> next offset) of the newest committed batch of a Kafka query.

    A Spark offsets file is ``v1``, a metadata JSON line, then one JSON line per source:
    ``{"<topic>": {"<partition>": <offset>, ...}}``.
    """
    last_commit = _latest_batch(checkpoint / "commits")
    offsets_dir = checkpoint / "offsets"
    if last_commit is None or not offsets_dir.is_dir():
        return None, {}
    batches = [int(p.name) for p in offsets_dir.iterdir()
               if p.name.isdigit() and int(p.name) <= last_commit]
    if not batches:
        return None, {}
    batch = max(batches)
    out: dict[int, int] = {}
    for line in (offsets_dir / str(batch)).read_text().splitlines()[2:]:
        line = line.strip()
        if not line.startswith("{"):
            continue
        for p, off in (json.loads(line).get(topic) or {}).items():
            out[int(p)] = int(off)
    return batch, out


def end_offsets(cfg: Config, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_client.settings(cfg).python_kwargs(KafkaConsumer),
                             request_timeout_ms=10_000,
                             enable_auto_commit=False)
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            raise LookupError(f"topic {topic} does not exist (lakehouse topics create)")
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        return {tp.partition: off for tp, off in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def _pipeline_pid(cfg: Config) -> int | None:
    try:
        pid = int((cfg.paths.run / "pipeline.pid").read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        return None
    except PermissionError:
        pass
    return pid


def _table_version(path: Path) -> int | None:
    log = path / "_delta_log"
    if not log.is_dir():
        return None
    versions = [int(p.name[:20]) for p in log.iterdir()
                if p.name.endswith(".json") and p.name[:20].isdigit()]
    return max(versions) if versions else None


def collect(cfg: Config) -> Status:
    """Everything `lakehouse status` shows."""
    from jobs import serving

    b = broker.status(cfg)
    st = Status(broker=b.describe(), broker_up=b.reachable, topic=cfg.kafka.topic_in,
                pipeline_pid=_pipeline_pid(cfg))
    if b.reachable:
        try:
            ends = end_offsets(cfg, cfg.kafka.topic_in)
            st.bronze_batch, done = committed_offsets(cfg.paths.checkpoint(BRONZE_QUERY),
                                                      cfg.kafka.topic_in)
            st.lag = [PartitionLag(p, end, done.get(p)) for p, end in sorted(ends.items())]
        except Exception as exc:  # noqa: BLE001 - status reports, it does not fail
            st.lag_error = str(exc)
    else:
        st.lag_error = "broker down"
    lake = serving.Lakehouse(cfg)
    try:
        for view, table in VIEWS.items():
            path = cfg.paths.table(table)
            version = _table_version(path) if lake.has(view) else None
            rows = None
            if version is not None:
                rows = lake.execute(f'SELECT count(*) FROM "{view}"').rows[0][0]
            st.tables.append(TableState(view, table, version, rows))
        if lake.has("pipeline_metrics"):
            res = lake.execute(
                "SELECT query_name, batch_id, batch_time, input_rows,"
                " CAST(processed_rows_per_second AS DOUBLE), batch_duration_ms,"
                f" {serving.latency_columns(lake)}"
                " FROM pipeline_metrics QUALIFY row_number() OVER"
                " (PARTITION BY query_name ORDER BY batch_time DESC, batch_id DESC) = 1"
                " ORDER BY query_name")
            st.queries = [QueryBatch(*row) for row in res.rows]
    finally:
        lake.close()
    return st
