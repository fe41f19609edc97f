"""Kafka (real broker) -> bronze -> silver as streaming queries: nothing lost, nothing doubled."""

from __future__ import annotations

import json
import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from checkpoints import forget_last_commit
from kafka import KafkaProducer

from jobs.config import Config
from jobs.runner import run_once
from jobs.tables import BRONZE_RAW, QUARANTINE, SILVER_READINGS
from jobs.topics import create_topics

pytestmark = pytest.mark.timeout(600)

T0 = datetime(2024, 1, 10, 14, 0, tzinfo=UTC)


def _reading(sensor: int, minute: int, temperature: float = 21.0, **extra) -> dict:
    return {"sensor_id": f"SENSOR_{sensor:03d}",
            "timestamp": (T0 + timedelta(minutes=minute)).isoformat().replace("+00:00", "Z"),
            "temperature": temperature, "humidity": 50.0, "pressure": 1013.0,
            "location": f"Building A - Floor {sensor % 3}", **extra}


def _messages() -> tuple[list[tuple[str | None, str]], dict[str, list[str]]]:
    """(key, value) messages and the reasons each bad one must get."""
    msgs: list[tuple[str | None, str]] = []
    for minute in range(20):
        for sensor in range(5):
            r = _reading(sensor, minute, 20.0 + minute * 0.1)
            msgs.append((r["sensor_id"], json.dumps(r)))
    dup = msgs[7]
    bad = {
        '{"sensor_id": "SENSOR_001", "timestamp": ': ["MALFORMED_JSON"],
        json.dumps({k: v for k, v in _reading(1, 30).items() if k != "pressure"}):
            ["MISSING_FIELD:pressure"],
        json.dumps(_reading(2, 31, temperature="warm")): ["BAD_TYPE:temperature"],
        json.dumps(_reading(3, 32, temperature=99.0)): ["OUT_OF_RANGE:temperature"],
        json.dumps({**_reading(4, 33), "timestamp": "not a time"}): ["BAD_TIMESTAMP"],
    }
    msgs += [dup, dup] + [(None, v) for v in bad]
    # valid but odd: extra fields, late (an hour behind), an unknown sensor
    msgs += [("SENSOR_000", json.dumps(_reading(0, 40, firmware="1.2", extra={"a": 1}))),
             ("SENSOR_000", json.dumps(_reading(0, -60))),
             ("SENSOR_999", json.dumps(_reading(999, 5)))]
    return msgs, bad


def _produce(cfg: Config, msgs: list[tuple[str | None, str]]) -> None:
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, acks="all")
    for key, value in msgs:
        producer.send(cfg.kafka.topic_in, key=key.encode() if key else None, value=value.encode())
    producer.flush()
    producer.close()


def _snapshot(spark, cfg: Config) -> dict[str, list]:
    def rows(table: str, cols: str) -> list:
        df = spark.read.format("delta").load(str(cfg.paths.table(table)))
        return sorted(tuple(r) for r in df.selectExpr(*cols.split(",")).collect())

    return {
        "bronze": rows(BRONZE_RAW, "partition,offset,value"),
        "silver": rows(SILVER_READINGS, "sensor_id,event_time,offset,temperature"),
        "quarantine": rows(QUARANTINE, "partition,offset,reasons"),
    }


@pytest.fixture()
def stream_cfg(kafka_cfg: Config, tmp_path: Path) -> Config:
    cfg = kafka_cfg.with_overrides({"paths.data_dir": str(tmp_path / "data"),
                                    "kafka.topic_in": f"sensors-{uuid.uuid4().hex[:8]}",
                                    "streaming.max_offsets_per_trigger": 40})
    create_topics(cfg, {cfg.kafka.topic_in: 3})
    registry = cfg.paths.data_dir / "registry" / "sensors.csv"
    registry.parent.mkdir(parents=True)
    registry.write_text("sensor_id,location,building,floor,room,zone\n" + "".join(
        f"SENSOR_{i:03d},Building A - Floor {i % 3},Building A,{i % 3},R{i},North\n"
        for i in range(5)))
    return cfg


