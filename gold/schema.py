"""Schemas of gold tables whose shape is a contract with consumers, declared once."""

from __future__ import annotations

from pyspark.sql.types import DoubleType, StringType, StructField, StructType, TimestampType

ALERT_TYPES: tuple[str, ...] = (
    "HIGH_TEMP", "LOW_TEMP", "HIGH_HUMIDITY", "RAPID_CHANGE", "DYNAMIC_THRESHOLD",
    "ZSCORE_OUTLIER", "CONSECUTIVE_ALERTS", "RISING_TREND", "SENSOR_OFFLINE", "SENSOR_RECOVERED",
)
STATIC_ALERT_TYPES: tuple[str, ...] = ("HIGH_TEMP", "LOW_TEMP", "HIGH_HUMIDITY")
SEVERITIES: tuple[str, ...] = ("INFO", "WARNING", "CRITICAL")

# gold/alerts: one row per alert; alert_id = hash(sensor_id, alert_type, metric, event_time).
ALERT_SCHEMA = StructType(
    [
        StructField("alert_id", StringType(), nullable=False),
        StructField("sensor_id", StringType(), nullable=False),
        StructField("location", StringType()),
        StructField("alert_type", StringType(), nullable=False),
        StructField("severity", StringType(), nullable=False),
        StructField("event_time", TimestampType(), nullable=False),
        StructField("detected_at", TimestampType()),
        StructField("metric", StringType()),
        StructField("value", DoubleType()),
        StructField("threshold", DoubleType()),
        StructField("details", StringType()),
    ]
)
