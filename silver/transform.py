"""Silver: parse, validate, de-duplicate and enrich bronze records. Pure DataFrame -> DataFrame.

Every bronze record ends in exactly one of: a valid reading (silver), a quarantine row with
every reason that applies, or a duplicate of a valid reading already kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StringType

from bronze.schema import NUMERIC_FIELDS, READING_FIELDS, READING_SCHEMA
from jobs.config import AlertsConfig, ValidationConfig
from silver.schema import (
    PARSED_KIND_ABSENT,
    PARSED_KIND_NUMBER,
    PARSED_KIND_TEXT,
    PARSED_READING_SCHEMA,
    QUARANTINE_SCHEMA,
    REGISTRY_COLUMNS,
    SILVER_SCHEMA,
)

# Silver's reading parser, a JVM function (silver/jvm/ReadingJson.java, built by
# jobs/jvm_jar.py and on Spark's class path through jobs.spark): one streaming pass over the
# JSON text per record, where column expressions took several parses and a VARIANT per field.
PARSER_FUNCTION = "lakehouse_parse_reading"
PARSER_CLASS = "lakehouse.silver.ReadingJson"
_STRING_FIELDS = tuple(f.name for f in READING_SCHEMA.fields if f.dataType == StringType())
# Whitespace, control and format characters only: not a usable sensor id.
_BLANK = r"^[\p{Cc}\p{Cf}\p{Z}]*$"

DEDUP_KEYS: tuple[str, ...] = ("sensor_id", "event_time")


def _reason_if(condition: Column, code: str) -> Column:
    return F.when(condition, F.lit(code))


def register_parser(spark: SparkSession) -> None:
    """Make the JVM reading parser callable by name in this session (once per session)."""
    if spark.catalog.functionExists(PARSER_FUNCTION):
        return
    try:
        spark.udf.registerJavaFunction(PARSER_FUNCTION, PARSER_CLASS, PARSED_READING_SCHEMA)
    except Exception as e:  # py4j wraps the ClassNotFoundException
        raise RuntimeError(
            f"silver's reading parser {PARSER_CLASS} is not on Spark's class path: start the "
            "session with jobs.spark.build_spark (it adds the jar scripts/setup.sh builds)"
        ) from e


def parse(df: DataFrame, *, cfg: ValidationConfig) -> DataFrame:
    """Bronze rows -> bronze columns plus typed reading fields and ``reasons`` (array<string>).

    Adds sensor_id, event_time (null when not usable), temperature, humidity, pressure,
    location and reasons; an empty ``reasons`` means the record is valid. Codes (DESIGN.md
    "Validation"):

    - MALFORMED_JSON: not one JSON object in UTF-8 (also: trailing content after the object,
      nesting deeper than 1000, a lone UTF-16 surrogate escape in a reading field);
    - MISSING_FIELD:<f>: absent or null; a sensor_id of only whitespace, control or format
      characters counts as missing;
    - BAD_TYPE:<f>: another JSON type than the wire format's (a number for sensor_id, a string
      such as "22.5" for temperature); NaN and Infinity are not numbers;
    - OUT_OF_RANGE:<f>: a finite number outside the configured range;
    - BAD_TIMESTAMP: not a timestamp, before ``min_event_time``, or more than ``max_future``
      ahead of processing time.
    """
    register_parser(df.sparkSession)
    value = F.col("value")
    staged = df.withColumn("_p", F.call_function(PARSER_FUNCTION, value)).withColumn(
        "_malformed",
        # JSON text must be UTF-8: bronze marks a value that is not by keeping its bytes in
        # value_bytes (its text has U+FFFD, which would pass the parser); rows written before
        # bronze did so hold the bytes in value itself.
        value.isNull()
        | F.col("value_bytes").isNotNull()
        | ~F.is_valid_utf8(value)
        | F.col("_p.malformed"),
    )
    malformed = F.col("_malformed")
    # Each value several rules read is a column of its own projection, computed once per row
    # (inlined, the optimizer would copy e.g. the timestamp cast into every rule's CASE).
    staged = staged.select("*", *[
        F.when(~malformed, F.col(f"_p.kind_{f}")).otherwise(PARSED_KIND_ABSENT).alias(f"_kind_{f}")
        for f in READING_FIELDS
    ])
    kind = {f: F.col(f"_kind_{f}") for f in READING_FIELDS}
    present = {f: kind[f] != PARSED_KIND_ABSENT for f in READING_FIELDS}
    is_text = {f: kind[f] == PARSED_KIND_TEXT for f in _STRING_FIELDS}
    staged = staged.select(
        "*",
        *[F.when(is_text[f], F.col(f"_p.{f}")).alias(f"_text_{f}") for f in _STRING_FIELDS],
        *[F.when(kind[f] == PARSED_KIND_NUMBER, F.col(f"_p.{f}")).alias(f"_number_{f}")
          for f in NUMERIC_FIELDS],
    )
    staged = staged.withColumn("_event_time", F.col("_text_timestamp").try_cast("timestamp"))
    text = {f: F.col(f"_text_{f}") for f in _STRING_FIELDS}

    reasons: list[Column] = [_reason_if(malformed, "MALFORMED_JSON")]
    for f in _STRING_FIELDS:
        missing = ~malformed & ~present[f]
        if f == "sensor_id":
            missing = missing | (is_text[f] & text[f].rlike(_BLANK))
        reasons += [_reason_if(missing, f"MISSING_FIELD:{f}"),
                    _reason_if(present[f] & ~is_text[f], f"BAD_TYPE:{f}")]

    typed: dict[str, Column] = {}
    for f in NUMERIC_FIELDS:
        number = F.col(f"_number_{f}")
        finite = number.isNotNull() & ~F.isnan(number) & (F.abs(number) != float("inf"))
        typed[f] = F.when(finite, number)
        low, high = cfg.ranges()[f]
        reasons += [
            _reason_if(~malformed & ~present[f], f"MISSING_FIELD:{f}"),
            _reason_if(present[f] & ~finite, f"BAD_TYPE:{f}"),
            _reason_if(finite & ((number < low) | (number > high)), f"OUT_OF_RANGE:{f}"),
        ]

    event_time = F.col("_event_time")
    too_far = event_time > F.current_timestamp() + F.expr(f"INTERVAL {cfg.max_future}")
    too_old = event_time < F.lit(datetime.fromisoformat(cfg.min_event_time))
    bad_ts = text["timestamp"].isNotNull() & (event_time.isNull() | too_far | too_old)
    reasons.append(_reason_if(bad_ts, "BAD_TIMESTAMP"))

    return staged.select(
        *df.columns,
        F.trim(text["sensor_id"]).alias("sensor_id"),
        F.when(~bad_ts, event_time).alias("event_time"),
        typed["temperature"].alias("temperature"),
        typed["humidity"].alias("humidity"),
        typed["pressure"].alias("pressure"),
        text["location"].alias("location"),
        # The codes that apply, in order (each code at most once, so array_except drops only
        # the nulls; F.filter would take the whole projection out of code generation).
        F.array_except(F.array(*reasons), F.array(F.lit(None).cast("string"))).alias("reasons"),
    )


def quarantine_rows(parsed: DataFrame) -> DataFrame:
    """Rejected records in QUARANTINE_SCHEMA: raw value, reasons and source coordinates.

    key and value are made valid UTF-8 (bronze keeps the exact bytes), so that every reader
    can scan the quarantine.
    """
    special = {"quarantined_at": F.current_timestamp(), "key": F.make_valid_utf8("key"),
               "value": F.make_valid_utf8("value")}
    return parsed.where(F.size("reasons") > 0).select(
        *[
            special.get(f.name, F.col(f.name)).cast(f.dataType).alias(f.name)
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


@dataclass(frozen=True)
class StaticRule:
    """One static-threshold rule as data: ``metric`` above (or below) ``threshold`` fires,
    beyond ``critical`` it is CRITICAL, else WARNING."""

    alert_type: str
    metric: str
    above: bool
    threshold: float
    critical: float

    def hit(self, value: Column) -> Column:
        return value > self.threshold if self.above else value < self.threshold

    def is_critical(self, value: Column) -> Column:
        return value > self.critical if self.above else value < self.critical


def static_rules(cfg: AlertsConfig) -> tuple[StaticRule, ...]:
    """HIGH_TEMP, LOW_TEMP and HIGH_HUMIDITY from the config (gold.alert_rules.static_alerts
    is the same rules in plain Python; tests hold the two to the same answers)."""
    return (
        StaticRule("HIGH_TEMP", "temperature", True, cfg.high_temp.threshold,
                   cfg.high_temp.critical_above),
        StaticRule("LOW_TEMP", "temperature", False, cfg.low_temp.threshold,
                   cfg.low_temp.critical_below),
        StaticRule("HIGH_HUMIDITY", "humidity", True, cfg.high_humidity.threshold,
                   cfg.high_humidity.critical_above),
    )


def static_alerts(cfg: AlertsConfig) -> tuple[Column, Column]:
    """(alert_types array, severity) from the static thresholds: the columns silver derives."""
    rules = static_rules(cfg)
    types = F.filter(F.array(*[F.when(r.hit(F.col(r.metric)), F.lit(r.alert_type))
                               for r in rules]), lambda x: x.isNotNull())
    critical = F.lit(False)
    warning = F.lit(False)
    for r in rules:
        critical = critical | r.is_critical(F.col(r.metric))
        warning = warning | r.hit(F.col(r.metric))
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
