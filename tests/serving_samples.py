"""Small, fixed gold/silver Delta tables for the serving and dashboard tests.

Written with the real SparkSession from fixed frames with fixed UTC datetimes, in the shapes
DESIGN.md "Tables" gives. `gold/alerts` gets two commits (3 rows, then 3 more) so that time
travel has an old version to return.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gold.schema import ALERT_SCHEMA
from jobs import tables
from silver.schema import QUARANTINE_SCHEMA, SILVER_SCHEMA

T0 = datetime(2024, 1, 10, 14, 0, tzinfo=UTC)
SENSORS = {
    "SENSOR_001": "Building A - Floor 1",
    "SENSOR_002": "Building A - Floor 2",
    "SENSOR_003": "Building B - Floor 1",
    "SENSOR_004": "Building B - Floor 1",
}

# (alert_id, sensor_id, alert_type, severity, minute after T0, metric, value, threshold)
ALERTS_V0 = [
    ("a-001", "SENSOR_002", "HIGH_TEMP", "WARNING", 10, "temperature", 35.0, 30.0),
    ("a-002", "SENSOR_002", "HIGH_TEMP", "WARNING", 11, "temperature", 36.5, 30.0),
    ("a-003", "SENSOR_002", "HIGH_TEMP", "CRITICAL", 12, "temperature", 41.0, 30.0),
]
ALERTS_V1 = [
    ("a-004", "SENSOR_002", "CONSECUTIVE_ALERTS", "CRITICAL", 12, "temperature", 41.0, 3.0),
    ("a-005", "SENSOR_003", "HIGH_HUMIDITY", "WARNING", 20, "humidity", 85.0, 80.0),
    ("a-006", "SENSOR_004", "SENSOR_OFFLINE", "CRITICAL", 39, None, None, None),
]


def _reading(sensor_no: int, minute: int) -> tuple[float, float, float]:
    temperature = 20.0 + sensor_no + (minute % 7) * 0.5
    if sensor_no == 2 and minute in (10, 11, 12):
        temperature = {10: 35.0, 11: 36.5, 12: 41.0}[minute]
    humidity = 50.0 + sensor_no * 3 + (minute % 5)
    if sensor_no == 3 and minute == 20:
        humidity = 85.0
    pressure = 1000.0 + sensor_no + (minute % 3) * 0.25
    return temperature, humidity, pressure


def silver_rows() -> list[tuple]:
    rows = []
    for n, (sensor, location) in enumerate(SENSORS.items(), start=1):
        minutes = range(29) if sensor == "SENSOR_004" else range(30)
        for minute in minutes:
            t = T0 + timedelta(minutes=minute)
            temp, hum, pres = _reading(n, minute)
            building, floor = location.split(" - ")
            alert_types = [a[2] for a in ALERTS_V0 + ALERTS_V1
                           if a[1] == sensor and a[4] == minute and a[6] is not None]
            rows.append((
                sensor, t, temp, hum, pres, location, t.date(), t.hour, building,
                int(floor.split()[-1]), f"R{n}", "north", bool(alert_types),
                "WARNING" if alert_types else None, alert_types, n % 2, minute,
                t, t + timedelta(seconds=1), t + timedelta(seconds=2),
            ))
    return rows


# Minute after T0 at which each alert's episode ended (resolved_at); the others are open.
# SENSOR_002's HIGH_TEMP episode (a-001..a-003) and its CONSECUTIVE_ALERTS end at minute 13,
# SENSOR_003's humidity at 21; SENSOR_004's SENSOR_OFFLINE is the one open episode.
RESOLVED = {"a-001": 13, "a-002": 13, "a-003": 13, "a-004": 13, "a-005": 21}


def _alert_rows(alerts: list[tuple]) -> list[tuple]:
    return [
        (aid, sensor, SENSORS[sensor], atype, sev, T0 + timedelta(minutes=m),
         T0 + timedelta(minutes=m, seconds=3), metric, value, threshold, f"{atype} on {sensor}",
         T0 + timedelta(minutes=RESOLVED[aid]) if aid in RESOLVED else None)
        for aid, sensor, atype, sev, m, metric, value, threshold in alerts
    ]


QUARANTINE_REASONS = [
    ["OUT_OF_RANGE:temperature"],
    ["OUT_OF_RANGE:temperature", "OUT_OF_RANGE:humidity"],
    ["MALFORMED_JSON"],
    ["MISSING_FIELD:sensor_id", "BAD_TIMESTAMP"],
    ["OUT_OF_RANGE:temperature"],
]

METRIC_QUERIES = ("bronze", "silver", "gold_alerts")
# gold/pipeline_metrics as a user's lake holds it after an upgrade: batches 0-4 written in the
# first layout (data age under its old name, no produce times), 5-9 appended in the current
# one, which evolves the table (mergeSchema) as the metrics recorder does.
LEGACY_BATCHES = 5


def metrics_rows() -> list[dict]:
    """Every row, by column name; the figures a layout does not have are None."""
    rows = []
    for q, query in enumerate(METRIC_QUERIES):
        for batch in range(10):
            t = T0 + timedelta(minutes=30, seconds=5 * batch)
            legacy = batch < LEGACY_BATCHES
            rows.append({
                "query_name": query, "batch_id": batch, "batch_time": t,
                "input_rows": 1000 + 100 * batch + q,
                "input_rows_per_second": 200.0 + 10 * batch + q,
                "processed_rows_per_second": 250.0 + 10 * batch + q,
                "batch_duration_ms": 400 + 10 * batch + q,
                "rows_dropped_late": batch % 3 if query == "silver" else 0,
                "state_rows": 10 * q + batch,
                "watermark": t - timedelta(minutes=10),
                "produce_to_commit_ms": None if legacy else 900.0 + 20 * batch + 10 * q,
                "produce_to_commit_min_ms": None if legacy else 300.0 + 20 * batch + 10 * q,
                "data_age_ms": 1500.0 + 50 * batch + 100 * q,
            })
    return rows


LEGACY_METRICS_DDL = (
    "query_name STRING, batch_id LONG, batch_time TIMESTAMP, input_rows LONG, "
    "input_rows_per_second DOUBLE, processed_rows_per_second DOUBLE, batch_duration_ms LONG, "
    "event_to_commit_latency_ms DOUBLE, rows_dropped_late LONG, state_rows LONG, "
    "watermark TIMESTAMP"
)
METRICS_DDL = (
    "query_name STRING, batch_id LONG, batch_time TIMESTAMP, input_rows LONG, "
    "input_rows_per_second DOUBLE, processed_rows_per_second DOUBLE, batch_duration_ms LONG, "
    "rows_dropped_late LONG, state_rows LONG, watermark TIMESTAMP, "
    "produce_to_commit_ms DOUBLE, produce_to_commit_min_ms DOUBLE, data_age_ms DOUBLE"
)


def _ddl_columns(ddl: str) -> list[str]:
    return [part.split()[0] for part in ddl.split(",")]


def legacy_metrics_tuple(row: dict) -> tuple:
    return tuple(row["data_age_ms"] if c == "event_to_commit_latency_ms" else row[c]
                 for c in _ddl_columns(LEGACY_METRICS_DDL))


def metrics_tuple(row: dict) -> tuple:
    return tuple(row[c] for c in _ddl_columns(METRICS_DDL))


STATUS_DDL = (
    "sensor_id STRING, location STRING, last_event_time TIMESTAMP, last_temperature DOUBLE, "
    "last_humidity DOUBLE, last_pressure DOUBLE, status STRING, open_alerts INT, "
    "updated_at TIMESTAMP"
)


def write_sample_tables(spark, root: Path) -> None:  # noqa: ANN001 - SparkSession
    """Write every table the dashboard reads under `root` (a lakehouse root)."""
    from pyspark.sql import functions as F

    def save(df, name: str, mode: str = "overwrite") -> None:  # noqa: ANN001
        df.write.format("delta").mode(mode).save(str(root / name))

    silver = spark.createDataFrame(silver_rows(), SILVER_SCHEMA)
    save(silver, tables.SILVER_READINGS)

    save(spark.createDataFrame(_alert_rows(ALERTS_V0), ALERT_SCHEMA), tables.ALERTS)
    save(spark.createDataFrame(_alert_rows(ALERTS_V1), ALERT_SCHEMA), tables.ALERTS, "append")

    w = F.window("event_time", "5 minutes")
    measures = []
    for m in ("temperature", "humidity", "pressure"):
        measures += [F.avg(m).alias(f"avg_{m}"), F.min(m).alias(f"min_{m}"),
                     F.max(m).alias(f"max_{m}"), F.stddev(m).alias(f"stddev_{m}")]
    stats = silver.groupBy("sensor_id", w).agg(
        F.count("*").alias("readings"), *measures,
        *[F.percentile_approx("temperature", p).alias(f"p{int(p * 100)}_temperature")
          for p in (0.5, 0.95, 0.99)],
    )
    save(stats.select("sensor_id", F.col("window.start").alias("window_start"),
                      F.col("window.end").alias("window_end"), *stats.columns[2:]),
         tables.STATS_5M)

    loc = silver.groupBy("location", w).agg(
        F.count("*").alias("readings"), F.countDistinct("sensor_id").alias("sensors"),
        *[f(m).alias(f"{n}_{m}") for m in ("temperature", "humidity", "pressure")
          for n, f in (("min", F.min), ("max", F.max), ("avg", F.avg))],
    )
    save(loc.select("location", F.col("window.start").alias("window_start"),
                    F.col("window.end").alias("window_end"), *loc.columns[2:]),
         tables.LOCATION_5M)

    alerts = spark.createDataFrame(_alert_rows(ALERTS_V0 + ALERTS_V1), ALERT_SCHEMA)
    counts = alerts.groupBy(F.window("event_time", "5 minutes"), "alert_type", "severity").agg(
        F.count("*").alias("alerts"))
    save(counts.select(F.col("window.start").alias("window_start"),
                       F.col("window.end").alias("window_end"), "alert_type", "severity",
                       "alerts"), tables.ALERT_COUNTS_5M)

    status = []
    for n, (sensor, location) in enumerate(SENSORS.items(), start=1):
        last = 28 if sensor == "SENSOR_004" else 29
        temp, hum, pres = _reading(n, last)
        status.append((sensor, location, T0 + timedelta(minutes=last), temp, hum, pres,
                       "OFFLINE" if sensor == "SENSOR_004" else "ONLINE",
                       {"SENSOR_002": 4, "SENSOR_003": 1, "SENSOR_004": 1}.get(sensor, 0),
                       T0 + timedelta(minutes=40)))
    save(spark.createDataFrame(status, STATUS_DDL), tables.SENSOR_STATUS)

    quarantine = [
        (f"k{i}", f"raw-{i}", reasons, None if "MISSING_FIELD:sensor_id" in reasons
         else "SENSOR_001", "iot-sensors", 0, 100 + i, T0 + timedelta(minutes=i),
         T0 + timedelta(minutes=i, seconds=1))
        for i, reasons in enumerate(QUARANTINE_REASONS)
    ]
    save(spark.createDataFrame(quarantine, QUARANTINE_SCHEMA), tables.QUARANTINE)

    rows = metrics_rows()
    save(spark.createDataFrame([legacy_metrics_tuple(r) for r in rows
                                if r["batch_id"] < LEGACY_BATCHES], LEGACY_METRICS_DDL),
         tables.PIPELINE_METRICS)
    (spark.createDataFrame([metrics_tuple(r) for r in rows if r["batch_id"] >= LEGACY_BATCHES],
                           METRICS_DDL)
     .write.format("delta").mode("append").option("mergeSchema", "true")
     .save(str(root / tables.PIPELINE_METRICS)))
