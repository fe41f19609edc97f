"""The alert lifecycle on its way to gold/alerts and `iot-alerts`, without Spark: which alerts
are born resolved, the resolution rows the processor emits, how the delivery closes a
batch's alerts (`resolve_in_batch`) and what goes on Kafka."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pandas as pd
from test_alert_profiles import (
    HOUR,
    MIN,
    NOW,
    PROD,
    SEC,
    SEED,
    T0,
    _processor,
    _rows,
    _Timer,
    reading,
)

from gold.alert_rules import Alert, SensorAlertState, from_ms, to_ms
from gold.alerts import (
    ALERT,
    KIND_COLUMN,
    OUTPUT_SCHEMA,
    RESOLUTION,
    SINCE_COLUMN,
    resolution_row,
)
from gold.schema import ALERT_SCHEMA, ALERT_TYPES
from jobs.alerts_job import format_alert, resolve_in_batch, to_json
from jobs.config import RULE_TYPES


def at(ms: int) -> datetime:
    return from_ms(to_ms(T0) + ms)


def rows_of(st: SensorAlertState, alerts: list[Alert]) -> tuple[list[dict], list[dict]]:
    """The batch as the delivery sees it: alert rows and the resolutions taken from the state."""
    ends = [resolution_row(r, st.location, NOW) for r in st.take_resolved()]
    return [a.as_row() for a in alerts], ends


def test_anomaly_is_a_declared_alert_type_and_resolved_at_a_column() -> None:
    assert "ANOMALY" in ALERT_TYPES
    # the config's rule names (jobs.config cannot import gold) are the same types
    assert sorted(ALERT_TYPES) == sorted(RULE_TYPES)
    assert ALERT_SCHEMA.fieldNames()[-1] == "resolved_at"
    assert ALERT_SCHEMA["resolved_at"].nullable
    assert set(OUTPUT_SCHEMA.fieldNames()) - set(ALERT_SCHEMA.fieldNames()) == {
        "published_early", KIND_COLUMN, SINCE_COLUMN}


def test_every_alert_of_a_static_episode_gets_its_resolved_at() -> None:
    """HIGH_TEMP alerts on each breaching reading; the episode's end closes all of them, not
    just the opening one, and a later episode of the same key stays open."""
    st = SensorAlertState("S1", PROD)
    temps = [21.0, 31.0, 32.0, 33.0, 21.0, 21.0, 34.0]
    alerts = st.process([reading(i * MIN, v) for i, v in enumerate(temps)], now=NOW)
    rows, ends = rows_of(st, alerts)
    assert [(e["alert_type"], e["event_time"], e["resolved_at"]) for e in ends if
            e["alert_type"] == "HIGH_TEMP"] == [("HIGH_TEMP", at(MIN), at(4 * MIN))]
    closed = resolve_in_batch(rows, ends)
    high = [(a["event_time"], a["resolved_at"]) for a in closed if a["alert_type"] == "HIGH_TEMP"]
    assert high == [(at(MIN), at(4 * MIN)), (at(2 * MIN), at(4 * MIN)),
                    (at(3 * MIN), at(4 * MIN)), (at(6 * MIN), None)]
    assert all(a["resolved_at"] is None for a in rows), "the input rows are left as they were"
    # the same resolutions again (a replayed batch) change nothing
    assert resolve_in_batch(closed, ends) == closed


def test_recovered_is_born_resolved_and_offline_resolution_covers_the_fallback_copy() -> None:
    """SENSOR_RECOVERED is an event (resolved at its own time); SENSOR_OFFLINE's episode runs
    from the last reading before the silence (where the silent-fleet fallback's copy sits) to
    the recovery."""
    st = SensorAlertState("S1", PROD)
    st.process([reading(i * MIN, 21.0) for i in range(5)], now=NOW)
    last = 4 * MIN
    back = st.process([reading(last + 2 * HOUR + 10 * MIN, 21.0)], now=NOW)
    assert [a.alert_type for a in back] == ["SENSOR_OFFLINE", "SENSOR_RECOVERED"]
    offline, recovered = back
    assert offline.resolved_at is None
    assert recovered.resolved_at == recovered.event_time
    (end,) = st.take_resolved()
    assert (end.alert_type, end.opened_at, end.since, end.resolved_at) == (
        "SENSOR_OFFLINE", offline.event_time, at(last), recovered.event_time)
    fallback = {**offline.as_row(), "alert_id": "fallback", "event_time": at(last + 10 * MIN)}
    closed = resolve_in_batch([fallback, offline.as_row()],
                              [resolution_row(end, st.location, NOW)])
    assert [a["resolved_at"] for a in closed] == [recovered.event_time] * 2


def test_a_late_static_alert_is_open_only_inside_its_open_episode() -> None:
    st = SensorAlertState("S1", PROD)
    st.process([reading(i * MIN, v) for i, v in enumerate([21.0, 21.0, 21.0, 31.0, 32.0])],
               now=NOW)
    st.take_resolved()
    # late for the sensor (before its last reading, 4 min): at 3.5 min inside the open
    # HIGH_TEMP episode (opened at 3 min), at 1.5 min before it
    (inside,) = st.process([reading(3 * MIN + 30 * SEC, 33.0)], now=NOW)
    (before,) = st.process([reading(MIN + 30 * SEC, 33.0)], now=NOW)
    assert inside.resolved_at is None
    assert before.resolved_at == at(2 * MIN), "closed at the sensor's next reading after it"
    assert st.take_resolved() == [], "a late reading resolves nothing"


def test_seed_alerts_have_no_resolved_at() -> None:
    st = SensorAlertState("S1", SEED)
    alerts = st.process([reading(0, 21.0), reading(MIN, 31.0), reading(2 * MIN, 21.0),
                         reading(30 * MIN, 21.0)], now=NOW)
    assert {a.alert_type for a in alerts} >= {"HIGH_TEMP", "SENSOR_OFFLINE", "SENSOR_RECOVERED"}
    assert all(a.resolved_at is None for a in alerts)
    assert st.take_resolved() == []


def _frames(proc, rs, watermark_ms: int) -> pd.DataFrame:  # noqa: ANN001
    out = list(proc.handleInputRows(("b",), _rows(rs), _Timer(watermark_ms)))
    return pd.concat(out) if out else pd.DataFrame(columns=OUTPUT_SCHEMA.fieldNames())


def test_processor_emits_resolution_rows_beside_the_alerts() -> None:
    proc, _ = _processor(PROD)
    # readings 2 min apart: no RAPID_CHANGE, only the HIGH_TEMP episode
    first = _frames(proc, [reading(0, 21.0), reading(2 * MIN, 31.0)], to_ms(T0))
    assert first[KIND_COLUMN].tolist() == [ALERT]
    assert first["resolved_at"].isna().all()
    second = _frames(proc, [reading(4 * MIN, 21.0)], to_ms(T0))
    assert list(second.columns) == OUTPUT_SCHEMA.fieldNames()
    (row,) = second.to_dict("records")
    assert row[KIND_COLUMN] == RESOLUTION and row["alert_id"] == first["alert_id"].iloc[0]
    assert (row["alert_type"], row["metric"], row["severity"]) == (
        "HIGH_TEMP", "temperature", "INFO")
    assert row["event_time"] == at(2 * MIN) and row["resolved_at"] == at(4 * MIN)
    assert row[SINCE_COLUMN] == at(2 * MIN)
    assert json.loads(row["details"]) == {"resolved_by": "reading"}
    # a batch that resolves nothing yields nothing (no frame at all)
    assert list(proc.handleInputRows(("b",), _rows([reading(6 * MIN, 21.0)]),
                                     _Timer(to_ms(T0)))) == []


def test_an_evicted_sensor_closes_its_open_episodes() -> None:
    """A sensor silent for alerts.state_ttl_s is evicted; its episodes (here SENSOR_OFFLINE)
    end then, with resolved_by 'expired', instead of staying active for ever."""
    proc, handle = _processor(PROD)
    _frames(proc, [reading(i * MIN, 21.0) for i in range(5)], to_ms(T0) + 4 * MIN)
    offline = _frames(proc, [], to_ms(T0) + 3 * HOUR)  # no rows: only the sweep
    assert offline["alert_type"].tolist() == ["SENSOR_OFFLINE"]
    evict = to_ms(T0) + 4 * MIN + PROD.state_ttl_s * 1000
    gone = _frames(proc, [], evict + HOUR)  # the fleet's watermark passes the eviction
    ends = gone[gone[KIND_COLUMN] == RESOLUTION].to_dict("records")
    assert [(e["alert_type"], e["resolved_at"], json.loads(e["details"])) for e in ends] == [
        ("SENSOR_OFFLINE", from_ms(evict), {"resolved_by": "expired"})]
    assert ends[0][SINCE_COLUMN] == at(4 * MIN)
    assert ("S1",) not in handle.sensors.rows and handle.index.row is None


def test_a_resolution_on_kafka_is_the_alert_json_plus_kind_and_resolved_at() -> None:
    """Additive: a resolution message has every key of an alert message and the same
    alert_id; `kind` tells the two apart (consumers that de-duplicate by alert_id, as
    DESIGN.md asks, simply skip it)."""
    st = SensorAlertState("S1", PROD)
    alerts = st.process([reading(0, 31.0), reading(MIN, 21.0)], now=NOW)
    rows, ends = rows_of(st, alerts)
    names = ALERT_SCHEMA.fieldNames()
    alert_msg = to_json(resolve_in_batch(rows, ends)[0])
    end_msg = to_json({k: ends[0][k] for k in names}, RESOLUTION)
    assert set(alert_msg) == set(end_msg) == {*names, KIND_COLUMN}
    assert alert_msg[KIND_COLUMN] == ALERT and end_msg[KIND_COLUMN] == RESOLUTION
    assert end_msg["alert_id"] == alert_msg["alert_id"]
    assert end_msg["event_time"] == alert_msg["event_time"] == "2024-03-01T00:00:00Z"
    assert end_msg["resolved_at"] == alert_msg["resolved_at"] == "2024-03-01T00:01:00Z"
    json.dumps(end_msg)
    line = format_alert(end_msg)
    assert "RESOLVED" in line and "HIGH_TEMP" in line and "S1" in line
    assert "RESOLVED" not in format_alert(alert_msg)


def test_resolve_in_batch_reads_naive_times_as_collect_returns_them() -> None:
    """collect() gives naive datetimes in the process zone (UTC in the suite)."""
    naive = datetime(2024, 3, 1, 0, 1, tzinfo=UTC).replace(tzinfo=None)
    alert = {"sensor_id": "S1", "alert_type": "HIGH_TEMP", "metric": "temperature",
             "event_time": naive, "resolved_at": None}
    end = {"sensor_id": "S1", "alert_type": "HIGH_TEMP", "metric": "temperature",
           "event_time": naive, SINCE_COLUMN: naive,
           "resolved_at": datetime(2024, 3, 1, 0, 2, tzinfo=UTC).replace(tzinfo=None)}
    (out,) = resolve_in_batch([alert], [end])
    assert out["resolved_at"] == datetime(2024, 3, 1, 0, 2, tzinfo=UTC)