def test_kafka_to_bronze_and_silver_accounts_for_every_record(spark, stream_cfg: Config) -> None:
    cfg = stream_cfg
    msgs, bad = _messages()
    _produce(cfg, msgs)

    rows = run_once(spark, cfg, ["bronze", "silver"])
    assert rows["bronze"] == len(msgs)
    snap = _snapshot(spark, cfg)

    # bronze: exactly the produced offsets, once each
    offsets = [(p, o) for p, o, _ in snap["bronze"]]
    assert len(offsets) == len(set(offsets)) == len(msgs)
    assert sorted(v for _, _, v in snap["bronze"]) == sorted(v for _, v in msgs)

    # silver + quarantine + duplicates = bronze
    valid_distinct = 100 + 3  # 5 sensors x 20 minutes, plus extra-fields, late, unknown sensor
    duplicates = 2
    assert len(snap["silver"]) == valid_distinct
    assert len(snap["quarantine"]) == len(bad)
    assert len(snap["silver"]) + len(snap["quarantine"]) + duplicates == len(snap["bronze"])

    # each fault lands with exactly its reasons
    q = spark.read.format("delta").load(str(cfg.paths.table(QUARANTINE)))
    got = {r.value: sorted(r.reasons) for r in q.collect()}
    assert got == {v: sorted(reasons) for v, reasons in bad.items()}

    silver = spark.read.format("delta").load(str(cfg.paths.table(SILVER_READINGS)))
    unknown = silver.where("sensor_id = 'SENSOR_999'").first()
    assert unknown is not None and unknown.building is None
    known = silver.where("sensor_id = 'SENSOR_001'").first()
    assert known.building == "Building A" and known.zone == "North"

    # one query wrote both layers (one read of the topic, one checkpoint)
    assert set(rows) == {"bronze"}
    assert not cfg.paths.checkpoint("silver").exists()

    # a second run over the same input adds nothing
    assert run_once(spark, cfg, ["bronze", "silver"]) == {"bronze": 0}
    assert _snapshot(spark, cfg) == snap

    # replay the last micro-batch, as after a crash between the writes and the commit
    removed = forget_last_commit(cfg.paths.checkpoint("bronze"))
    run_once(spark, cfg, ["bronze", "silver"])
    assert removed.exists(), "the uncommitted batch was not re-run"
    assert _snapshot(spark, cfg) == snap, "a replayed batch changed the tables"


def test_silver_with_its_own_checkpoint_catches_up_before_running_inside_bronze(
        spark, stream_cfg: Config) -> None:
    """A lake whose silver query ran alone (its own checkpoint, behind bronze) loses nothing
    and doubles nothing when bronze and silver next run as one query."""
    cfg = stream_cfg.with_overrides({"streaming.max_offsets_per_trigger": 1000})
    msgs, bad = _messages()
    first, second, third = msgs[:40], msgs[40:80], msgs[80:]
    _produce(cfg, first)
    run_once(spark, cfg, ["bronze"])
    assert run_once(spark, cfg, ["silver"]) == {"silver": len(first)}
    _produce(cfg, second)
    run_once(spark, cfg, ["bronze"])  # silver is now behind bronze by `second`
    _produce(cfg, third)

    assert run_once(spark, cfg, ["bronze", "silver"]) == {"bronze": len(third)}
    snap = _snapshot(spark, cfg)
    assert len(snap["bronze"]) == len(msgs)
    assert len(snap["silver"]) == 103 and len(snap["quarantine"]) == len(bad)
    ckpt = cfg.paths.checkpoint("silver")
    assert not ckpt.exists() and ckpt.with_name("silver.drained").is_dir()

    _produce(cfg, first[:5])  # copies of readings silver holds: duplicates, kept once
    assert run_once(spark, cfg, ["bronze", "silver"]) == {"bronze": 5}
    again = _snapshot(spark, cfg)
    assert again["silver"] == snap["silver"] and len(again["bronze"]) == len(msgs) + 5


