"""Bronze: source records -> the raw table shape. Nothing is parsed, filtered or dropped here."""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from bronze.schema import BRONZE_SCHEMA


def _ingest_columns(ingested_at: Column) -> list[Column]:
    return [ingested_at.alias("ingested_at"), F.to_date(ingested_at).alias("ingest_date")]


def _text(raw: Column, name: str) -> tuple[Column, Column]:
    """(``name`` as valid UTF-8 text, ``name_bytes``: the exact bytes when not UTF-8, or null).

    A cast to string does not decode: it keeps the bytes, valid UTF-8 or not. Such a string
    would make the column unreadable for DuckDB, so the text gets U+FFFD for each bad sequence
    and the original bytes are kept beside it.
    """
    as_string = raw.cast("string")
    return (F.make_valid_utf8(as_string).alias(name),
            F.when(~F.is_valid_utf8(as_string), as_string.cast("binary")).alias(f"{name}_bytes"))


def from_kafka(df: DataFrame) -> DataFrame:
    """Kafka source rows -> BRONZE_SCHEMA.

    Keeps key and value as text, with their exact bytes in key_bytes / value_bytes when those
    are not UTF-8 (silver quarantines such a value); the Kafka coordinates and timestamp; adds
    ``ingested_at`` and ``ingest_date``.
    """
    now = F.current_timestamp()
    key, key_bytes = _text(F.col("key"), "key")
    value, value_bytes = _text(F.col("value"), "value")
    return df.select(
        key,
        value,
        F.col("topic"),
        F.col("partition").cast("int").alias("partition"),
        F.col("offset").cast("long").alias("offset"),
        F.col("timestamp").alias("kafka_timestamp"),
        *_ingest_columns(now),
        key_bytes,
        value_bytes,
    )


def from_lines(df: DataFrame, *, source: str) -> DataFrame:
    """Text-line sources (watched files, a TCP socket) -> BRONZE_SCHEMA.

    ``df`` has one string column ``value`` (one JSON record per line); ``source`` names where it
    came from and lands in ``topic``. Kafka-only columns are null.
    """
    now = F.current_timestamp()
    value, value_bytes = _text(F.col("value"), "value")
    return df.select(
        F.lit(None).cast("string").alias("key"),
        value,
        F.lit(source).alias("topic"),
        F.lit(None).cast("int").alias("partition"),
        F.lit(None).cast("long").alias("offset"),
        F.lit(None).cast("timestamp").alias("kafka_timestamp"),
        *_ingest_columns(now),
        F.lit(None).cast("binary").alias("key_bytes"),
        value_bytes,
    )


BRONZE_COLUMNS = tuple(f.name for f in BRONZE_SCHEMA.fields)
