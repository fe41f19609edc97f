"""The simulated fleet: determinism, fault and event rates, alert conditions, sinks, CLI.

A small reference validator and alert checker written here in plain Python (independent of the
generator's code) decides what silver must say about each message and which alert conditions
the readings meet.
"""

from __future__ import annotations

import json
import math
import socket
import statistics
import threading
from collections import Counter, defaultdict, deque
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from generator.driver import Pacing, RunResult, SinkSpec, drive, run_generator, split_spec
from generator.events import EVENT_KINDS
from generator.faults import FAULT_KINDS
from generator.fleet import REGISTRY_FIELDS, make_fleet, read_registry_csv, write_registry_csv
from generator.sinks import FileSink, SocketSink
from generator.stream import GeneratorSpec, Message, SourceStats, generate_messages
from jobs.cli import cli

START = datetime(2024, 1, 10, tzinfo=UTC)
RANGES = {"temperature": (-50.0, 50.0), "humidity": (0.0, 100.0), "pressure": (870.0, 1085.0)}
FIELDS = ("sensor_id", "timestamp", "temperature", "humidity", "pressure", "location")


def _ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


# -- reference validator (DESIGN.md "Validation") ----------------------------------------------


def reasons_of(value: bytes, now: datetime) -> list[str]:
    try:
        body = json.loads(value)
    except ValueError:
        return ["MALFORMED_JSON"]
    if not isinstance(body, dict):
        return ["MALFORMED_JSON"]
    out = [f"MISSING_FIELD:{f}" for f in FIELDS if body.get(f) in (None, "")]
    for f in ("temperature", "humidity", "pressure"):
        if f not in body:
            continue
        v = body[f]
        if isinstance(v, bool) or not isinstance(v, int | float):
            out.append(f"BAD_TYPE:{f}")
        elif not RANGES[f][0] <= v <= RANGES[f][1]:
            out.append(f"OUT_OF_RANGE:{f}")
    if "timestamp" in body:
        try:
            t = _ts(str(body["timestamp"]))
            if t.tzinfo is None or t > now + timedelta(days=1):
                out.append("BAD_TIMESTAMP")
        except ValueError:
            out.append("BAD_TIMESTAMP")
    return out


# -- helpers -----------------------------------------------------------------------------------


def run_spec(spec: GeneratorSpec) -> tuple[list[Message], list[dict], SourceStats]:
    truth: list[dict] = []
    stats = SourceStats()
    messages = list(generate_messages(spec, truth=truth.append, stats=stats))
    return messages, truth, stats


def within(observed: int, expected: float, sigmas: float = 5.0, slack: float = 0.0) -> bool:
    return abs(observed - expected) <= sigmas * math.sqrt(max(expected, 1.0)) + slack * expected


@pytest.fixture(scope="module")
def fault_run() -> tuple[GeneratorSpec, list[Message], list[dict], SourceStats]:
    spec = GeneratorSpec(sensors=tuple(make_fleet(10, 7)), seed=7, interval_s=5.0, start=START,
                         duration_s=12 * 3600, faults={k: 0.01 for k in FAULT_KINDS})
    return (spec, *run_spec(spec))


@pytest.fixture(scope="module")
def event_run() -> tuple[GeneratorSpec, list[Message], list[dict], SourceStats]:
    spec = GeneratorSpec(sensors=tuple(make_fleet(30, 11)), seed=11, interval_s=5.0,
                         start=START, duration_s=24 * 3600,
                         events={k: 0.002 for k in EVENT_KINDS},
                         faults={"malformed_json": 0.002, "late_within_watermark": 0.002,
                                 "out_of_order": 0.002, "duplicate": 0.002})
    return (spec, *run_spec(spec))


# -- fleet and registry ------------------------------------------------------------------------


