"""Hostile input (issue 8 item 3): fuzzed wire-format messages through bronze and silver.

Random bytes, empty and 1 MB messages, deep nesting, NaN/Infinity, wrong JSON types, odd
unicode (NUL, RTL, zero-width, emoji, lone surrogates, invalid UTF-8), trailing junk, null
keys. Bronze must keep every message byte for byte; silver must put each one in exactly one of
valid / quarantine (with a reason) and agree with the independent oracle in ``hostile.py``; no
valid reading may carry NaN, Infinity, an out-of-range value or an unusable key or time.

To fuzz longer than the suite does, raise ``max_examples`` and drop ``derandomize``.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hostile import GOOD, MALFORMED, Deep, Expected, dumps, expected_reasons, is_blank, message
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import MessageSizeTooLargeError
from pyspark.sql import Column, DataFrame, Row
from pyspark.sql import functions as F

from bronze.schema import NUMERIC_FIELDS, READING_FIELDS
from bronze.transform import from_kafka
from jobs.config import Config, ValidationConfig, load_config
from jobs.duck import connect
from jobs.runner import run_once
from jobs.tables import BRONZE_RAW, QUARANTINE, SILVER_READINGS
from jobs.topics import create_topics
from silver.schema import SILVER_SCHEMA
from silver.transform import dedup_batch, enrich, parse, quarantine_rows, valid_rows

CFG = load_config(env={})
T0 = datetime(2024, 1, 10, 15, 0, tzinfo=UTC)
# The Kafka source's schema (Spark's kafka connector), so bronze's own transform runs on it.
KAFKA_SOURCE = ("key binary, value binary, topic string, partition int, offset long, "
                "timestamp timestamp, timestampType int")
CODES = {MALFORMED, "BAD_TIMESTAMP", *(f"MISSING_FIELD:{f}" for f in READING_FIELDS),
         *(f"BAD_TYPE:{f}" for f in READING_FIELDS),
         *(f"OUT_OF_RANGE:{f}" for f in NUMERIC_FIELDS)}


def _micros(when: datetime) -> int:
    return round(when.timestamp() * 1_000_000)


def outcome_problems(records: list[tuple[str, Row, bytes | None]], v: ValidationConfig,
                     now: datetime) -> list[str]:
    """Every way the parsed rows break the rules for the message values they came from.

    ``records`` are (label, row of ``parsed_rows``, the value as produced).
    """
    problems: list[str] = []
    floor = _micros(datetime.fromisoformat(v.min_event_time))
    ceiling = _micros(now + timedelta(days=1))
    for label, r, value in records:
        shown = repr(value if value is None else value[:160]) + (
            "..." if value and len(value) > 160 else "")
        reasons = set(r.reasons)
        if (None if r.value_wire is None else bytes(r.value_wire)) != value:
            problems.append(f"{label}: bronze changed the value bytes of {shown}")
        if len(reasons) != len(r.reasons) or not reasons <= CODES:
            problems.append(f"{label}: odd reasons {r.reasons} for {shown}")
        expected: Expected = expected_reasons(value, v)
        if not expected.admits(reasons):
            problems.append(f"{label}: reasons {sorted(reasons)}, expected one of "
                            f"{[(sorted(m), sorted(o)) for m, o in expected.alternatives]} "
                            f"(must, may) for {shown}")
        if reasons:
            continue
        # a valid reading: usable key and time, finite numbers within the declared ranges
        if r.sensor_id is None or is_blank(r.sensor_id):
            problems.append(f"{label}: valid with sensor_id {r.sensor_id!r}: {shown}")
        if r.event_us is None or not floor <= r.event_us <= ceiling:
            problems.append(f"{label}: valid with event time {r.event_text}: {shown}")
        for name in NUMERIC_FIELDS:
            x, (low, high) = r[name], v.ranges()[name]
            if x is None or not math.isfinite(x) or not low <= x <= high:
                problems.append(f"{label}: valid with {name} {x!r}: {shown}")
    return problems


def _wire(name: str) -> Column:
    """The exact bytes bronze holds for ``key`` or ``value``: ``<name>_bytes`` when they are
    not UTF-8 (the text then has U+FFFD), else the text's own bytes."""
    return F.coalesce(F.col(f"{name}_bytes"), F.col(name).cast("binary")).alias(f"{name}_wire")


def parsed_rows(parsed: DataFrame) -> list[Row]:
    return parsed.select(
        "partition", "offset", _wire("value"), "reasons", "sensor_id",
        F.unix_micros("event_time").alias("event_us"),
        F.col("event_time").cast("string").alias("event_text"), *NUMERIC_FIELDS,
    ).collect()


def _kafka_rows(spark, msgs: list[tuple[bytes | None, bytes | None]]) -> DataFrame:
    rows = [(k, v, "iot-sensors", 0, i, T0, 0) for i, (k, v) in enumerate(msgs)]
    return spark.createDataFrame(rows, KAFKA_SOURCE)


