"""Schemas of the silver tables and of the sensor registry, declared once."""

from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BooleanType,
    DateType,
    DoubleType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# The sensor registry (written by the generator as CSV, loaded by silver as a static
# dimension). Unknown sensors still flow through with these columns null.
REGISTRY_SCHEMA = StructType(
    [
        StructField("sensor_id", StringType(), nullable=False),
        StructField("location", StringType()),
        StructField("building", StringType()),
        StructField("floor", IntegerType()),
        StructField("room", StringType()),
        StructField("zone", StringType()),
    ]
)
REGISTRY_COLUMNS: tuple[str, ...] = ("building", "floor", "room", "zone")

# silver/sensor_readings: one row per valid, de-duplicated reading.
SILVER_SCHEMA = StructType(
    [
        StructField("sensor_id", StringType(), nullable=False),
        StructField("event_time", TimestampType(), nullable=False),
        StructField("temperature", DoubleType()),
        StructField("humidity", DoubleType()),
        StructField("pressure", DoubleType()),
        StructField("location", StringType()),
        StructField("event_date", DateType()),
        StructField("event_hour", IntegerType()),
        StructField("building", StringType()),
        StructField("floor", IntegerType()),
        StructField("room", StringType()),
        StructField("zone", StringType()),
        StructField("is_alert", BooleanType()),
        StructField("severity", StringType()),
        StructField("alert_types", ArrayType(StringType())),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("kafka_timestamp", TimestampType()),
        StructField("ingested_at", TimestampType()),
        StructField("processed_at", TimestampType()),
    ]
)

# silver/quarantine: one row per rejected record, with every reason that applies.
QUARANTINE_SCHEMA = StructType(
    [
        StructField("key", StringType()),
        StructField("value", StringType()),
        StructField("reasons", ArrayType(StringType()), nullable=False),
        StructField("sensor_id", StringType()),
        StructField("topic", StringType()),
        StructField("partition", IntegerType()),
        StructField("offset", LongType()),
        StructField("ingested_at", TimestampType()),
        StructField("quarantined_at", TimestampType()),
    ]
)

# What silver's JVM reading parser (silver/jvm/ReadingJson.java) returns for one record value:
# whether it is malformed, the reading fields that are JSON strings (texts) and numbers (as
# doubles, non-finite for NaN/Infinity), and per field its JSON kind (PARSED_KIND_*). Same
# fields in the same order as the Java code builds them.
PARSED_KIND_ABSENT, PARSED_KIND_TEXT, PARSED_KIND_NUMBER, PARSED_KIND_OTHER = 0, 1, 2, 3
_PARSED_TEXTS = ("sensor_id", "timestamp", "location")
_PARSED_NUMBERS = ("temperature", "humidity", "pressure")
PARSED_READING_SCHEMA = StructType(
    [StructField("malformed", BooleanType(), nullable=False)]
    + [StructField(f, StringType()) for f in _PARSED_TEXTS]
    + [StructField(f, DoubleType()) for f in _PARSED_NUMBERS]
    + [StructField(f"kind_{f}", IntegerType(), nullable=False)
       for f in (*_PARSED_TEXTS, *_PARSED_NUMBERS)]
)
