"""The alerts query end to end on real parts: readings on the real Kafka broker's input topic
-> transformWithStateInPandas -> gold/alerts (MERGE) and the broker's alert topic."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from kafka import KafkaConsumer, KafkaProducer
from pyspark.sql import Row

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


def send(spark, cfg: Config, rows: list[tuple]) -> None:
    """The readings on the input topic (what the alerts query reads) and in silver (what the
    silent-fleet fallback reads), as the pipeline would hold them."""
    names = SILVER_SCHEMA.fieldNames()
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, acks="all")
    try:
        for row in rows:
            r = dict(zip(names, row, strict=True))
            body = {"sensor_id": r["sensor_id"], "timestamp": r["event_time"].isoformat(),
                    **{k: r[k] for k in ("temperature", "humidity", "pressure", "location")}}
            producer.send(cfg.kafka.topic_in, json.dumps(body).encode(),
                          key=r["sensor_id"].encode(), partition=0)
        producer.flush()
    finally:
        producer.close()
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


def kafka_alerts(cfg: Config, kind: str | None = "alert") -> list[tuple[str, dict]]:
    """The messages on the alert topic, in order: the alerts (``kind`` alert), the
    resolutions (``kind`` resolution) or, with None, both."""
    consumer = KafkaConsumer(cfg.kafka.topic_alerts, bootstrap_servers=cfg.kafka.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000,
                             group_id=None)
    try:
        messages = [(m.key.decode(), json.loads(m.value)) for m in consumer]
    finally:
        consumer.close()
    return [(k, v) for k, v in messages if kind is None or v["kind"] == kind]


@pytest.fixture()
def cfg(kafka_cfg: Config, tmp_path: Path) -> Config:
    tag = uuid.uuid4().hex[:8]
    out = kafka_cfg.with_overrides({"paths.lakehouse_root": str(tmp_path / "lakehouse"),
                                    "kafka.topic_in": f"iot-sensors-{tag}",
                                    "kafka.topic_alerts": f"iot-alerts-{tag}"})
    create_topics(out, {out.kafka.topic_in: 1, out.kafka.topic_alerts: 1})
    return out


@pytest.mark.parametrize("profile", ["production", "seed"])
def test_alerts_query_to_delta_and_kafka_idempotent(spark, cfg: Config, profile: str) -> None:
    """The same alerts under both profiles: these sensors report every 10-60 s (offline
    after the seed's 10 minutes in both) and none is past the detector's warm-up."""
    cfg = cfg.with_overrides({"alerts.profile": profile})
    live = [silver_row("S_LIVE", at(m), 20.0 + (m % 2) * 0.5) for m in range(31)]
    hot = [silver_row("S_HOT", at(seconds=s), t) for s, t in ((0, 31), (10, 32), (20, 33))]
    jump = [silver_row("S_JUMP", at(0), 20.0), silver_row("S_JUMP", at(seconds=30), 26.0)]
    gone = [silver_row("S_GONE", at(m), 20.0) for m in range(6)]
    send(spark, cfg, live + hot + jump + gone)

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
    send(spark, cfg, [silver_row("S_GONE", at(31), 20.0),
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
        # A micro-batch's delivery: the OFFLINE rows are found in the table (two paths raise
        # them), another alert is new; the replay of the batch delivers nothing.
        gone = next(r for r in rows if r.sensor_id == "S_GONE")
        hot = Row(**{**gone.asDict(), "alert_id": "hot-41", "alert_type": "HIGH_TEMP"})
        assert deliver_alerts(spark, cfg, publisher, [*rows, hot], batch=("t", 0)) == (3, 1)
        assert deliver_alerts(spark, cfg, publisher, [*rows, hot], batch=("t", 0)) == (3, 0)
    finally:
        publisher.close()
    assert table_alerts(spark, cfg) - before == {("S_GONE", "SENSOR_OFFLINE", None, at(41)),
                                                 ("S_LIVE", "SENSOR_OFFLINE", None, at(41)),
                                                 ("S_GONE", "HIGH_TEMP", None, at(41))}
    assert len(kafka_alerts(cfg)) == len(expected) + 4


def test_production_profile_runs_in_the_stream(spark, cfg: Config) -> None:
    """The default profile in the query, over two runs (state through the store): an hourly
    sensor is not offline between its readings, a warmed-up sensor's 4 °C spike is one
    ANOMALY, and the seed's trailing rules raise nothing; the seed profile on the same
    readings pages the hourly sensor on every reading and raises its trailing rules."""
    assert cfg.alerts.profile == "production"
    hourly = [silver_row("S_HOURLY", at(60 * h), 20.0 + 0.1 * (h % 2)) for h in range(8)]
    steady = ([silver_row("S_STEADY", at(m), 20.0 + (0.2 if m % 2 else 0.0))
               for m in range(181)] + [silver_row("S_STEADY", at(181), 24.0)]
              + [silver_row("S_STEADY", at(m), 20.0) for m in range(182, 481)])
    first = [r for r in hourly + steady if r[1] < at(240)]
    send(spark, cfg, first)
    run_once(spark, cfg)
    send(spark, cfg, [r for r in hourly + steady if r[1] >= at(240)])
    run_once(spark, cfg)
    assert table_alerts(spark, cfg) == {("S_STEADY", "ANOMALY", "temperature", at(181))}

    seed = cfg.with_overrides({"alerts.profile": "seed",
                               "paths.checkpoint_root": str(cfg.paths.lakehouse / "_seed"),
                               "paths.lakehouse_root": str(cfg.paths.lakehouse / "seed")})
    run_once(spark, seed)
    kinds = [k for s, k, _, _ in table_alerts(spark, seed) if s == "S_HOURLY"]
    assert kinds.count("SENSOR_OFFLINE") == 8 and kinds.count("SENSOR_RECOVERED") == 7
    assert {("S_STEADY", "DYNAMIC_THRESHOLD", "temperature", at(181)),
            ("S_STEADY", "ZSCORE_OUTLIER", "temperature", at(181))} <= table_alerts(spark, seed)


def test_sensors_sharing_a_state_key_keep_their_own_rules(spark, cfg: Config) -> None:
    """alerts.key_buckets=1: every sensor under one state key and one timer. A sensor that
    goes quiet while another of its key reports goes offline on the key's timer, and its
    state is evicted state_ttl_s after its last reading (so no RECOVERED when it returns)."""
    one = cfg.with_overrides({"alerts.key_buckets": 1, "alerts.state_ttl_s": 1800})
    send(spark, one, [silver_row(s, at(m), 20.0) for s in ("A", "B", "C")
                               for m in range(6)])
    run_once(spark, one)
    assert table_alerts(spark, one) == set()

    # A reports until 14:60, C until 14:25, B not at all. Watermark 14:50: B (last 14:05) is
    # offline at 14:15 and evicted at 14:35; C is offline at 14:35, its eviction is 14:55.
    send(spark, one, [silver_row("A", at(m), 20.0) for m in range(6, 61)]
                  + [silver_row("C", at(m), 20.0) for m in range(6, 26)])
    run_once(spark, one)
    offline = {("B", "SENSOR_OFFLINE", None, at(15)), ("C", "SENSOR_OFFLINE", None, at(35))}
    assert table_alerts(spark, one) == offline

    send(spark, one, [silver_row(s, at(62), 20.0) for s in ("A", "B", "C")])
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


def produce_raw(cfg: Config, values: list[str]) -> None:
    producer = KafkaProducer(bootstrap_servers=cfg.kafka.bootstrap, acks="all")
    try:
        for v in values:
            producer.send(cfg.kafka.topic_in, v.encode(), partition=0)
        producer.flush()
    finally:
        producer.close()


def wire(sensor: str, t: datetime, temp: float) -> str:
    return json.dumps({"sensor_id": sensor, "timestamp": t.isoformat(), "temperature": temp,
                       "humidity": 50.0, "pressure": 1013.0, "location": f"loc-{sensor}"})


def test_rules_see_each_reading_once_and_bad_records_not_at_all(spark, cfg: Config) -> None:
    """The query reads Kafka itself: a duplicated message counts once (CONSECUTIVE_ALERTS on
    the third distinct hot reading, not on the copy), a record silver would quarantine raises
    nothing, and a copy in a later batch raises nothing again."""
    first = wire("S_DUP", at(seconds=0), 31.0)
    produce_raw(cfg, [first, first, wire("S_DUP", at(seconds=10), 32.0), '{"sensor_id": "S_BAD"',
                      wire("S_BAD", at(seconds=5), 99.0), wire("S_DUP", at(seconds=20), 33.0)])
    run_once(spark, cfg)
    hot = {("S_DUP", "HIGH_TEMP", "temperature", at(seconds=s)) for s in (0, 10, 20)}
    assert table_alerts(spark, cfg) == hot | {("S_DUP", "CONSECUTIVE_ALERTS", None,
                                              at(seconds=20))}
    produce_raw(cfg, [wire("S_DUP", at(seconds=10), 32.0), wire("S_DUP", at(seconds=30), 29.0)])
    run_once(spark, cfg)
    assert len(table_alerts(spark, cfg)) == 4
    assert len(kafka_alerts(cfg)) == 4


def test_static_alerts_go_out_once_by_the_realtime_query(spark, cfg: Config) -> None:
    """Fresh readings (produced within the watermark of their event time): the real-time
    query publishes their static alerts, with the alert ids gold keeps; the stateful query
    writes them to gold and publishes only the rest. Old readings: the stateful query
    publishes everything."""
    from jobs import realtime_alerts_job

    now = datetime.now(UTC).replace(microsecond=0)
    fresh = [wire("S_RT", now + timedelta(seconds=s), 31.0 + s / 10) for s in (0, 10, 20)]
    old = [wire("S_OLD", at(seconds=0), 35.0)]
    produce_raw(cfg, fresh + old)
    for q in realtime_alerts_job.start(spark, cfg, trigger={"availableNow": True}):
        q.awaitTermination(300)
        assert q.exception() is None, q.exception()
    realtime = [v for _, v in kafka_alerts(cfg)]
    assert sorted((v["sensor_id"], v["alert_type"]) for v in realtime) == [
        ("S_RT", "HIGH_TEMP")] * 3
    run_once(spark, cfg)
    gold = spark.read.format("delta").load(str(cfg.paths.table(tables.ALERTS))).collect()
    by_id = {r.alert_id: r for r in gold}
    assert {v["alert_id"] for v in realtime} <= set(by_id)
    for v in realtime:  # the same alert on both paths
        row = by_id[v["alert_id"]]
        assert (row.severity, row.metric, row.value, row.threshold) == (
            v["severity"], v["metric"], v["value"], v["threshold"])
        assert row.event_time.replace(tzinfo=UTC) == datetime.fromisoformat(v["event_time"])
    published = [v for _, v in kafka_alerts(cfg)]
    assert sorted(v["alert_type"] for v in published if v["sensor_id"] == "S_RT") == [
        "CONSECUTIVE_ALERTS", "HIGH_TEMP", "HIGH_TEMP", "HIGH_TEMP"]
    assert [v["alert_type"] for v in published if v["sensor_id"] == "S_OLD"].count(
        "HIGH_TEMP") == 1
    assert {v["alert_id"] for v in published} == set(by_id)


def _committed_batches(folder: Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _uncommit_after(cfg: Config, last_kept: int) -> None:
    """The checkpoint as a crash leaves it after batch ``last_kept + 1`` was delivered but
    before Spark committed it: that batch's offsets kept, its commit and any later batch
    gone. The next run replays the batch."""
    ckpt = cfg.paths.checkpoint("alerts")
    for sub, keep in (("commits", last_kept), ("offsets", last_kept + 1)):
        for n in _committed_batches(ckpt / sub):
            if n > keep:
                (ckpt / sub / str(n)).unlink()
                (ckpt / sub / f".{n}.crc").unlink(missing_ok=True)


def _resolutions_merged(spark, cfg: Config) -> list[int]:
    """numTargetRowsUpdated of each MERGE in gold/alerts' history, oldest first."""
    from delta.tables import DeltaTable

    history = DeltaTable.forPath(spark, str(cfg.paths.table(tables.ALERTS))).history()
    return [int(r.operationMetrics["numTargetRowsUpdated"])
            for r in history.orderBy("version").collect() if r.operation == "MERGE"]


def test_an_episode_is_resolved_once_in_gold_and_on_kafka_even_after_a_replay(
        spark, cfg: Config) -> None:
    """Production profile: S_RES rises past 30 °C (two HIGH_TEMP alerts, one episode), the
    next run brings it back: both rows get the reading's time as resolved_at by one MERGE, and
    a resolution with the opening alert's id goes on Kafka. The replay of that batch (a crash
    before Spark's commit) publishes the resolution again and changes no row. An episode that
    opens and ends within one batch is resolved in the append, with no MERGE."""
    assert cfg.alerts.profile == "production"
    ramp = [20.0] * 6 + [22.0, 24.0, 26.0, 28.0, 30.5, 32.0]  # 4 °C a minute: no RAPID_CHANGE
    send(spark, cfg, [silver_row("S_RES", at(seconds=30 * i), t) for i, t in enumerate(ramp)])
    run_once(spark, cfg)
    hot = {("S_RES", "HIGH_TEMP", "temperature", at(5)),
           ("S_RES", "HIGH_TEMP", "temperature", at(5, 30))}
    assert table_alerts(spark, cfg) == hot
    alerts_path = str(cfg.paths.table(tables.ALERTS))

    def resolved() -> dict[datetime, datetime | None]:
        return {r.event_time.replace(tzinfo=UTC): r.resolved_at and r.resolved_at.replace(
            tzinfo=UTC) for r in spark.read.format("delta").load(alerts_path).collect()}

    assert resolved() == {at(5): None, at(5, 30): None}
    first_run = _committed_batches(cfg.paths.checkpoint("alerts") / "commits")[-1]

    send(spark, cfg, [silver_row("S_RES", at(6), 29.5), silver_row("S_RES", at(6, 30), 28.0)])
    run_once(spark, cfg)
    assert resolved() == {at(5): at(6), at(5, 30): at(6)}
    assert _resolutions_merged(spark, cfg) == [2]
    (res,) = kafka_alerts(cfg, "resolution")
    opening = next(v for _, v in kafka_alerts(cfg) if v["event_time"] == "2024-01-10T14:05:00Z")
    assert res[1]["alert_id"] == opening["alert_id"] and res[0] == "S_RES"
    assert (res[1]["alert_type"], res[1]["metric"], res[1]["resolved_at"]) == (
        "HIGH_TEMP", "temperature", "2024-01-10T14:06:00Z")
    assert opening["kind"] == "alert" and opening["resolved_at"] is None

    _uncommit_after(cfg, first_run)
    run_once(spark, cfg)
    assert resolved() == {at(5): at(6), at(5, 30): at(6)}
    assert sum(_resolutions_merged(spark, cfg)) == 2, "no row resolved twice"
    again = kafka_alerts(cfg, "resolution")
    assert len(again) == 2 and {v["alert_id"] for _, v in again} == {opening["alert_id"]}
    assert len(kafka_alerts(cfg)) == 2, "the replay published no alert again"

    # Within one batch: 31 °C at 14:07, back at 14:07:30; appended resolved, no MERGE.
    merges = len(_resolutions_merged(spark, cfg))
    send(spark, cfg, [silver_row("S_RES", at(7), 31.0), silver_row("S_RES", at(7, 30), 29.0)])
    run_once(spark, cfg)
    assert resolved()[at(7)] == at(7, 30)
    assert len(_resolutions_merged(spark, cfg)) == merges


def test_a_table_of_the_older_schema_gains_resolved_at(spark, cfg: Config) -> None:
    """gold/alerts as the previous version wrote it (no resolved_at): the alerts query adds
    the column, closes the older rows at their event time (their episodes were never
    recorded; null would count them as active for ever) and appends its own alerts open."""
    from pyspark.sql.types import StructType

    from gold.schema import ALERT_SCHEMA

    old_schema = StructType([f for f in ALERT_SCHEMA.fields if f.name != "resolved_at"])
    old_row = ("old-1", "S_OLD", "loc", "SENSOR_OFFLINE", "CRITICAL", at(-60), at(-60), None,
               600.0, 600.0, None)
    path = str(cfg.paths.table(tables.ALERTS))
    spark.createDataFrame([old_row], old_schema).write.format("delta").save(path)
    assert "resolved_at" not in spark.read.format("delta").load(path).columns
    from jobs.gold_job import start_alert_counts

    def count_alerts() -> int:  # gold_alert_counts_5m reads gold/alerts as a stream
        query = start_alert_counts(spark, cfg, trigger={"availableNow": True})
        query.awaitTermination(300)
        assert query.exception() is None, query.exception()
        counts = spark.read.format("delta").load(str(cfg.paths.table(tables.ALERT_COUNTS_5M)))
        return sum(r.alerts for r in counts.collect())

    assert count_alerts() == 1  # its checkpoint made on the older schema

    send(spark, cfg, [silver_row("S_NEW", at(0), 20.0), silver_row("S_NEW", at(1), 31.0)])
    run_once(spark, cfg)
    assert count_alerts() == 3, "the stream reads on past the migration's commit"
    rows = {r.alert_id: r for r in spark.read.format("delta").load(path).collect()}
    assert rows["old-1"].resolved_at.replace(tzinfo=UTC) == at(-60)
    new = [r for r in rows.values() if r.sensor_id == "S_NEW"]
    assert sorted((r.alert_type, r.resolved_at) for r in new) == [
        ("HIGH_TEMP", None), ("RAPID_CHANGE", None)]
    # a second start finds nothing to migrate
    from jobs.alerts_job import add_resolved_at

    assert add_resolved_at(spark, cfg.paths.table(tables.ALERTS)) is False