# No shrinking: examples carry megabytes and the failure message already names each bad record.
@settings(max_examples=8, deadline=None, derandomize=True, database=None,
          phases=(Phase.explicit, Phase.generate),
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                 HealthCheck.large_base_example,
                                 HealthCheck.function_scoped_fixture])
@given(msgs=st.lists(message, min_size=40, max_size=120))
def test_every_hostile_message_is_kept_by_bronze_and_placed_once_by_silver(spark, msgs) -> None:
    bronze = from_kafka(_kafka_rows(spark, msgs))
    bronze_keys = [None if r.key_wire is None else bytes(r.key_wire)
                   for r in bronze.select(_wire("key"), "offset").orderBy("offset").collect()]
    assert bronze_keys == [k for k, _ in msgs], "bronze changed a key"

    # as silver's writer does: parsed once, then split
    parsed = parse(bronze, cfg=CFG.validation).localCheckpoint(eager=True)
    rows = parsed_rows(parsed)
    assert sorted(r.offset for r in rows) == list(range(len(msgs))), "a record lost or doubled"
    records = [(f"message {r.offset}", r, msgs[r.offset][1]) for r in rows]
    problems = outcome_problems(records, CFG.validation, datetime.now(UTC))
    assert not problems, f"{len(problems)} problems, first ones:\n" + "\n".join(problems[:8])

    bad = {r.offset for r in rows if r.reasons}
    quarantined = quarantine_rows(parsed).select("offset", "reasons").collect()
    assert sorted(q.offset for q in quarantined) == sorted(bad)
    assert all(q.reasons for q in quarantined)

    valid = valid_rows(parsed)
    keys = [(r.sensor_id, r.event_time) for r in valid.select("sensor_id", "event_time").collect()]
    assert len(keys) + len(quarantined) == len(msgs), "valid and quarantine overlap or miss one"
    silver = enrich(dedup_batch(valid), None, alerts=CFG.alerts)
    assert silver.schema.names == SILVER_SCHEMA.names
    kept = [(r.sensor_id, r.event_time) for r in silver.select("sensor_id", "event_time")
            .collect()]
    # silver + quarantine + duplicates == messages, each valid key kept once
    assert sorted(kept) == sorted(set(keys))


def test_a_one_megabyte_reading_is_kept_whole(spark) -> None:
    """A reading with a 1 MB location is valid and whole; the same bytes cut short are not."""
    value = dumps({**GOOD, "location": "é" * 500_000}, ascii_only=False).encode()
    assert len(value) > 1_000_000
    msgs = [(None, value), (b"SENSOR_001", value[:-1])]
    parsed = parse(from_kafka(_kafka_rows(spark, msgs)), cfg=CFG.validation)
    rows = parsed.select("offset", "reasons", F.length("location").alias("n")).orderBy("offset")
    assert [(r.reasons, r.n) for r in rows.collect()] == [([], 500_000), ([MALFORMED], None)]


def _not_utf8(spark) -> list:
    good = dumps(GOOD).encode()
    msgs = [(b"\xff", good.replace(b"Building", b"Bu\xffilding")), (b"SENSOR_001", good)]
    return parse(from_kafka(_kafka_rows(spark, msgs)), cfg=CFG.validation).select(
        _wire("key"), _wire("value"), "reasons").orderBy("offset").collect(), msgs


def test_bytes_that_are_not_utf8_are_kept_exactly(spark) -> None:
    rows, msgs = _not_utf8(spark)
    assert [(bytes(r.key_wire), bytes(r.value_wire)) for r in rows] == msgs
    assert rows[1].reasons == []


def test_a_value_that_is_not_utf8_is_quarantined(spark) -> None:
    rows, _ = _not_utf8(spark)
    assert rows[0].reasons == [MALFORMED]


# --- end to end: the real broker, bronze and silver as streaming queries ---------------------


def _anchors() -> list[tuple[bytes | None, bytes | None]]:
    """Hostile messages the end-to-end run always holds, whatever hypothesis draws."""
    def reading(**changes: object) -> bytes:
        return dumps({**GOOD, **changes}, ascii_only=False).encode()

    return [
        (None, reading(location="é" * 500_000)),           # a 1 MB reading, valid
        (b"\xff\xfe", bytes(range(256)) * 4096),             # 1 MiB of every byte value
        (b"SENSOR_001", None),                               # a tombstone: no value at all
        (b"", b""),                                          # empty key and value
        (None, reading().replace(b"Building", b"Bu\xffilding")),  # invalid UTF-8 in a string
        (None, reading(timestamp="-0001-01-01T00:00:00Z")),  # a year before year 1
        (None, reading(timestamp="0000-06-15T00:00:00Z")),
        (None, reading(timestamp="1066-10-14T09:00:00Z")),
        (None, reading(x=Deep(5000))),
        (None, reading(temperature=math.nan)),
        (None, reading() + reading()),                       # two readings in one message
        (None, reading(sensor_id="\u202e\u0000\U0001f600")),  # RTL override, NUL, emoji: valid
        (b"SENSOR_001", reading()), (b"SENSOR_001", reading()),  # a duplicate
    ]


