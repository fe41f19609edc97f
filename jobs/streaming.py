"""Helpers every streaming job shares: tables, checkpoints, idempotent Delta writes."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import StructType

logger = logging.getLogger(__name__)


def ensure_table(
    spark: SparkSession, path: Path, schema: StructType, partition_by: tuple[str, ...] = ()
) -> DeltaTable:
    """Create the Delta table empty with its declared schema unless it exists.

    A process killed while creating a table can leave a ``_delta_log`` folder with no commit
    in it; Delta then reports the table as missing and refuses to create it. Such a log holds
    nothing (no commit means no table), so it is removed and the table created. Only the job
    that owns a table calls this while nothing else writes it (the runner starts jobs one
    after another), so no concurrent creation can be mistaken for a crashed one.
    """
    log = path / "_delta_log"
    if log.is_dir() and not any(log.glob("*.json")) and not any(log.glob("*.checkpoint*")):
        logger.warning("removing the log of a table whose creation never committed: %s", path)
        shutil.rmtree(log)
    builder = DeltaTable.createIfNotExists(spark).location(str(path)).addColumns(schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    return builder.execute()


def table_exists(spark: SparkSession, path: Path) -> bool:
    return (path / "_delta_log").is_dir() and DeltaTable.isDeltaTable(spark, str(path))


def checkpoint_query_id(checkpoint: Path) -> str:
    """The id Spark stored in the checkpoint when the query first started.

    It is stable across restarts of the same checkpoint and new for a new checkpoint, which
    is what an idempotent writer's transaction app id needs: a reset checkpoint restarts batch
    ids at 0 and must not be mistaken for a replay of already-committed batches.
    """
    meta = checkpoint / "metadata"
    return json.loads(meta.read_text().splitlines()[0])["id"]


def idempotent_append(
    df: DataFrame, path: Path, *, app_id: str, batch_id: int, partition_by: tuple[str, ...] = ()
) -> None:
    """Append once per (app_id, batch_id): Delta skips a transaction version it has seen."""
    writer = (
        df.write.format("delta")
        .mode("append")
        .option("txnAppId", app_id)
        .option("txnVersion", batch_id)
    )
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(str(path))