def test_silver_first_batch_appends_and_its_replay_merges_nothing(
        spark, stream_cfg: Config, caplog: pytest.LogCaptureFixture) -> None:
    """Into an empty silver table the readings are appended (no MERGE to pay for); a replay of
    that batch, as after a crash before its checkpoint commit, finds them and adds nothing."""
    from delta.tables import DeltaTable

    cfg = stream_cfg.with_overrides({"streaming.max_offsets_per_trigger": 1000})
    msgs, _ = _messages()
    _produce(cfg, msgs)
    run_once(spark, cfg, ["bronze"])
    assert run_once(spark, cfg, ["silver"]) == {"silver": len(msgs)}  # one batch
    snap = _snapshot(spark, cfg)
    assert len(snap["silver"]) == 103

    def operations() -> list[tuple[str, dict]]:
        history = DeltaTable.forPath(spark, str(cfg.paths.table(SILVER_READINGS))).history()
        return [(r.operation, r.operationMetrics)
                for r in history.orderBy("version").collect()]

    assert [op for op, _ in operations()] == ["CREATE TABLE", "WRITE"]
    forget_last_commit(cfg.paths.checkpoint("silver"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="jobs.silver_job"):
        run_once(spark, cfg, ["silver"])
    assert "silver batch 0: 110 records -> 0 readings kept, 105 duplicates" in caplog.text
    assert _snapshot(spark, cfg) == snap, "the replayed first batch changed the tables"
    # The replay finds rows, so it MERGEs (Delta may skip committing a MERGE that inserts
    # nothing); it never appends the batch again.
    replayed = operations()[2:]
    assert all(op == "MERGE" and m["numTargetRowsInserted"] == "0" for op, m in replayed), \
        replayed


def test_generator_faults_through_bronze_and_silver(spark, stream_cfg: Config) -> None:
    """Every generator fault kind switched on: each lands where its truth says."""
    from generator.faults import FAULT_KINDS, VALID_FAULTS
    from generator.fleet import make_fleet
    from generator.stream import GeneratorSpec, generate_messages, iso

    cfg = stream_cfg.with_overrides({"streaming.max_offsets_per_trigger": 1000})
    truth: list[dict] = []
    spec = GeneratorSpec(sensors=tuple(make_fleet(20, seed=7)), seed=7, interval_s=10.0,
                         count=3000, faults={k: 0.02 for k in FAULT_KINDS})
    msgs = list(generate_messages(spec, truth=truth.append))
    assert {m.fault for m in msgs} >= set(FAULT_KINDS), "every fault kind must occur"
    _produce(cfg, [(m.key.decode() if m.key else None, m.value.decode()) for m in msgs])

    run_once(spark, cfg, ["bronze", "silver"])
    snap = _snapshot(spark, cfg)
    assert len(snap["bronze"]) == len({(p, o) for p, o, _ in snap["bronze"]}) == len(msgs)

    valid = [m for m in msgs if m.fault is None or m.fault in VALID_FAULTS]
    distinct = {(m.sensor_id, m.event_time) for m in valid}
    duplicates = len(valid) - len(distinct)
    assert len(snap["silver"]) == len(distinct)
    assert len(snap["quarantine"]) == len(msgs) - len(valid)
    assert len(snap["silver"]) + len(snap["quarantine"]) + duplicates == len(snap["bronze"])

    q = spark.read.format("delta").load(str(cfg.paths.table(QUARANTINE)))
    got = sorted((r.value, tuple(sorted(r.reasons))) for r in q.collect())
    bad = [m for m in msgs if m.fault is not None and m.fault not in VALID_FAULTS]
    expected_reasons = {(t["sensor_id"], t["event_time"], t["fault"]): t["expected_reasons"]
                        for t in truth if t.get("type") == "fault"}

    def reasons(m) -> tuple[str, ...]:
        key = (m.sensor_id, iso(round(m.event_time.timestamp() * 1000)), m.fault)
        return tuple(sorted(expected_reasons[key]))

    assert got == sorted((m.value.decode(), reasons(m)) for m in bad)
    assert {r for _, rs in got for r in rs} >= {"MALFORMED_JSON", "BAD_TIMESTAMP"}