def _drawn_messages() -> list[tuple[bytes | None, bytes | None]]:
    """A fixed pool from the fuzz strategies: derandomized, so every run sends the same."""
    pool: list[tuple[bytes | None, bytes | None]] = []

    @settings(max_examples=6, derandomize=True, database=None, phases=(Phase.generate,),
              deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(message, min_size=20, max_size=40))
    def draw(msgs: list) -> None:
        pool.extend(msgs)

    draw()
    return pool


def _topic_max_message_bytes(cfg: Config, topic: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=cfg.kafka.bootstrap)
    try:
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)],
                                         config_filter="all")
    finally:
        admin.close()
    return int(configs["topic"][topic]["max.message.bytes"]["value"])


@pytest.mark.timeout(600)
def test_hostile_messages_through_kafka_bronze_and_silver(spark, kafka_cfg: Config,
                                                       tmp_path: Path) -> None:
    """Every produced message is in bronze byte for byte and lands once in silver/quarantine."""
    cfg = kafka_cfg.with_overrides({"paths.data_dir": str(tmp_path / "data"),
                                    "kafka.topic_in": f"hostile-{uuid.uuid4().hex[:8]}",
                                    "streaming.max_offsets_per_trigger": 150})
    create_topics(cfg, {cfg.kafka.topic_in: 2})
    limit = _topic_max_message_bytes(cfg, cfg.kafka.topic_in)
    # A Kafka record needs a key or a value: a tombstone gets an empty key.
    msgs = [(b"" if k is None and v is None else k, v) for k, v in _anchors() + _drawn_messages()]

    # The client-side cap is raised so that the topic's own limit is what is tested.
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, acks="all",
                             max_request_size=4 * limit)
    try:
        futures = [(producer.send(cfg.kafka.topic_in, key=k, value=v), k, v) for k, v in msgs]
        producer.flush()
        sent = {}
        for future, k, v in futures:
            meta = future.get(timeout=60)
            sent[(meta.partition, meta.offset)] = (k, v)
        # Over the topic's limit the producer is told so: nothing is lost without a word.
        with pytest.raises(MessageSizeTooLargeError):
            producer.send(cfg.kafka.topic_in, value=b"x" * (limit + 1)).get(timeout=60)
    finally:
        producer.close()
    assert len(sent) == len(msgs)

    rows = run_once(spark, cfg, ["bronze", "silver"])  # raises if either query failed
    assert rows["bronze"] == len(msgs)

    def table(name: str) -> DataFrame:
        return spark.read.format("delta").load(str(cfg.paths.table(name)))

    bronze = table(BRONZE_RAW)
    held = bronze.select("partition", "offset", _wire("key"), _wire("value")).collect()
    got = {(r.partition, r.offset): (None if r.key_wire is None else bytes(r.key_wire),
                                     None if r.value_wire is None else bytes(r.value_wire))
           for r in held}
    assert len(held) == len(got) == len(msgs), "bronze lost or doubled a record"
    assert got == sent, "bronze does not hold the produced bytes"

    # Every record against the oracle: re-parsed from bronze as a batch, as silver did.
    reparsed = parsed_rows(parse(bronze, cfg=CFG.validation))
    by_position = {(r.partition, r.offset): r for r in reparsed}
    records = [(f"partition {p} offset {o}", by_position[(p, o)], sent[(p, o)][1])
               for p, o in sorted(sent)]
    problems = outcome_problems(records, CFG.validation, datetime.now(UTC))
    assert not problems, f"{len(problems)} problems, first ones:\n" + "\n".join(problems[:8])

    quarantine = {(r.partition, r.offset): sorted(r.reasons) for r in
                  table(QUARANTINE).select("partition", "offset", "reasons").collect()}
    bad = {p: sorted(r.reasons) for p, r in by_position.items() if r.reasons}
    assert quarantine == bad, "the quarantine differs from the records that break a rule"
    assert all(quarantine.values())

    valid = {p: (r.sensor_id, r.event_us) for p, r in by_position.items() if not r.reasons}
    silver = {(r.partition, r.offset): (r.sensor_id, r.event_us) for r in table(SILVER_READINGS)
              .select("partition", "offset", "sensor_id",
                      F.unix_micros("event_time").alias("event_us")).collect()}
    assert set(silver.values()) == set(valid.values()), "silver does not hold each valid key"
    assert len(silver) == len(set(silver.values())), "silver holds a key twice"
    assert all(valid.get(p) == key for p, key in silver.items()), "silver row of no valid record"
    duplicates = len(valid) - len(silver)
    assert len(silver) + len(quarantine) + duplicates == len(held) == len(msgs)

    # Every reader can scan what bronze and the quarantine hold (DuckDB refuses a Parquet
    # string that is not UTF-8, and the anchors include such keys and values).
    duck = connect()
    for name in (BRONZE_RAW, QUARANTINE):
        n, = duck.execute(f"SELECT count(*) FROM delta_scan('{cfg.paths.table(name)}') "
                          "WHERE length(key) >= 0 OR length(value) >= 0 OR value IS NULL"
                          ).fetchone()
        assert n == (len(msgs) if name == BRONZE_RAW else len(quarantine))