def test_registry_has_exactly_the_silver_registry_columns(tmp_path: Path) -> None:
    from silver.schema import REGISTRY_SCHEMA

    assert REGISTRY_FIELDS == tuple(REGISTRY_SCHEMA.fieldNames())
    fleet = make_fleet(250, 3)
    path = write_registry_csv(fleet, tmp_path / "registry" / "sensors.csv")
    header = path.read_text().splitlines()[0].split(",")
    assert header == list(REGISTRY_FIELDS)
    rows = read_registry_csv(path)
    assert [r["sensor_id"] for r in rows] == [f"SENSOR_{i:03d}" for i in range(1, 251)]
    for row in rows:
        assert isinstance(row["floor"], int) and row["floor"] >= 1
        assert row["location"] == f"{row['building']} - Floor {row['floor']}"
        assert str(row["location"]).startswith("Building ")
        assert row["room"] and row["zone"]


def test_fleet_is_deterministic_and_ids_fit_the_size() -> None:
    assert make_fleet(50, 1) == make_fleet(50, 1)
    assert make_fleet(50, 1) != make_fleet(50, 2)
    big = make_fleet(10_000, 1)
    assert big[0].sensor_id == "SENSOR_00001" and big[-1].sensor_id == "SENSOR_10000"
    assert len({s.sensor_id for s in big}) == 10_000
    assert len({s.building for s in big}) > 5


# -- determinism -------------------------------------------------------------------------------


def test_same_spec_gives_byte_identical_messages_and_truth() -> None:
    def spec(seed: int) -> GeneratorSpec:
        return GeneratorSpec(sensors=tuple(make_fleet(20, seed)), seed=seed, interval_s=2.0,
                             start=START, duration_s=3 * 3600,
                             faults={k: 0.02 for k in FAULT_KINDS},
                             events={k: 0.002 for k in EVENT_KINDS})

    a, truth_a, _ = run_spec(spec(5))
    b, truth_b, _ = run_spec(spec(5))
    assert [(m.key, m.value, m.fault) for m in a] == [(m.key, m.value, m.fault) for m in b]
    assert truth_a == truth_b
    c, _, _ = run_spec(spec(6))
    assert [m.value for m in a] != [m.value for m in c]


def test_count_bounds_the_stream_exactly_and_every_sensor_reports_each_interval() -> None:
    fleet = make_fleet(7, 1)
    spec = GeneratorSpec(sensors=tuple(fleet), seed=1, interval_s=10.0, start=START, count=700)
    messages = list(generate_messages(spec))
    assert len(messages) == 700
    per_sensor: dict[str, list[datetime]] = defaultdict(list)
    for m in messages:
        assert m.fault is None and m.key == (m.sensor_id or "").encode()
        body = json.loads(m.value)
        assert tuple(body) == FIELDS
        assert _ts(body["timestamp"]) == m.event_time
        per_sensor[body["sensor_id"]].append(_ts(body["timestamp"]))
    assert set(per_sensor) == {s.sensor_id for s in fleet}
    for times in per_sensor.values():
        gaps = {(b - a).total_seconds() for a, b in zip(times, times[1:], strict=False)}
        assert gaps == {10.0}
    times = [m.event_time for m in messages]
    assert times == sorted(times)


def test_spec_rejects_what_it_cannot_honour() -> None:
    fleet = tuple(make_fleet(3, 1))
    with pytest.raises(ValueError, match="unknown fault"):
        GeneratorSpec(sensors=fleet, faults={"gremlins": 0.1})
    with pytest.raises(ValueError, match="within"):
        GeneratorSpec(sensors=fleet, events={"heat_spike": 1.5})
    with pytest.raises(ValueError, match="timezone"):
        GeneratorSpec(sensors=fleet, start=datetime(2024, 1, 1))  # noqa: DTZ001
    with pytest.raises(ValueError, match="60 s"):
        GeneratorSpec(sensors=fleet, interval_s=120, events={"rapid_jump": 0.01})


# -- faults ------------------------------------------------------------------------------------


