"""Schemas of the wire format and of the bronze table, declared once."""

from __future__ import annotations

from pyspark.sql.types import (
    BinaryType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# One reading as sensors publish it (DESIGN.md). Parsed with from_json(..., READING_SCHEMA);
# fields are read as strings first by silver so that a wrong type is a reason, not a null.
READING_FIELDS: tuple[str, ...] = (
    "sensor_id", "timestamp", "temperature", "humidity", "pressure", "location",
)
NUMERIC_FIELDS: tuple[str, ...] = ("temperature", "humidity", "pressure")

READING_SCHEMA = StructType(
    [
        StructField("sensor_id", StringType()),
        StructField("timestamp", StringType()),
        StructField("temperature", DoubleType()),
        StructField("humidity", DoubleType()),
        StructField("pressure", DoubleType()),
        StructField("location", StringType()),
    ]
)

# bronze/sensor_raw: one row per source record, nothing dropped, value kept as received.
# key and value are text that is always valid UTF-8, so that every reader (DuckDB refuses a
# Parquet string that is not) can scan them. A key or value whose bytes are not UTF-8 reads
# there with U+FFFD for each bad sequence, and its exact bytes are in key_bytes / value_bytes,
# which are null otherwise (and so cost nothing for well-formed records).
BRONZE_SCHEMA = StructType(
    [
        StructField("key", StringType()),
        StructField("value", StringType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("kafka_timestamp", TimestampType()),
        StructField("ingested_at", TimestampType()),
        StructField("ingest_date", DateType()),
        StructField("key_bytes", BinaryType()),
        StructField("value_bytes", BinaryType()),
    ]
)
