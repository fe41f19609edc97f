"""Score gold/alerts against a generator truth file (`lakehouse alerts score --truth PATH`).

Truth lines used: ``{"type": "event", "kind", "sensor_id", "start", "end"}`` (generator/
stream.py; other line types are ignored). For each injected event the rule-based alert it must
raise, on that sensor, with event time in a window:

| kind | required alert(s) | event_time in |
|---|---|---|
| heat_spike | HIGH_TEMP | [start, end] |
| cold_drop | LOW_TEMP | [start, end] |
| humidity_surge | HIGH_HUMIDITY | [start, end] |
| rapid_jump | RAPID_CHANGE | [start, end] |
| rising_trend | RISING_TREND | [start, end + 1 min] (end of the completing minute) |
| outlier | ZSCORE_OUTLIER (temperature) | [start, end] |
| silence | SENSOR_OFFLINE and SENSOR_RECOVERED | exactly start + offline.after_s, and end |

Where the config does not raise the required rule (the production profile: no
ZSCORE_OUTLIER, no RISING_TREND), an outlier or rising trend requires an ANOMALY on
temperature in [start, end] instead (ANOMALY_REQUIRED); a kind no enabled rule covers is
counted apart as uncovered. Recall per kind = events with every required alert / events.

An alert is *explained* when an event of the same sensor covers it: event time in [start, end +
trailing window + 1 min] (an event also moves the sensor's trailing statistics and its way back
can be a rapid change). The rest are *unexplained*: alerts where nothing was injected.
DYNAMIC_THRESHOLD (mean + 2 std) and ZSCORE_OUTLIER (and the adaptive detector's ANOMALY) are
statistical: clean noise does cross them now and then (with k=2 a few percent of readings), so
their unexplained alerts are counted apart from those of the deterministic rules, which must be
zero.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jobs.config import AlertsConfig

STATISTICAL: frozenset[str] = frozenset({"DYNAMIC_THRESHOLD", "ZSCORE_OUTLIER", "ANOMALY"})
REQUIRED: Mapping[str, tuple[tuple[str, str | None], ...]] = {
    "heat_spike": (("HIGH_TEMP", None),),
    "cold_drop": (("LOW_TEMP", None),),
    "humidity_surge": (("HIGH_HUMIDITY", None),),
    "rapid_jump": (("RAPID_CHANGE", None),),
    "rising_trend": (("RISING_TREND", None),),
    "outlier": (("ZSCORE_OUTLIER", "temperature"),),
    "silence": (("SENSOR_OFFLINE", None), ("SENSOR_RECOVERED", None)),
}
# What the adaptive detector must raise instead where the config does not raise the rule
# (the production profile): the event's metric off the sensor's learnt behaviour. It learns
# for anomaly.warmup_s first, so an event that early is not expected of it.
ANOMALY_REQUIRED: Mapping[str, tuple[tuple[str, str | None], ...]] = {
    "outlier": (("ANOMALY", "temperature"),),
    "rising_trend": (("ANOMALY", "temperature"),),
}


def required(kind: str, cfg: AlertsConfig) -> tuple[tuple[str, str | None], ...] | None:
    """The alerts an event of ``kind`` must raise under the config's rules (REQUIRED, else
    ANOMALY_REQUIRED); None when no enabled rule covers it."""
    for table in (REQUIRED, ANOMALY_REQUIRED):
        req = table.get(kind)
        if req and all(t in cfg.enabled for t, _ in req):
            return req
    return None


def _ts(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


@dataclass(frozen=True)
class Event:
    kind: str
    sensor_id: str
    start: datetime
    end: datetime


@dataclass
class Score:
    events: dict[str, int] = field(default_factory=dict)
    detected: dict[str, int] = field(default_factory=dict)
    missed: list[Event] = field(default_factory=list)
    alerts: dict[str, int] = field(default_factory=dict)
    unexplained: list[dict[str, Any]] = field(default_factory=list)
    # events of kinds no enabled rule covers (or the detector's warm-up), not in `events`
    uncovered: dict[str, int] = field(default_factory=dict)

    def recall(self, kind: str) -> float:
        n = self.events.get(kind, 0)
        return self.detected.get(kind, 0) / n if n else float("nan")

    @property
    def unexplained_rule(self) -> list[dict[str, Any]]:
        """Unexplained alerts of the deterministic rules (should be none)."""
        return [a for a in self.unexplained if a["alert_type"] not in STATISTICAL]

    @property
    def perfect(self) -> bool:
        """Every event detected; no deterministic-rule alert without an event."""
        return not self.missed and not self.unexplained_rule

    def describe(self, *, show: int = 20) -> str:
        lines = ["kind             events  detected  recall"]
        for kind in sorted(self.events):
            lines.append(f"{kind:<16} {self.events[kind]:>6}  {self.detected.get(kind, 0):>8}"
                         f"  {self.recall(kind):.3f}")
        unexplained_by_type: dict[str, int] = defaultdict(int)
        for a in self.unexplained:
            unexplained_by_type[a["alert_type"]] += 1
        for kind in sorted(self.uncovered):
            lines.append(f"{kind:<16} {self.uncovered[kind]:>6}  not covered by the rules")
        lines.append("")
        lines.append("alert_type          alerts  unexplained")
        for kind in sorted(self.alerts):
            lines.append(f"{kind:<18} {self.alerts[kind]:>7}  {unexplained_by_type[kind]:>11}")
        for e in self.missed[:show]:
            lines.append(f"MISSED {e.kind} {e.sensor_id} {e.start.isoformat()}"
                         f" .. {e.end.isoformat()}")
        lines.append(f"missed events: {len(self.missed)}; unexplained alerts: "
                     f"{len(self.unexplained_rule)} of deterministic rules, "
                     f"{len(self.unexplained) - len(self.unexplained_rule)} statistical "
                     f"({', '.join(sorted(STATISTICAL))})")
        rule_first = self.unexplained_rule + [a for a in self.unexplained
                                              if a["alert_type"] in STATISTICAL]
        for a in rule_first[:show]:
            lines.append(f"UNEXPLAINED {a['alert_type']} {a['sensor_id']} {a.get('metric')} "
                         f"{_ts(a['event_time']).isoformat()} value={a.get('value')}")
        return "\n".join(lines)


def read_truth(path: Path) -> list[Event]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("type") == "event":
                out.append(Event(rec["kind"], rec["sensor_id"], _ts(rec["start"]),
                                 _ts(rec["end"])))
    return out


def _window(e: Event, alert_type: str, cfg: AlertsConfig) -> tuple[datetime, datetime]:
    if alert_type == "SENSOR_OFFLINE":
        t = e.start + timedelta(seconds=cfg.offline.after_s)
        return t, t
    if alert_type == "SENSOR_RECOVERED":
        return e.end, e.end
    if alert_type == "RISING_TREND":
        return e.start, e.end + timedelta(minutes=1)
    return e.start, e.end


def score(alerts: Iterable[Mapping[str, Any]], events: Iterable[Event], *,
          cfg: AlertsConfig, warmup_start: datetime | None = None) -> Score:
    """Recall per injected kind (of the kinds the config's rules cover) and the alerts no
    event explains. ``warmup_start``: when the stream began; an event the adaptive detector
    must catch that starts within anomaly.warmup_s of it is not expected (uncovered)."""
    by_sensor: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    result = Score()
    for a in alerts:
        by_sensor[a["sensor_id"]].append(a)
        result.alerts[a["alert_type"]] = result.alerts.get(a["alert_type"], 0) + 1
    events = list(events)
    explain: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    after = timedelta(seconds=cfg.trailing.window_s + 60)
    for e in events:
        explain[e.sensor_id].append((e.start, e.end + after))
        req = required(e.kind, cfg)
        if req is not None and req is ANOMALY_REQUIRED.get(e.kind) and warmup_start is not None \
                and e.start < warmup_start + timedelta(seconds=cfg.anomaly.warmup_s):
            req = None
        if req is None:
            result.uncovered[e.kind] = result.uncovered.get(e.kind, 0) + 1
            continue
        result.events[e.kind] = result.events.get(e.kind, 0) + 1
        ok = True
        for alert_type, metric in req:
            lo, hi = _window(e, alert_type, cfg)
            ok = ok and any(
                a["alert_type"] == alert_type and (metric is None or a["metric"] == metric)
                and lo <= _ts(a["event_time"]) <= hi for a in by_sensor[e.sensor_id])
        if ok:
            result.detected[e.kind] = result.detected.get(e.kind, 0) + 1
        else:
            result.missed.append(e)
    for sensor, items in by_sensor.items():
        for a in items:
            t = _ts(a["event_time"])
            if not any(lo <= t <= hi for lo, hi in explain[sensor]):
                result.unexplained.append(dict(a))
    result.unexplained.sort(key=lambda a: (_ts(a["event_time"]), a["sensor_id"]))
    return result


def load_alerts(table: Path) -> list[dict[str, Any]]:
    """gold/alerts rows through DuckDB's delta extension (no Spark)."""
    from jobs.duck import connect

    con = connect()
    try:
        where = str(table).replace("'", "''")
        cur = con.execute("SELECT sensor_id, alert_type, metric, event_time, value "
                          f"FROM delta_scan('{where}')")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, row, strict=True)) for row in cur.fetchall()]
    finally:
        con.close()