def test_each_fault_kind_appears_at_its_rate_and_in_the_truth(fault_run) -> None:
    spec, messages, truth, stats = fault_run
    by_kind = Counter(m.fault for m in messages if m.fault)
    assert set(by_kind) == set(FAULT_KINDS)
    for kind in FAULT_KINDS:
        expected = spec.faults[kind] * stats.fault_opportunities
        # held kinds flushed at the very end are relabelled by how late they really are
        slack = 0.1 if kind.startswith("late") or kind == "out_of_order" else 0.0
        assert within(by_kind[kind], expected, slack=slack), (kind, by_kind[kind], expected)
    held = sum(by_kind[k] for k in ("out_of_order", "late_within_watermark",
                                    "late_beyond_watermark"))
    assert within(held, 0.03 * stats.fault_opportunities)
    fault_lines = [t for t in truth if t["type"] == "fault"]
    assert Counter((t["fault"], t["sensor_id"], t["event_time"]) for t in fault_lines) == Counter(
        (m.fault, m.sensor_id, m.event_time.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z")
        for m in messages if m.fault
    )


def test_every_message_gets_exactly_the_expected_reasons(fault_run) -> None:
    _, messages, truth, _ = fault_run
    now = messages[-1].event_time + timedelta(hours=1)
    expected = iter([t["expected_reasons"] for t in truth if t["type"] == "fault"])
    seen_reasons: Counter[str] = Counter()
    for m in messages:
        got = reasons_of(m.value, now)
        want = next(expected) if m.fault else []
        assert got == want, (m.fault, m.value)
        assert len(got) <= 1
        seen_reasons.update(r.split(":")[0] for r in got)
    assert set(seen_reasons) == {"MALFORMED_JSON", "MISSING_FIELD", "BAD_TYPE", "OUT_OF_RANGE",
                                 "BAD_TIMESTAMP"}


def test_timing_faults_arrive_as_late_as_their_kind_says(fault_run) -> None:
    spec, messages, _, _ = fault_run
    cutoff = spec.start + timedelta(seconds=spec.duration_s or 0) - timedelta(hours=1)
    newest = datetime.min.replace(tzinfo=UTC)
    seen: dict[bytes, int] = {}
    checked = Counter()
    for i, m in enumerate(messages):
        assert m.event_time is not None
        behind = (newest - m.event_time).total_seconds()
        if m.fault == "duplicate":
            assert m.value in seen and messages[seen[m.value]].fault is None
        elif m.fault in ("out_of_order", "late_within_watermark", "late_beyond_watermark"):
            if m.event_time < cutoff:  # not part of the final flush
                low, high = {"out_of_order": (0, 60), "late_within_watermark": (60, 540),
                             "late_beyond_watermark": (900, 3600)}[m.fault]
                assert low < behind <= high, (m.fault, behind)
                checked[m.fault] += 1
            assert reasons_of(m.value, m.event_time) == []
        elif m.fault == "extra_fields":
            assert set(json.loads(m.value)) > set(FIELDS)
        elif m.fault is None:
            assert behind <= 0  # clean readings go out in event-time order
        seen.setdefault(m.value, i)
        if m.fault in (None, "extra_fields"):
            newest = max(newest, m.event_time)
    assert min(checked.values()) > 100


# -- events ------------------------------------------------------------------------------------


def _valid_readings(messages: list[Message]) -> dict[str, list[tuple[datetime, float, float,
                                                                       float]]]:
    """Per sensor, the readings silver keeps (valid, de-duplicated), in event-time order."""
    now = messages[-1].event_time + timedelta(hours=1)
    out: dict[str, dict[datetime, tuple]] = defaultdict(dict)
    for m in messages:
        if reasons_of(m.value, now):
            continue
        b = json.loads(m.value)
        t = _ts(b["timestamp"])
        out[b["sensor_id"]].setdefault(t, (t, b["temperature"], b["humidity"], b["pressure"]))
    return {s: sorted(rows.values()) for s, rows in out.items()}


def _minute_means(rows: list[tuple]) -> list[tuple[datetime, float]]:
    minutes: dict[datetime, list[float]] = defaultdict(list)
    for t, temp, _, _ in rows:
        minutes[t.replace(second=0, microsecond=0)].append(temp)
    return sorted((m, statistics.fmean(v)) for m, v in minutes.items())


def _rising_runs(means: list[tuple[datetime, float]]) -> list[tuple[datetime, datetime]]:
    """(first, last) minute of each run of >= 15 strict rises of consecutive minutes."""
    runs, start, rises = [], None, 0
    for (m0, v0), (m1, v1) in zip(means, means[1:], strict=False):
        if m1 - m0 == timedelta(minutes=1) and v1 > v0:
            start = start or m0
            rises += 1
        else:
            if rises >= 15:
                runs.append((start, m0))
            start, rises = None, 0
    if rises >= 15:
        runs.append((start, means[-1][0]))
    return runs


def _zscores(rows: list[tuple], col: int, min_n: int = 10) -> list[float | None]:
    """|x - mean| / std of the readings in [t - 30 min, t), with >= ``min_n`` of them."""
    window: deque[tuple[datetime, float]] = deque()
    s = s2 = 0.0
    out: list[float | None] = []
    for row in rows:
        t, x = row[0], row[col]
        while window and window[0][0] < t - timedelta(minutes=30):
            _, old = window.popleft()
            s -= old
            s2 -= old * old
        n = len(window)
        z = None
        if n >= min_n:
            var = (s2 - s * s / n) / (n - 1)
            if var > 1e-12:
                z = abs(x - s / n) / math.sqrt(var)
        out.append(z)
        window.append((t, x))
        s += x
        s2 += x * x
    return out


def test_each_event_kind_appears_at_its_rate_and_in_the_truth(event_run) -> None:
    spec, _, truth, stats = event_run
    events = [t for t in truth if t["type"] == "event"]
    by_kind = Counter(t["kind"] for t in events)
    assert set(by_kind) == set(EVENT_KINDS)
    for kind in EVENT_KINDS:
        assert within(by_kind[kind], spec.events[kind] * stats.event_opportunities), kind
    assert by_kind == Counter(stats.events)
    assert not any(t.get("truncated") for t in events)


def test_injected_events_meet_their_alert_conditions(event_run) -> None:
    _, messages, truth, _ = event_run
    readings = _valid_readings(messages)
    for ev in (t for t in truth if t["type"] == "event"):
        rows = readings[ev["sensor_id"]]
        start, end = _ts(ev["start"]), _ts(ev["end"])
        inside = [r for r in rows if start <= r[0] <= end]
        kind = ev["kind"]
        if kind == "heat_spike":
            assert inside and all(r[1] > 30 for r in inside), ev
        elif kind == "cold_drop":
            assert inside and all(r[1] < 10 for r in inside), ev
        elif kind == "humidity_surge":
            assert inside and all(80 < r[2] <= 100 for r in inside), ev
        elif kind == "rapid_jump":
            assert any(
                abs(r[1] - q[1]) > 5
                for r in inside for q in rows if r[0] - timedelta(seconds=60) <= q[0] < r[0]
            ), ev
        elif kind == "rising_trend":
            # a run may begin with clean minutes that happened to rise before the event; the
            # alert falls at the end of the minute completing the 15th rise, inside the event
            runs = _rising_runs(_minute_means(rows))
            assert any(start <= a + timedelta(minutes=16) <= end for a, _ in runs), ev
        elif kind == "outlier":
            i = next(i for i, r in enumerate(rows) if r[0] == start)
            z = _zscores(rows, 1)[i]
            assert z is not None and z > 3, (ev, z)
            assert 10 <= rows[i][1] <= 30 and abs(rows[i][1] - rows[i - 1][1]) <= 5
        elif kind == "silence":
            assert [r[0] for r in inside] == [start, end], ev
            assert end - start > timedelta(minutes=10), ev


def test_clean_readings_trip_no_alert_condition(event_run) -> None:
    _, messages, truth, _ = event_run
    readings = _valid_readings(messages)
    windows: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for ev in (t for t in truth if t["type"] == "event"):
        windows[ev["sensor_id"]].append((_ts(ev["start"]), _ts(ev["end"])))

    def in_event(sid: str, t: datetime, after: timedelta = timedelta(0)) -> bool:
        return any(a <= t <= b + after for a, b in windows[sid])

    checked = 0
    for sid, rows in readings.items():
        # with only 10-30 trailing readings the sample deviation itself is too noisy: bounded
        # noise can then still score above 3 (first minutes of a stream); not checked there
        zs = {c: _zscores(rows, c, min_n=30) for c in (1, 2, 3)}
        for i, (t, temp, hum, _) in enumerate(rows):
            if in_event(sid, t):
                continue
            checked += 1
            assert 10 <= temp <= 30 and hum <= 80, (sid, t, temp, hum)
            if i and not in_event(sid, rows[i - 1][0]):
                assert rows[i][0] - rows[i - 1][0] <= timedelta(minutes=10), (sid, t)
                for q in rows[max(0, i - 20):i]:
                    if t - q[0] <= timedelta(seconds=60) and not in_event(sid, q[0]):
                        assert abs(temp - q[1]) <= 5, (sid, t)
            if not in_event(sid, t, after=timedelta(minutes=30)):
                for c in (1, 2, 3):
                    assert zs[c][i] is None or zs[c][i] <= 3, (sid, t, c, zs[c][i])
        for a, b in _rising_runs(_minute_means(rows)):
            assert in_event(sid, a + timedelta(minutes=1)) or in_event(sid, b), (sid, a, b)
    assert checked > 400_000


# -- driver: pacing with an injected clock -----------------------------------------------------


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.now += s


class ListSink:
    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.delivered = 0
        self.errors = 0
        self.closed = False

    def send(self, msg: Message) -> None:
        self.messages.append(msg)

    def flush(self) -> None:
        self.delivered = len(self.messages)

    def close(self) -> None:
        self.flush()
        self.closed = True


def test_rate_pacing_holds_the_target_rate() -> None:
    spec = GeneratorSpec(sensors=tuple(make_fleet(50, 1)), seed=1, start=START, count=20_000)
    clock, sink = FakeClock(), ListSink()
    result = drive(generate_messages(spec), sink, Pacing(rate=4000), clock=clock,
                   sleep=clock.sleep)
    assert result.sent == 20_000 and sink.closed and result.delivered == 20_000
    assert result.rate == pytest.approx(4000, rel=0.05)


def test_speedup_pacing_runs_event_time_faster_than_the_wall() -> None:
    spec = GeneratorSpec(sensors=tuple(make_fleet(10, 1)), seed=1, interval_s=5.0, start=START,
                         duration_s=3600)
    clock, sink = FakeClock(), ListSink()
    result = drive(generate_messages(spec), sink, Pacing(speedup=60), clock=clock,
                   sleep=clock.sleep)
    assert result.sent == 7200
    assert result.seconds == pytest.approx(3600 / 60, rel=0.02)


def test_wall_duration_stops_the_run() -> None:
    spec = GeneratorSpec(sensors=tuple(make_fleet(10, 1)), seed=1, start=START)  # endless
    clock, sink = FakeClock(), ListSink()
    result = drive(generate_messages(spec), sink, Pacing(rate=1000, wall_duration_s=3),
                   clock=clock, sleep=clock.sleep)
    assert result.sent == pytest.approx(3000, rel=0.05)


# -- sinks -------------------------------------------------------------------------------------


def _small_stream(n: int = 3000) -> list[Message]:
    spec = GeneratorSpec(sensors=tuple(make_fleet(25, 2)), seed=2, start=START, count=n,
                         faults={"malformed_json": 0.05, "extra_fields": 0.05})
    return list(generate_messages(spec))


def test_file_sink_round_trips_through_atomically_renamed_files(tmp_path: Path) -> None:
    messages = _small_stream()
    sink = FileSink(tmp_path / "in", roll_messages=700)
    for m in messages:
        sink.send(m)
    sink.close()
    files = sorted((tmp_path / "in").iterdir())
    assert [f.name for f in files if f.name.startswith(".")] == []
    assert len(files) == 5 and files == sink.files
    lines = [line for f in files for line in f.read_bytes().splitlines()]
    assert lines == [m.value for m in messages]
    assert sink.delivered == len(messages)


def test_socket_sink_streams_lines_to_a_client() -> None:
    messages = _small_stream(2000)
    sink = SocketSink("127.0.0.1", 0, batch=100)
    received: list[bytes] = []

    def client() -> None:
        with socket.create_connection(sink.address) as conn:
            buf = b""
            while chunk := conn.recv(65536):
                buf += chunk
            received.extend(buf.splitlines())

    reader = threading.Thread(target=client)
    reader.start()
    assert sink.wait_for_client(timeout_s=10)
    for m in messages:
        sink.send(m)
    sink.close()
    reader.join(timeout=10)
    assert received == [m.value for m in messages]
    assert sink.delivered == len(messages)


@pytest.mark.kafka
@pytest.mark.parametrize("producer", ["kafka-python", "confluent"])
def test_kafka_sink_round_trips_with_keys_and_per_key_order(kafka_cfg, producer: str) -> None:
    from kafka import KafkaConsumer

    from jobs.topics import create_topics

    topic = f"gen-roundtrip-{producer}"
    create_topics(kafka_cfg, {topic: 3})
    messages = _small_stream(3000)
    sink = SinkSpec(kind="kafka", producer=producer, bootstrap=kafka_cfg.kafka.bootstrap,
                    topic=topic).open()
    result = drive(messages, sink, Pacing())
    assert result.delivered == 3000 and result.errors == 0
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_cfg.kafka.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000,
                             enable_auto_commit=False)
    got = []
    try:
        for record in consumer:
            got.append(record)
            if len(got) == 3000:
                break
    finally:
        consumer.close()
    assert len(got) == 3000
    assert Counter((r.key, r.value) for r in got) == Counter((m.key, m.value) for m in messages)
    partition_of: dict[bytes, set[int]] = defaultdict(set)
    for r in got:
        partition_of[r.key].add(r.partition)
    assert all(len(p) == 1 for p in partition_of.values())
    assert len({p for ps in partition_of.values() for p in ps}) == 3
    for key in partition_of:
        sent = [m.value for m in messages if m.key == key]
        assert [r.value for r in sorted(got, key=lambda r: r.offset) if r.key == key] == sent


