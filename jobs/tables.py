"""Names of the Delta tables under the lakehouse root (DESIGN.md "Tables")."""

from __future__ import annotations

BRONZE_RAW = "bronze/sensor_raw"
SILVER_READINGS = "silver/sensor_readings"
QUARANTINE = "silver/quarantine"
SENSOR_REGISTRY = "reference/sensor_registry"
STATS_5M = "gold/sensor_stats_5m"
STATS_10M = "gold/sensor_stats_10m"
LOCATION_5M = "gold/location_stats_5m"
ALERTS = "gold/alerts"
ALERT_COUNTS_5M = "gold/alert_counts_5m"
SENSOR_STATUS = "gold/sensor_status"
PIPELINE_METRICS = "gold/pipeline_metrics"

# View names DuckDB and the dashboard expose for each table.
VIEWS: dict[str, str] = {
    "bronze_raw": BRONZE_RAW,
    "silver_readings": SILVER_READINGS,
    "quarantine": QUARANTINE,
    "sensor_registry": SENSOR_REGISTRY,
    "sensor_stats_5m": STATS_5M,
    "sensor_stats_10m": STATS_10M,
    "location_stats_5m": LOCATION_5M,
    "alerts": ALERTS,
    "alert_counts_5m": ALERT_COUNTS_5M,
    "sensor_status": SENSOR_STATUS,
    "pipeline_metrics": PIPELINE_METRICS,
}
