"""The alerts query end to end on real parts: a silver Delta table -> transformWithStateInPandas
-> gold/alerts (MERGE) and the real Kafka broker's alert topic."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer

from gold.alert_rules import alert_id
from jobs import tables
from jobs.alert_score import load_alerts
from jobs.alerts_job import (
    AlertPublisher,
    deliver_alerts,
    format_alert,
    silent_fleet_offline,
    start_alerts,
    tail_alerts,
)
from jobs.cli import cli
from jobs.config import Config
from jobs.topics import create_topics
from silver.schema import SILVER_SCHEMA

pytestmark = [pytest.mark.spark, pytest.mark.kafka, pytest.mark.timeout(600)]

T0 = datetime(2024, 1, 10, 14, 0, tzinfo=UTC)


def at(minutes: float = 0, seconds: float = 0) -> datetime:
    return T0 + timedelta(minutes=minutes, seconds=seconds)


def silver_row(sensor: str, t: datetime, temp: float, hum: float = 50.0,
               pres: float = 1013.0) -> tuple:
    values = {"sensor_id": sensor, "event_time": t, "temperature": float(temp),
              "humidity": float(hum), "pressure": float(pres), "location": f"loc-{sensor}"}
    return tuple(values.get(f.name) for f in SILVER_SCHEMA.fields)


def append_silver(spark, cfg: Config, rows: list[tuple]) -> None:
    (spark.createDataFrame(rows, SILVER_SCHEMA).write.format("delta").mode("append")
     .save(str(cfg.paths.table(tables.SILVER_READINGS))))


def run_once(spark, cfg: Config) -> None:
    query = start_alerts(spark, cfg, trigger={"availableNow": True})
    try:
        query.awaitTermination(300)
        assert query.exception() is None, query.exception()
    finally:
        query.stop()


def table_alerts(spark, cfg: Config) -> set[tuple]:
    rows = spark.read.format("delta").load(str(cfg.paths.table(tables.ALERTS))).collect()
    return {(r.sensor_id, r.alert_type, r.metric,
             r.event_time.replace(tzinfo=UTC)) for r in rows}


def kafka_alerts(cfg: Config) -> list[tuple[str, dict]]:
    consumer = KafkaConsumer(cfg.kafka.topic_alerts, bootstrap_servers=cfg.kafka.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000,
                             group_id=None)
    try:
        return [(m.key.decode(), json.loads(m.value)) for m in consumer]
    finally:
        consumer.close()


@pytest.fixture()
def cfg(kafka_cfg: Config, tmp_path: Path) -> Config:
    topic = f"iot-alerts-{uuid.uuid4().hex[:8]}"
    out = kafka_cfg.with_overrides({"paths.lakehouse_root": str(tmp_path / "lakehouse"),
                                    "kafka.topic_alerts": topic})
    create_topics(out, {topic: 1})
    return out


def test_alerts_query_to_delta_and_kafka_idempotent(spark, cfg: Config) -> None:
    live = [silver_row("S_LIVE", at(m), 20.0 + (m % 2) * 0.5) for m in range(31)]
    hot = [silver_row("S_HOT", at(seconds=s), t) for s, t in ((0, 31), (10, 32), (20, 33))]
    jump = [silver_row("S_JUMP", at(0), 20.0), silver_row("S_JUMP", at(seconds=30), 26.0)]
    gone = [silver_row("S_GONE", at(m), 20.0) for m in range(6)]
    append_silver(spark, cfg, live + hot + jump + gone)

    run_once(spark, cfg)
    # Watermark after the data = 14:30 - 10 min = 14:20: every sensor silent since before
    # 14:10 is offline at last reading + 10 min; S_LIVE (last 14:30) is not.
    expected = {
        ("S_HOT", "HIGH_TEMP", "temperature", at(seconds=0)),
        ("S_HOT", "HIGH_TEMP", "temperature", at(seconds=10)),
        ("S_HOT", "HIGH_TEMP", "temperature", at(seconds=20)),
        ("S_HOT", "CONSECUTIVE_ALERTS", None, at(seconds=20)),
        ("S_HOT", "SENSOR_OFFLINE", None, at(10, 20)),
        ("S_JUMP", "RAPID_CHANGE", "temperature", at(seconds=30)),
        ("S_JUMP", "SENSOR_OFFLINE", None, at(10, 30)),
        ("S_GONE", "SENSOR_OFFLINE", None, at(15)),
    }
    assert table_alerts(spark, cfg) == expected
    messages = kafka_alerts(cfg)
    assert sorted((k, v["alert_type"], v["event_time"]) for k, v in messages) == sorted(
        (s, kind, t.isoformat().replace("+00:00", "Z")) for s, kind, _, t in expected)
    for key, value in messages:
        assert key == value["sensor_id"]
        assert value["alert_id"] == alert_id(value["sensor_id"], value["alert_type"],
                                             value["metric"], datetime.fromisoformat(
                                                 value["event_time"]))

    # Replaying everything from scratch (new checkpoint) inserts and publishes nothing new.
    replay = cfg.with_overrides({"paths.checkpoint_root": str(cfg.paths.lakehouse / "_cp2")})
    run_once(spark, replay)
    assert table_alerts(spark, cfg) == expected
    assert len(kafka_alerts(cfg)) == len(expected)

    # S_GONE comes back: RECOVERED at its first reading, from the original checkpoint's state.
    append_silver(spark, cfg, [silver_row("S_GONE", at(31), 20.0),
                               silver_row("S_LIVE", at(31), 20.0)])
    run_once(spark, cfg)
    assert table_alerts(spark, cfg) - expected == {
        ("S_GONE", "SENSOR_RECOVERED", None, at(31))}
    assert len(kafka_alerts(cfg)) == len(expected) + 1
    tailed = list(tail_alerts(cfg, from_beginning=True, idle_s=3, limit=len(expected) + 1))
    assert [a["alert_id"] for a in tailed] == [v["alert_id"] for _, v in kafka_alerts(cfg)]
    assert "SENSOR_RECOVERED" in format_alert(tailed[-1]) and "S_GONE" in format_alert(tailed[-1])

    # The same table through DuckDB, and the scoring command on a truth file of that silence.
    table = cfg.paths.table(tables.ALERTS)
    assert {(a["sensor_id"], a["alert_type"], a["metric"], a["event_time"].astimezone(UTC))
            for a in load_alerts(table)} == table_alerts(spark, cfg)
    truth = cfg.paths.lakehouse / "truth.jsonl"
    truth.write_text(json.dumps({"type": "event", "kind": "silence", "sensor_id": "S_GONE",
                                 "start": "2024-01-10T14:05:00Z",
                                 "end": "2024-01-10T14:31:00Z"}) + "\n")
    args = ["alerts", "score", "--truth", str(truth), "--table", str(table)]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "silence               1         1  1.000" in result.output
    assert "UNEXPLAINED HIGH_TEMP S_HOT" in result.output
    assert CliRunner().invoke(cli, [*args, "--strict"]).exit_code == 1

    # Processing-time fallback for a silent fleet (newest event time seen 14:31): the sensors
    # heard within offline + watermark of it get the OFFLINE the event-time path would raise.
    before = table_alerts(spark, cfg)
    rows = silent_fleet_offline(spark, cfg, anchor_ms=int(at(31).timestamp() * 1000),
                                now=datetime(2024, 1, 10, 15, 0, tzinfo=UTC))
    assert {(r.sensor_id, r.event_time) for r in rows} == {("S_GONE", at(41)),
                                                           ("S_LIVE", at(41))}
    publisher = AlertPublisher(cfg.kafka)
    try:
        assert deliver_alerts(spark, cfg, publisher, rows) == (2, 2)
        assert deliver_alerts(spark, cfg, publisher, rows) == (2, 0)   # idempotent
    finally:
        publisher.close()
    assert table_alerts(spark, cfg) - before == {("S_GONE", "SENSOR_OFFLINE", None, at(41)),
                                                 ("S_LIVE", "SENSOR_OFFLINE", None, at(41))}
    assert len(kafka_alerts(cfg)) == len(expected) + 3


def test_sensors_sharing_a_state_key_keep_their_own_rules(spark, cfg: Config) -> None:
    """alerts.key_buckets=1: every sensor under one state key and one timer. A sensor that
    goes quiet while another of its key reports goes offline on the key's timer, and its
    state is evicted state_ttl_s after its last reading (so no RECOVERED when it returns)."""
    one = cfg.with_overrides({"alerts.key_buckets": 1, "alerts.state_ttl_s": 1800})
    append_silver(spark, one, [silver_row(s, at(m), 20.0) for s in ("A", "B", "C")
                               for m in range(6)])
    run_once(spark, one)
    assert table_alerts(spark, one) == set()

    # A reports until 14:60, C until 14:25, B not at all. Watermark 14:50: B (last 14:05) is
    # offline at 14:15 and evicted at 14:35; C is offline at 14:35, its eviction is 14:55.
    append_silver(spark, one, [silver_row("A", at(m), 20.0) for m in range(6, 61)]
                  + [silver_row("C", at(m), 20.0) for m in range(6, 26)])
    run_once(spark, one)
    offline = {("B", "SENSOR_OFFLINE", None, at(15)), ("C", "SENSOR_OFFLINE", None, at(35))}
    assert table_alerts(spark, one) == offline

    append_silver(spark, one, [silver_row(s, at(62), 20.0) for s in ("A", "B", "C")])
    run_once(spark, one)
    assert table_alerts(spark, one) - offline == {("C", "SENSOR_RECOVERED", None, at(62))}


def test_alert_state_stays_flat_over_a_simulated_run(spark, base_cfg: Config,
                                                     tmp_path: Path) -> None:
    """`lakehouse bench-state` on a small fleet: its own broker and data folder, one alerts
    run per half hour of event time; the state stops growing once every sensor is known."""
    from jobs.bench_state import alert_state_run

    points = alert_state_run(base_cfg, sensors=12, hours=2.0, chunk_min=30.0,
                             interval_s=60.0, folder=tmp_path / "state")
    assert [p.event_time_upto[:16] for p in points] == [
        f"2024-01-10T{h:02d}:{m:02d}" for h, m in ((0, 30), (1, 0), (1, 30), (2, 0))]
    readings = [p.readings for p in points]
    assert readings == sorted(readings) and readings[0] > 0 and len(set(readings)) == 4
    assert all(p.state_rows for p in points), points
    assert len({p.state_rows for p in points}) == 1, "the state grew with the readings"
    assert all(p.batch_ms for p in points)