@pytest.mark.kafka
def test_both_producers_put_a_key_on_the_same_partition(kafka_cfg) -> None:
    from kafka import KafkaConsumer

    from jobs.topics import create_topics

    topic = "gen-partitioner"
    create_topics(kafka_cfg, {topic: 6})
    messages = _small_stream(500)
    for producer in ("kafka-python", "confluent"):
        sink = SinkSpec(kind="kafka", producer=producer, bootstrap=kafka_cfg.kafka.bootstrap,
                        topic=topic).open()
        drive(messages, sink, Pacing())
    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_cfg.kafka.bootstrap,
                             auto_offset_reset="earliest", consumer_timeout_ms=10_000)
    partitions: dict[bytes, set[int]] = defaultdict(set)
    n = 0
    try:
        for record in consumer:
            partitions[record.key].add(record.partition)
            n += 1
            if n == 1000:
                break
    finally:
        consumer.close()
    assert n == 1000 and all(len(p) == 1 for p in partitions.values())


# -- workers and the command line --------------------------------------------------------------


def test_workers_split_the_fleet_and_merge_the_truth(tmp_path: Path) -> None:
    spec = GeneratorSpec(sensors=tuple(make_fleet(40, 4)), seed=4, start=START, count=9001,
                         faults={"missing_field": 0.05})
    parts = [split_spec(spec, 3, w) for w in range(3)]
    assert sum(p.count or 0 for p in parts) == 9001
    assert sorted(s.sensor_id for p in parts for s in p.sensors) == sorted(
        s.sensor_id for s in spec.sensors)
    truth = tmp_path / "truth.jsonl"
    result = run_generator(spec, SinkSpec(kind="files", out_dir=tmp_path / "out"), Pacing(),
                           truth_path=truth, workers=3)
    assert isinstance(result, RunResult) and result.sent == 9001 == result.delivered
    lines = [json.loads(x) for x in truth.read_text().splitlines()]
    assert len(lines) == result.faults["missing_field"] > 0
    values = [v for f in (tmp_path / "out").iterdir() for v in f.read_bytes().splitlines()]
    assert len(values) == 9001
    assert not list(tmp_path.glob("truth.jsonl.part*"))


