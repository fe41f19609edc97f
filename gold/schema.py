"""Schemas of gold tables whose shape is a contract with consumers, declared once."""

from __future__ import annotations

from pyspark.sql.types import DoubleType, StringType, StructField, StructType, TimestampType

from gold.anomaly import ALERT_TYPE as ANOMALY

ALERT_TYPES: tuple[str, ...] = (
    "HIGH_TEMP", "LOW_TEMP", "HIGH_HUMIDITY", "RAPID_CHANGE", "DYNAMIC_THRESHOLD",
    "ZSCORE_OUTLIER", "CONSECUTIVE_ALERTS", "RISING_TREND", "SENSOR_OFFLINE", "SENSOR_RECOVERED",
    ANOMALY,
)
STATIC_ALERT_TYPES: tuple[str, ...] = ("HIGH_TEMP", "LOW_TEMP", "HIGH_HUMIDITY")
SEVERITIES: tuple[str, ...] = ("INFO", "WARNING", "CRITICAL")

# gold/alerts: one row per alert; alert_id = hash(sensor_id, alert_type, metric, event_time).
# resolved_at (cadence-aware profiles): when the alert's episode ended (the event time of the
# first reading that no longer met the condition); null while it is open, and always in the
# seed profile (no lifecycle). Added after the others: older tables gain it (jobs.alerts_job).
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
        StructField("resolved_at", TimestampType()),
    ]
)
RESOLVED_AT = "resolved_at"
