"""Scoring alerts against a generator truth file, and the rules against the real generator:
every injected event kind raises its alert (no Spark: generator -> rule class -> score)."""

from __future__ import annotations

import json
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from generator.events import EVENT_KINDS
from generator.fleet import make_fleet
from generator.stream import GeneratorSpec, generate_messages
from gold.alert_rules import Alert, Reading, SensorAlertState, to_ms
from jobs.alert_score import ANOMALY_REQUIRED, Event, read_truth, score
from jobs.config import AlertsConfig, load_config

CFG = load_config(env={}, overrides={"alerts.profile": "seed"}).alerts
T0 = datetime(2024, 1, 10, tzinfo=UTC)
NOW = datetime(2024, 2, 1, tzinfo=UTC)


def alert(sensor: str, kind: str, t: datetime, metric: str | None = None) -> dict:
    return {"sensor_id": sensor, "alert_type": kind, "metric": metric, "event_time": t,
            "value": 1.0}


def test_score_counts_recall_and_unexplained() -> None:
    events = [
        Event("silence", "A", T0, T0 + timedelta(minutes=15)),
        Event("silence", "B", T0, T0 + timedelta(minutes=15)),
        Event("outlier", "C", T0, T0),
    ]
    alerts = [
        alert("A", "SENSOR_OFFLINE", T0 + timedelta(minutes=10)),
        alert("A", "SENSOR_RECOVERED", T0 + timedelta(minutes=15)),
        alert("B", "SENSOR_OFFLINE", T0 + timedelta(minutes=10)),   # no RECOVERED: missed
        alert("C", "ZSCORE_OUTLIER", T0, "humidity"),                # wrong metric: missed
        alert("C", "HIGH_TEMP", T0 + timedelta(hours=2)),            # long after: unexplained
        alert("D", "DYNAMIC_THRESHOLD", T0),                         # statistical, unexplained
    ]
    result = score(alerts, events, cfg=CFG)
    assert result.events == {"silence": 2, "outlier": 1}
    assert result.detected == {"silence": 1}
    assert result.recall("silence") == 0.5 and result.recall("outlier") == 0.0
    assert {(e.kind, e.sensor_id) for e in result.missed} == {("silence", "B"), ("outlier", "C")}
    assert [a["alert_type"] for a in result.unexplained_rule] == ["HIGH_TEMP"]
    assert len(result.unexplained) == 2 and not result.perfect
    assert "silence" in result.describe() and "UNEXPLAINED HIGH_TEMP C" in result.describe()


def test_read_truth_keeps_events_only(tmp_path: Path) -> None:
    path = tmp_path / "truth.jsonl"
    path.write_text(
        json.dumps({"type": "fault", "fault": "duplicate", "sensor_id": "A",
                    "event_time": "2024-01-10T00:00:00Z", "expected_reasons": []}) + "\n"
        + json.dumps({"type": "event", "kind": "outlier", "sensor_id": "A",
                      "start": "2024-01-10T00:00:05Z", "end": "2024-01-10T00:00:05Z"}) + "\n")
    assert read_truth(path) == [Event("outlier", "A", T0 + timedelta(seconds=5),
                                      T0 + timedelta(seconds=5))]


def run_rules(spec: GeneratorSpec, batch_readings: int, cfg: AlertsConfig = CFG
              ) -> tuple[list[Alert], list[dict]]:
    """Feed the generator's readings to the rules in micro-batches, watermark = max - 10 min."""
    truth: list[dict] = []
    states: dict[str, SensorAlertState] = {}
    alerts: list[Alert] = []
    batch: dict[str, list[Reading]] = defaultdict(list)
    max_t = 0

    def flush() -> None:
        for sid, readings in batch.items():
            st = states.setdefault(sid, SensorAlertState(sid, cfg))
            alerts.extend(st.process(readings, now=NOW))
            st.take_resolved()
        batch.clear()
        for st in states.values():
            alerts.extend(st.on_watermark(max_t - 600_000, now=NOW))

    for n, msg in enumerate(generate_messages(spec, truth=truth.append), start=1):
        d = json.loads(msg.value)
        t = to_ms(datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00")))
        batch[d["sensor_id"]].append(Reading(t, d["temperature"], d["humidity"], d["pressure"],
                                             d.get("location")))
        max_t = max(max_t, t)
        if n % batch_readings == 0:
            flush()
    flush()
    return alerts, truth


@pytest.mark.timeout(120)
def test_every_injected_event_raises_its_alert() -> None:
    spec = GeneratorSpec(sensors=tuple(make_fleet(12, 3)), seed=3, interval_s=5.0,
                         duration_s=3 * 3600, events={k: 0.003 for k in EVENT_KINDS})
    alerts, truth = run_rules(spec, batch_readings=12 * 6)
    events = [Event(e["kind"], e["sensor_id"],
                    datetime.fromisoformat(e["start"].replace("Z", "+00:00")),
                    datetime.fromisoformat(e["end"].replace("Z", "+00:00")))
              for e in truth if e["type"] == "event" and not e.get("truncated")]
    result = score([a.as_row() for a in alerts], events, cfg=CFG)
    assert set(result.events) == set(EVENT_KINDS), result.describe()
    assert result.missed == [], result.describe()
    assert result.unexplained_rule == [], result.describe()


@pytest.mark.timeout(180)
def test_production_profile_catches_every_covered_event_kind() -> None:
    """The default (production) profile on the same generator fleet: every event kind its
    deterministic rules cover raises its alert and those rules raise nothing where nothing
    was injected. Outliers and rising trends are the adaptive detector's (ANOMALY, scored
    after its warm-up): statistical, so counted but not required here."""
    prod = load_config(env={}).alerts
    assert prod.profile == "production"
    spec = GeneratorSpec(sensors=tuple(make_fleet(12, 3)), seed=3, interval_s=5.0,
                         duration_s=4 * 3600, events={k: 0.003 for k in EVENT_KINDS})
    alerts, truth = run_rules(spec, batch_readings=12 * 6, cfg=prod)
    events = [Event(e["kind"], e["sensor_id"],
                    datetime.fromisoformat(e["start"].replace("Z", "+00:00")),
                    datetime.fromisoformat(e["end"].replace("Z", "+00:00")))
              for e in truth if e["type"] == "event" and not e.get("truncated")]
    result = score([a.as_row() for a in alerts], events, cfg=prod, warmup_start=spec.start)
    assert {"heat_spike", "cold_drop", "humidity_surge", "rapid_jump", "silence"} <= set(
        result.events), result.describe()
    assert [e for e in result.missed if e.kind not in ANOMALY_REQUIRED] == [], \
        result.describe()
    assert result.unexplained_rule == [], result.describe()
    assert not {a.alert_type for a in alerts} & {"DYNAMIC_THRESHOLD", "ZSCORE_OUTLIER",
                                                 "RISING_TREND"}