def test_generate_command_writes_registry_stream_and_truth(tmp_path: Path) -> None:
    def run(out: str) -> tuple[list[bytes], str]:
        args = ["--set", f"paths.data_dir={tmp_path / 'data'}", "generate", "--sensors", "12",
                "--rate", "1000000", "--count", "20000", "--seed", "9", "--interval", "5",
                "--start", "2024-01-10T00:00:00Z", "--faults", "all=0.01",
                "--events", "heat_spike=0.01,silence=0.01", "--sink", "files",
                "--out", str(tmp_path / out), "--truth", str(tmp_path / f"{out}.jsonl")]
        res = CliRunner().invoke(cli, args, catch_exceptions=False)
        assert res.exit_code == 0, res.output
        files = sorted((tmp_path / out).iterdir())
        return [v for f in files for v in f.read_bytes().splitlines()], res.output

    values, output = run("a")
    assert len(values) == 20000 and "sent 20,000 messages" in output
    registry = read_registry_csv(tmp_path / "data" / "registry" / "sensors.csv")
    assert len(registry) == 12
    truth = [json.loads(x) for x in (tmp_path / "a.jsonl").read_text().splitlines()]
    kinds = Counter(t.get("kind") or t["fault"] for t in truth)
    assert kinds["heat_spike"] > 0 and kinds["silence"] > 0 and kinds["malformed_json"] > 0
    again, _ = run("b")
    assert again == values
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()


