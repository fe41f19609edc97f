"""Bronze: source records -> the raw table shape. Nothing is parsed, filtered or dropped here."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from bronze.schema import BRONZE_SCHEMA


def _ingest_columns(ingested_at: Column) -> list[Column]:
    return [ingested_at.alias("ingested_at"), F.to_date(ingested_at).alias("ingest_date")]


def from_kafka(df: DataFrame) -> DataFrame:
    """Kafka source rows -> BRONZE_SCHEMA.

    Keeps key and value as UTF-8 strings (invalid bytes become U+FFFD, the record is kept),
    the Kafka coordinates and timestamp; adds ``ingested_at`` and ``ingest_date``.
    """
    now = F.current_timestamp()
    return df.select(
        F.col("key").cast("string").alias("key"),
        F.col("value").cast("string").alias("value"),
        F.col("topic"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("long").alias("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        *_ingest_columns(now),
    )


def from_lines(df: DataFrame, *, source: str) -> DataFrame:
    """Text-line sources (watched files, a TCP socket) -> BRONZE_SCHEMA.

    ``df`` has one string column ``value`` (one JSON record per line); ``source`` names where it
    came from and lands in ``topic``. Kafka-only columns are null.
    """
    now = F.current_timestamp()
    return df.select(
        F.lit(None).cast("string").alias("key"),
        F.col("value").cast("string").alias("value"),
        F.lit(source).alias("topic"),
        F.lit(None).cast("int").alias("partition"),
        F.lit(None).cast("long").alias("offset"),
        F.lit(None).cast("timestamp").alias("kafka_timestamp"),
        *_ingest_columns(now),
    )


BRONZE_COLUMNS = tuple(f.name for f in BRONZE_SCHEMA.fields)
