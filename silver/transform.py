"""Silver: parse, validate, de-duplicate and enrich bronze records. Pure DataFrame -> DataFrame.

Every bronze record ends in exactly one of: a valid reading (silver), a quarantine row with
every reason that applies, or a duplicate of a valid reading already kept.
"""

from __future__ import annotations

from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from bronze.schema import NUMERIC_FIELDS, READING_FIELDS
from jobs.config import AlertsConfig, ValidationConfig
from silver.schema import QUARANTINE_SCHEMA, REGISTRY_COLUMNS, SILVER_SCHEMA

CORRUPT = "_corrupt_record"
# Every field read as a string first: a wrong JSON type becomes a reason code instead of a null
# that would look like a missing field. Numbers keep their literal text.
_RAW_SCHEMA = StructType(
    [StructField(f, StringType()) for f in READING_FIELDS] + [StructField(CORRUPT, StringType())]
)
_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT}

DEDUP_KEYS: tuple[str, ...] = ("sensor_id", "event_time")


def _reason_if(condition: Column, code: str) -> Column:
    return F.when(condition, F.lit(code))


def parse(df: DataFrame, *, cfg: ValidationConfig) -> DataFrame:
    """Bronze rows -> bronze columns plus typed reading fields and ``reasons`` (array<string>).

    Adds sensor_id, event_time (null when not usable), temperature, humidity, pressure,
    location and reasons; an empty ``reasons`` means the record is valid. Codes: MALFORMED_JSON,
    MISSING_FIELD:<f>, BAD_TYPE:<f>, OUT_OF_RANGE:<f>, BAD_TIMESTAMP (DESIGN.md "Validation"):
    a timestamp is bad when it does not parse, lies before ``min_event_time`` or more than
    ``max_future`` ahead of processing time.
    """
    raw = F.from_json(F.col("value"), _RAW_SCHEMA, _JSON_OPTIONS)
    parsed = df.withColumn("_raw", raw)
    # A JSON object starts with "{"; anything else (arrays, scalars, text) is malformed, as is
    # what the parser flags as corrupt.
    malformed = (
        F.col("value").isNull()
        | ~F.ltrim(F.col("value")).startswith("{")
        | F.col("_raw").isNull()
        | F.col(f"_raw.{CORRUPT}").isNotNull()
    )
    fields = {f: F.when(~malformed, F.col(f"_raw.{f}")) for f in READING_FIELDS}

    reasons: list[Column] = [_reason_if(malformed, "MALFORMED_JSON")]
    for f in READING_FIELDS:
        value = fields[f]
        empty = value.isNull() | (F.trim(value) == "") if f == "sensor_id" else value.isNull()
        reasons.append(_reason_if(~malformed & empty, f"MISSING_FIELD:{f}"))

    typed: dict[str, Column] = {}
    for f in NUMERIC_FIELDS:
        number = fields[f].try_cast("double")
        typed[f] = number
        bad_type = fields[f].isNotNull() & number.isNull()
        low, high = cfg.ranges()[f]
        # NaN/Infinity are not JSON numbers and fail the cast (BAD_TYPE); a "NaN" string that
        # did cast would still never be in range.
        out = number.isNotNull() & (F.isnan(number) | (number < low) | (number > high))
        reasons += [_reason_if(bad_type, f"BAD_TYPE:{f}"), _reason_if(out, f"OUT_OF_RANGE:{f}")]

    event_time = fields["timestamp"].try_cast("timestamp")
    too_far = event_time > F.current_timestamp() + F.expr(f"INTERVAL {cfg.max_future}")
    too_old = event_time < F.lit(datetime.fromisoformat(cfg.min_event_time))
    bad_ts = fields["timestamp"].isNotNull() & (event_time.isNull() | too_far | too_old)
    reasons.append(_reason_if(bad_ts, "BAD_TIMESTAMP"))

    return parsed.select(
        *df.columns,
        F.trim(fields["sensor_id"]).alias("sensor_id"),
        F.when(~bad_ts, event_time).alias("event_time"),
        typed["temperature"].alias("temperature"),
        typed["humidity"].alias("humidity"),
        typed["pressure"].alias("pressure"),
        fields["location"].alias("location"),
        F.filter(F.array(*reasons), lambda r: r.isNotNull()).alias("reasons"),
    )


def quarantine_rows(parsed: DataFrame) -> DataFrame:
    """Rejected records in QUARANTINE_SCHEMA: raw value, reasons and source coordinates."""
    return parsed.where(F.size("reasons") > 0).select(
        *[
            (F.current_timestamp() if f.name == "quarantined_at" else F.col(f.name))
            .cast(f.dataType)
            .alias(f.name)
            for f in QUARANTINE_SCHEMA.fields
        ]
    )


def valid_rows(parsed: DataFrame) -> DataFrame:
    """Records with no reason, still in bronze + typed columns."""
    return parsed.where(F.size("reasons") == 0)


def dedup_batch(valid: DataFrame) -> DataFrame:
    """One row per (sensor_id, event_time) within a batch: the earliest by source position.

    Deterministic, so a replayed batch keeps the same row.
    """
    from pyspark.sql.window import Window

    first = Window.partitionBy(*DEDUP_KEYS).orderBy(
        F.col("partition").asc_nulls_last(), F.col("offset").asc_nulls_last(),
        F.col("ingested_at"), F.col("value"),
    )
    return valid.withColumn("_rn", F.row_number().over(first)).where("_rn = 1").drop("_rn")


def static_alerts(cfg: AlertsConfig) -> tuple[Column, Column]:
    """(alert_types array, severity) from the static thresholds: the columns silver derives."""
    t, h = F.col("temperature"), F.col("humidity")
    rules = [
        ("HIGH_TEMP", t > cfg.high_temp.threshold, t > cfg.high_temp.critical_above),
        ("LOW_TEMP", t < cfg.low_temp.threshold, t < cfg.low_temp.critical_below),
        ("HIGH_HUMIDITY", h > cfg.high_humidity.threshold, h > cfg.high_humidity.critical_above),
    ]
    types = F.filter(F.array(*[F.when(hit, F.lit(name)) for name, hit, _ in rules]),
                     lambda x: x.isNotNull())
    critical = F.lit(False)
    warning = F.lit(False)
    for _, hit, crit in rules:
        critical = critical | crit
        warning = warning | hit
    severity = F.when(critical, "CRITICAL").when(warning, "WARNING")
    return types, severity


def enrich(valid: DataFrame, registry: DataFrame | None, *, alerts: AlertsConfig) -> DataFrame:
    """Valid readings -> SILVER_SCHEMA.

    Adds event_date/event_hour, the registry's building/floor/room/zone (null for a sensor the
    registry does not know: an unknown sensor is news, not noise), is_alert/severity/alert_types
    from the static thresholds, processed_at. Drops the raw value, key and reasons.
    """
    df = valid
    if registry is not None:
        reg = registry.select("sensor_id", *REGISTRY_COLUMNS).dropDuplicates(["sensor_id"])
        df = df.join(F.broadcast(reg), "sensor_id", "left")
    else:
        for c in REGISTRY_COLUMNS:
            df = df.withColumn(c, F.lit(None))
    types, severity = static_alerts(alerts)
    df = (
        df.withColumn("event_date", F.to_date("event_time"))
        .withColumn("event_hour", F.hour("event_time"))
        .withColumn("alert_types", types)
        .withColumn("is_alert", F.size(types) > 0)
        .withColumn("severity", severity)
        .withColumn("processed_at", F.current_timestamp())
    )
    return df.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in SILVER_SCHEMA.fields])
