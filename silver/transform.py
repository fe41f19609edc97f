"""Silver: parse, validate, de-duplicate and enrich bronze records. Pure DataFrame -> DataFrame.

Every bronze record ends in exactly one of: a valid reading (silver), a quarantine row with
every reason that applies, or a duplicate of a valid reading already kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType, VariantType

from bronze.schema import NUMERIC_FIELDS, READING_FIELDS, READING_SCHEMA
from jobs.config import AlertsConfig, ValidationConfig
from silver.schema import QUARANTINE_SCHEMA, REGISTRY_COLUMNS, SILVER_SCHEMA

CORRUPT = "_corrupt_record"
# Every field read as a VARIANT: its JSON type survives the parse, so a wrong type is a reason
# code (BAD_TYPE) rather than a null that would look like a missing field, or an object that a
# string cast would turn into text. Strict JSON, except NaN/Infinity: those read as numbers so
# that the reason names the field (BAD_TYPE:<f>) instead of the whole record.
_RAW_SCHEMA = StructType(
    [StructField(f, VariantType()) for f in READING_FIELDS] + [StructField(CORRUPT, StringType())]
)
_JSON_OPTIONS = {"mode": "PERMISSIVE", "columnNameOfCorruptRecord": CORRUPT,
                 "allowSingleQuotes": "false"}
_STRING_FIELDS = tuple(f.name for f in READING_SCHEMA.fields if f.dataType == StringType())
# schema_of_variant names for a JSON number (integers, decimals, doubles)
_NUMBER_TYPE = r"^(TINYINT|SMALLINT|INT|BIGINT|FLOAT|DOUBLE|DECIMAL\(\d+,\d+\))$"
# Whitespace, control and format characters only: not a usable sensor id.
_BLANK = r"^[\p{Cc}\p{Cf}\p{Z}]*$"
_NON_NUMERIC_TOKEN = r"[-+]?(NaN|Infinity|INF)"

DEDUP_KEYS: tuple[str, ...] = ("sensor_id", "event_time")


def _reason_if(condition: Column, code: str) -> Column:
    return F.when(condition, F.lit(code))


def _one_json_value(value: Column) -> Column:
    """True when ``value`` is one JSON value and nothing after it (JSON whitespace aside).

    Jackson, and so from_json, stops after the first value: ``{..}{..}`` or ``{..} junk`` would
    read as the first reading alone. Wrapped as ``[value]``, anything after the first value
    breaks the array or adds elements, unless it starts with ``]``; wrapped as ``{"_":value}``
    the same holds unless it starts with ``}``. Nothing starts with both, so the two checks
    together are exact. Both parse strict JSON, so NaN/Infinity tokens are neutralised first.
    """
    strict = F.regexp_replace(value, _NON_NUMERIC_TOKEN, "0")
    in_array = F.json_array_length(F.concat(F.lit("["), strict, F.lit("]")))
    in_object = F.size(F.json_object_keys(F.concat(F.lit('{"_":'), strict, F.lit("}"))))
    return F.coalesce((in_array == 1) & (in_object == 1), F.lit(False))


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
    value = F.col("value")
    # Built in stages, each a projection: a value used by several rules is computed once per
    # row (one expression tree would re-scan a 1 MB value for every rule that reads it).
    staged = df.withColumn("_raw", F.from_json(value, _RAW_SCHEMA, _JSON_OPTIONS)).withColumn(
        "_malformed",
        # JSON text must be UTF-8: bronze marks a value that is not by keeping its bytes in
        # value_bytes (its text has U+FFFD, which would pass the parser); rows written before
        # bronze did so hold the bytes in value itself. An object starts with "{".
        value.isNull()
        | F.col("value_bytes").isNotNull()
        | ~F.is_valid_utf8(value)
        | ~value.rlike(r"^[ \t\r\n]*\{")
        | F.col("_raw").isNull()
        | F.col(f"_raw.{CORRUPT}").isNotNull()
        | ~_one_json_value(value),
    )
    malformed = F.col("_malformed")
    raw = {f: F.when(~malformed, F.col(f"_raw.{f}")) for f in READING_FIELDS}
    staged = staged.select("*", *[
        c for f in READING_FIELDS for c in (
            (raw[f].isNotNull() & ~F.is_variant_null(raw[f])).alias(f"_present_{f}"),
            F.schema_of_variant(raw[f]).alias(f"_kind_{f}"),
        )
    ])
    present = {f: F.col(f"_present_{f}") for f in READING_FIELDS}
    kind = {f: F.col(f"_kind_{f}") for f in READING_FIELDS}
    is_text = {f: present[f] & (kind[f] == "STRING") for f in _STRING_FIELDS}
    staged = staged.select(
        "*",
        *[F.when(is_text[f], F.try_variant_get(raw[f], "$", "string")).alias(f"_text_{f}")
          for f in _STRING_FIELDS],
        *[F.when(present[f] & kind[f].rlike(_NUMBER_TYPE),
                 F.try_variant_get(raw[f], "$", "double")).alias(f"_number_{f}")
          for f in NUMERIC_FIELDS],
    )
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

    event_time = text["timestamp"].try_cast("timestamp")
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
        F.filter(F.array(*reasons), lambda r: r.isNotNull()).alias("reasons"),
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
