"""The bronze query: source (Kafka, watched files or a socket) -> bronze/sensor_raw, append.

Exactly-once from Kafka: offsets live in the checkpoint, and each micro-batch is appended once
by `jobs.streaming.idempotent_write` under the query id, the id the Delta sink used for its
transaction ids before (so a table it wrote goes on without a batch written twice). The
Delta sink looked its transaction id up on every batch, which in Delta 4.4 reconstructs the
table state; the commit's marker is read from the latest commits instead.
"""

from __future__ import annotations

import functools
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.streaming import StreamingQuery

from bronze.schema import BRONZE_SCHEMA
from bronze.transform import from_kafka, from_lines
from jobs import kafka_client
from jobs.config import Config, MaintenanceConfig
from jobs.streaming import (
    BatchFunction,
    checkpoint_query_id,
    compact_partitions,
    ensure_table,
    idempotent_write,
    in_few_tasks,
    observe_produce_time,
    side_by_side,
    stoppable,
)
from jobs.tables import BRONZE_RAW

logger = logging.getLogger(__name__)

QUERY_NAME = "bronze"


def kafka_source(spark: SparkSession, cfg: Config, *, rate_limit: bool = True) -> DataFrame:
    """The input topic as a stream in the bronze shape (every query that reads Kafka).

    ``rate_limit``: at most streaming.max_offsets_per_trigger per micro-batch (Real-Time
    Mode, which has no micro-batches to bound, takes none).
    """
    reader = (
        spark.readStream.format("kafka")
        .options(**kafka_client.settings(cfg).spark_options())
        .option("subscribe", cfg.kafka.topic_in)
        .option("startingOffsets", cfg.streaming.starting_offsets)
    )
    if rate_limit:
        reader = reader.option("maxOffsetsPerTrigger", cfg.streaming.max_offsets_per_trigger)
    return from_kafka(reader.load())


def read_source(spark: SparkSession, cfg: Config) -> DataFrame:
    """The configured source as a stream in the bronze shape."""
    s = cfg.streaming
    if s.source == "kafka":
        return kafka_source(spark, cfg)
    if s.source == "files":
        folder = s.files_dir or cfg.paths.data_dir / "incoming"
        folder.mkdir(parents=True, exist_ok=True)
        # Only complete files: the generator writes under a temp name and renames atomically.
        raw = (
            spark.readStream.format("text")
            .option("maxFilesPerTrigger", s.max_files_per_trigger)
            .option("pathGlobFilter", "*.jsonl")
            .load(str(folder))
        )
        return from_lines(raw, source=f"files:{folder.name}")
    if s.source == "socket":
        raw = (
            spark.readStream.format("socket")
            .option("host", s.socket_host)
            .option("port", s.socket_port)
            .load()
        )
        return from_lines(raw, source=f"socket:{s.socket_host}:{s.socket_port}")
    raise ValueError(f"streaming.source must be kafka, files or socket, not {s.source!r}")


def write_batch(batch: DataFrame, batch_id: int, *, path: Path, checkpoint: Path,
                tasks: int, maintenance: MaintenanceConfig | None = None,
                then: BatchFunction | None = None) -> None:
    """Append the micro-batch to bronze once; with ``then`` (silver's writer, when silver runs
    in this query), hand it the same rows, read from the source once for both, side by side
    with the append: the two writes are independent and each is idempotent. With
    ``maintenance``, every few batches the append is followed by a compaction of the
    partitions it writes to (today's and yesterday's, by processing time)."""
    rows = in_few_tasks(batch, tasks)
    if then is not None:
        # Read once for both writes: a second read of the source would also count the
        # batch's input rows twice in the query's progress.
        rows = rows.localCheckpoint(eager=True)

    def bronze() -> None:
        # A bronze table made before key_bytes/value_bytes existed gains them on its next
        # commit (new nullable columns only; nothing already written changes).
        idempotent_write(rows, path, app_id=checkpoint_query_id(checkpoint),
                         batch_id=batch_id, partition_by=("ingest_date",), merge_schema=True)
        if maintenance is not None:
            today = datetime.now(UTC).date()
            compact_partitions(rows.sparkSession, path, "ingest_date",
                               (today - timedelta(days=1), today), batch_id=batch_id,
                               every=maintenance.compact_every_batches,
                               below_mb=maintenance.compact_below_mb)

    if then is None:
        bronze()
    else:
        side_by_side(batch.sparkSession, bronze, functools.partial(then, rows, batch_id))


def start(spark: SparkSession, cfg: Config, *, trigger: dict,
          then: BatchFunction | None = None) -> StreamingQuery:
    """The bronze query; with ``then``, each micro-batch also goes to it, beside bronze's
    append (`jobs.silver_job.start_with_bronze`)."""
    path = cfg.paths.table(BRONZE_RAW)
    # Created here, before the query runs, so that a reader of its stream started next never
    # races the sink's first commit to create the same table.
    ensure_table(spark, path, BRONZE_SCHEMA, ("ingest_date",))
    checkpoint = cfg.paths.checkpoint(QUERY_NAME)
    query = (
        observe_produce_time(read_source(spark, cfg))
        .writeStream.queryName(QUERY_NAME)
        .foreachBatch(stoppable(functools.partial(
            write_batch, path=path, checkpoint=checkpoint,
            tasks=cfg.spark.shuffle_partitions, maintenance=cfg.maintenance, then=then)))
        .option("checkpointLocation", str(checkpoint))
        .trigger(**trigger)
        .start()
    )
    logger.info("bronze query started: %s -> %s", cfg.streaming.source, path)
    return query