def test_generate_command_refuses_bad_options(tmp_path: Path) -> None:
    base = ["--set", f"paths.data_dir={tmp_path}", "generate", "--sink", "files",
            "--out", str(tmp_path / "o")]
    res = CliRunner().invoke(cli, [*base, "--count", "10", "--faults", "gremlins=0.1"])
    assert res.exit_code != 0 and "unknown fault kind" in res.output
    res = CliRunner().invoke(cli, base)
    assert res.exit_code != 0 and "--duration" in res.output


@pytest.mark.parametrize("first_after_s", [None, 60.0])
def test_events_start_after_the_first_event_quiet(first_after_s: float | None) -> None:
    """By default no event starts within the trailing window (31 min) of the stream's start;
    a live demo can let them start within its first minute."""
    spec = GeneratorSpec(sensors=tuple(make_fleet(20, 3)), seed=3, interval_s=1.0, start=START,
                         duration_s=7200, events={"heat_spike": 0.01},
                         first_event_after_s=first_after_s)
    _, truth, _ = run_spec(spec)
    starts = [datetime.fromisoformat(t["start"].replace("Z", "+00:00")) - START
              for t in truth if t["type"] == "event"]
    quiet = timedelta(minutes=31) if first_after_s is None else timedelta(seconds=first_after_s)
    assert starts and min(starts) >= quiet
    assert min(starts) < quiet + timedelta(minutes=1)


def test_generate_start_now_puts_event_time_at_the_wall_clock(tmp_path: Path) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    args = ["--set", f"paths.data_dir={tmp_path / 'data'}", "generate", "--sensors", "3",
            "--count", "3", "--interval", "1", "--start", "now", "--sink", "files",
            "--out", str(tmp_path / "out")]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    values = [json.loads(v) for f in sorted((tmp_path / "out").iterdir())
              for v in f.read_bytes().splitlines()]
    times = [datetime.fromisoformat(v["timestamp"].replace("Z", "+00:00")) for v in values]
    assert len(times) == 3
    assert all(before <= t <= datetime.now(UTC) + timedelta(seconds=1) for t in times)
