"""Alert rules of one sensor (DESIGN.md "Alerts (gold)"), pure Python, no Spark.

`SensorAlertState` is the per-sensor state: feed it the sensor's readings with `process` and
event-time progress with `on_watermark`; both return `Alert`s. The streaming job keeps this
state in the Spark state store (`to_state` / `from_state`); the rules live only here.

Semantics decisions the design table leaves open, fixed here so replay is deterministic:

- Time is epoch milliseconds, UTC. Each call sorts its readings by (event_time, values).
- Out of order: a reading older than the sensor's last processed reading is *late for the
  sensor*. It still raises its static-threshold alerts (they are per reading and stateless),
  but it is ignored by every stateful rule (history, episodes, consecutive count, trend,
  offline) and counted in `late_readings`. A reading at the same time as the last one is not
  late. Given the same micro-batches (a replay from the checkpoint) the result is identical.
- SENSOR_OFFLINE: the sensor is offline when no reading has event time in
  (last, last + after_s]; a reading at exactly last + after_s is still "online". It is raised
  either when the watermark reaches last + after_s (Spark then drops any reading at or before
  it as late) or when the next reading arrives after that instant, whichever comes first; both
  give the same alert (event_time = last + after_s, same alert_id).
- Episodes: a rule that cannot be evaluated (too little trailing history, zero deviation, a
  missing value) counts as "condition not met" and so ends an open episode.
- RISING_TREND: `rising_trend.minutes` = number of strict rises between adjacent clock minutes
  (15 rises = 16 minute means). A minute with no reading breaks the chain. A minute is complete
  when a later reading of the sensor arrives or the sensor goes offline.
- CONSECUTIVE_ALERTS: fires on the reading that makes the run exactly `consecutive.count`
  long; the run ends at the first reading without a static alert. Each (sensor, metric) pair
  of the same reading counts once: the run counts readings, not alerts.

Profiles (`alerts.profile`, the types raised in `AlertsConfig.enabled`): `seed` is exactly the
above. The others are cadence-aware: ANOMALY per metric from `gold.anomaly.AnomalyDetector`
(one per metric, state in the sensor's blob); SENSOR_OFFLINE after the sensor's own offline
time (`offline_after_ms`: at least offline.after_s, else a multiple of a high quantile of its
recent intervals); trailing statistics by count when the window holds too few readings; and
the alert lifecycle: each raised alert opens an episode per (type, metric), the first reading
that no longer meets the condition resolves it (`take_resolved`), and a once-per-episode
rule (COOLDOWN_TYPES) does not alert again for alerts.cooldown_s after it resolved.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import numpy as np

from gold.anomaly import ALERT_TYPE as ANOMALY
from gold.anomaly import STATE_SIZE as ANOMALY_STATE_SIZE
from gold.anomaly import AnomalyDetector, AnomalySettings
from jobs.config import AlertsConfig

METRICS: tuple[str, ...] = ("temperature", "humidity", "pressure")
MINUTE_MS = 60_000


def to_ms(ts: datetime) -> int:
    """Epoch milliseconds of an aware datetime (naive ones are refused: DTZ)."""
    if ts.tzinfo is None:
        raise ValueError(f"naive datetime {ts!r}: event times must be UTC-aware")
    return int(round(ts.timestamp() * 1000))


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def alert_id(sensor_id: str, alert_type: str, metric: str | None,
             event_time: datetime | int) -> str:
    """Deterministic id of an alert: the same alert on a replay gets the same id."""
    ms = event_time if isinstance(event_time, int) else to_ms(event_time)
    raw = f"{sensor_id}|{alert_type}|{metric or ''}|{ms}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class Reading:
    """One reading of one sensor; `t_ms` is the event time in epoch milliseconds (UTC)."""

    t_ms: int
    temperature: float | None
    humidity: float | None
    pressure: float | None
    location: str | None = None

    @classmethod
    def at(cls, event_time: datetime, temperature: float | None, humidity: float | None,
           pressure: float | None, location: str | None = None) -> Reading:
        return cls(to_ms(event_time), temperature, humidity, pressure, location)

    def value(self, metric: str) -> float | None:
        v = getattr(self, metric)
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


@dataclass(frozen=True)
class Alert:
    """One alert; `as_row()` gives the gold/alerts columns (gold/schema.py ALERT_SCHEMA)."""

    sensor_id: str
    location: str | None
    alert_type: str
    severity: str
    event_time: datetime
    detected_at: datetime
    metric: str | None
    value: float | None
    threshold: float | None
    details: str | None
    # Cadence-aware profiles: set when the alert is born resolved (SENSOR_RECOVERED, an event
    # with no duration; a static alert of a reading late for the sensor, outside its open
    # episode); else None, and a later `Resolution` closes it.
    resolved_at: datetime | None = None

    @property
    def alert_id(self) -> str:
        return alert_id(self.sensor_id, self.alert_type, self.metric, self.event_time)

    def as_row(self) -> dict[str, Any]:
        return {"alert_id": self.alert_id, "sensor_id": self.sensor_id,
                "location": self.location, "alert_type": self.alert_type,
                "severity": self.severity, "event_time": self.event_time,
                "detected_at": self.detected_at, "metric": self.metric, "value": self.value,
                "threshold": self.threshold, "details": self.details,
                "resolved_at": self.resolved_at}


@functools.lru_cache(maxsize=64)
def anomaly_settings(metric: str, method: str, enter: float, exit: float, cooldown_s: float,
                     warmup_s: float) -> AnomalySettings:
    """The detector's settings of one metric (cached: built once, not per sensor and batch)."""
    return AnomalySettings.for_metric(metric, method=method, enter=enter, exit=exit,
                                      cooldown_s=float(cooldown_s), warmup_s=float(warmup_s))


def _settings(cfg: AlertsConfig, metric: str) -> AnomalySettings:
    a = cfg.anomaly
    return anomaly_settings(metric, a.method, a.enter, a.exit, a.cooldown_s, a.warmup_s)


@dataclass(frozen=True)
class Resolution:
    """An alert's episode ended: the condition no longer holds at ``resolved_at``.
    ``alert_id`` is the id of the alert that opened it.

    The episode's alerts are every alert of (sensor, type, metric) with event time in
    [``since``, ``resolved_at``): the opening alert and, for a static threshold, the alert of
    every breaching reading after it. ``since`` is ``opened_at``, but for SENSOR_OFFLINE the
    last reading before the silence (the silent-fleet fallback's copy of the alert sits at
    last reading + offline.after_s, before the sensor's own deadline). ``cause``: ``reading``
    (a reading no longer met the condition) or ``expired`` (the sensor's state was evicted,
    alerts.state_ttl_s after its last reading).
    """

    sensor_id: str
    alert_type: str
    metric: str | None
    opened_at: datetime
    resolved_at: datetime
    since: datetime | None = None
    cause: str = "reading"

    @property
    def alert_id(self) -> str:
        return alert_id(self.sensor_id, self.alert_type, self.metric, self.opened_at)

    @property
    def covers_from(self) -> datetime:
        return self.opened_at if self.since is None else min(self.since, self.opened_at)


# Lifecycle (cadence-aware profiles): types whose episode, once closed, is followed by
# alerts.cooldown_s in which the same condition opens no new alert.
COOLDOWN_TYPES: frozenset[str] = frozenset({"RAPID_CHANGE", "DYNAMIC_THRESHOLD",
                                            "ZSCORE_OUTLIER", "RISING_TREND",
                                            "CONSECUTIVE_ALERTS"})
_STATIC_TYPES: frozenset[str] = frozenset({"HIGH_TEMP", "LOW_TEMP", "HIGH_HUMIDITY"})


def _episode_key(alert_type: str, metric: str | None) -> str:
    """The key of a rule's episode in `SensorAlertState.episodes`."""
    return f"ZSCORE_OUTLIER:{metric}" if alert_type == "ZSCORE_OUTLIER" else alert_type


def severity(cfg: AlertsConfig, alert_type: str) -> str:
    try:
        return cfg.severities[alert_type]
    except KeyError:
        raise KeyError(f"alerts.severities has no entry for {alert_type} (conf/pipeline.yaml)")\
            from None


def static_alerts(sensor_id: str, r: Reading, cfg: AlertsConfig,
                  detected_at: datetime) -> list[Alert]:
    """HIGH_TEMP, LOW_TEMP, HIGH_HUMIDITY of one reading (stateless)."""
    out: list[Alert] = []
    t = from_ms(r.t_ms)

    def mk(kind: str, sev: str, metric: str, value: float, threshold: float) -> Alert:
        return Alert(sensor_id, r.location, kind, sev, t, detected_at, metric, value,
                     threshold, None)

    temp, hum = r.value("temperature"), r.value("humidity")
    if temp is not None and temp > cfg.high_temp.threshold:
        sev = "CRITICAL" if temp > cfg.high_temp.critical_above else "WARNING"
        out.append(mk("HIGH_TEMP", sev, "temperature", temp, cfg.high_temp.threshold))
    if temp is not None and temp < cfg.low_temp.threshold:
        sev = "CRITICAL" if temp < cfg.low_temp.critical_below else "WARNING"
        out.append(mk("LOW_TEMP", sev, "temperature", temp, cfg.low_temp.threshold))
    if hum is not None and hum > cfg.high_humidity.threshold:
        sev = "CRITICAL" if hum > cfg.high_humidity.critical_above else "WARNING"
        out.append(mk("HIGH_HUMIDITY", sev, "humidity", hum, cfg.high_humidity.threshold))
    return out


# State-store layout (the streaming job declares these as its state schemas).
SCALAR_FIELDS: tuple[tuple[str, str], ...] = (
    ("last_t_ms", "bigint"), ("location", "string"), ("offline", "boolean"),
    ("consecutive", "int"), ("episodes", "string"), ("minute_start", "bigint"),
    ("minute_sum", "double"), ("minute_count", "int"), ("prev_minute_start", "bigint"),
    ("prev_minute_mean", "double"), ("trend_run", "int"), ("late_readings", "bigint"),
)
HISTORY_FIELDS: tuple[tuple[str, str], ...] = (  # the columns pack_history packs
    ("t_ms", "bigint"), ("temperature", "double"), ("humidity", "double"),
    ("pressure", "double"),
)


def ddl(fields: Sequence[tuple[str, str]]) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in fields)


@dataclass
class SensorAlertState:
    """Everything the rules remember about one sensor, bounded by the longest rule window."""

    sensor_id: str
    cfg: AlertsConfig
    last_t_ms: int | None = None
    location: str | None = None
    offline: bool = False
    consecutive: int = 0
    episodes: set[str] = field(default_factory=set)
    minute_start: int | None = None
    minute_sum: float = 0.0
    minute_count: int = 0
    prev_minute_start: int | None = None
    prev_minute_mean: float | None = None
    trend_run: int = 0
    late_readings: int = 0
    # History of processed readings, oldest first, as parallel lists (bisect on times).
    _t: list[int] = field(default_factory=list)
    _v: dict[str, list[float]] = field(default_factory=lambda: {m: [] for m in METRICS})
    # Cadence-aware profiles: the last offline.gaps reporting intervals (seconds, oldest
    # first) and the adaptive detector of each metric (created at its first value).
    gaps: list[float] = field(default_factory=list)
    detectors: dict[str, AnomalyDetector] = field(default_factory=dict)
    # Lifecycle (cadence-aware profiles), keyed "alert_type|metric": the open episodes of
    # raised alerts (the opening alert's event time), the cool-downs (until when no alert
    # of that key opens), and episodes that began within a cool-down (open, no alert).
    opened: dict[str, int] = field(default_factory=dict)
    quiet: dict[str, int] = field(default_factory=dict)
    suppressed: set[str] = field(default_factory=set)
    # Episodes resolved by the readings processed since the last `take_resolved` (not state).
    resolved: list[Resolution] = field(default_factory=list)

    # --- rule windows -------------------------------------------------------------------

    @property
    def history_ms(self) -> int:
        """How far back any rule looks from the newest reading."""
        return max(self.cfg.trailing.window_s, self.cfg.rapid_change.within_s) * 1000

    @property
    def offline_after_ms(self) -> int:
        """How long after its last reading the sensor counts as offline: offline.after_s in
        the seed profile; else relative to its own reporting interval (never less)."""
        off = self.cfg.offline
        after = off.after_s * 1000
        if not self.cfg.adaptive:
            return after
        if not self.gaps:
            return max(after, off.initial_after_s * 1000)
        routine = _quantile(self.gaps, off.interval_quantile)
        # at most half the state's lifetime: a silent sensor goes offline before its state
        # is evicted
        learnt = min(off.interval_factor * routine, self.cfg.state_ttl_s / 2)
        return max(after, int(round(learnt * 1000)))

    def offline_deadline_ms(self) -> int | None:
        """Event time at which the sensor counts as offline if nothing arrives before."""
        if self.last_t_ms is None or self.offline or "SENSOR_OFFLINE" not in self.cfg.enabled:
            return None
        return self.last_t_ms + self.offline_after_ms

    def history_len(self) -> int:
        return len(self._t)

    def has_reading_at(self, t_ms: int) -> bool:
        """Does the history hold a processed reading at exactly ``t_ms``?"""
        i = bisect.bisect_left(self._t, t_ms)
        return i < len(self._t) and self._t[i] == t_ms

    # --- entry points -------------------------------------------------------------------

    def process(self, readings: Iterable[Reading], *, now: datetime) -> list[Alert]:
        """Evaluate every rule on the readings (sorted here by event time); return alerts."""
        ordered = sorted(readings, key=lambda r: (r.t_ms, _nan_key(r.temperature),
                                                  _nan_key(r.humidity), _nan_key(r.pressure)))
        out: list[Alert] = []
        for r in ordered:
            out.extend(self._on_reading(r, now))
        self._prune()
        return out

    def on_watermark(self, watermark_ms: int, *, now: datetime, details: str | None = None
                     ) -> list[Alert]:
        """Event time has reached `watermark_ms`: raise SENSOR_OFFLINE if it is due."""
        deadline = self.offline_deadline_ms()
        if deadline is None or watermark_ms < deadline:
            return []
        out = self._go_offline(deadline, now, details)
        return self._open(out) if self.cfg.adaptive else out

    def active(self) -> list[tuple[str, str, str | None, datetime]]:
        """The open episodes of raised alerts: (alert_id, alert_type, metric, opened at)."""
        out = []
        for key, t in sorted(self.opened.items()):
            kind, _, metric = key.partition("|")
            out.append((alert_id(self.sensor_id, kind, metric or None, t), kind,
                        metric or None, from_ms(t)))
        return out

    def take_resolved(self) -> list[Resolution]:
        """The episodes resolved since the last call (cadence-aware profiles)."""
        out, self.resolved = self.resolved, []
        return out

    # --- lifecycle ----------------------------------------------------------------------

    def _open(self, alerts: list[Alert]) -> list[Alert]:
        """Record the episodes the alerts open; drop an alert whose key is cooling down."""
        kept: list[Alert] = []
        for a in alerts:
            key = f"{a.alert_type}|{a.metric or ''}"
            t = to_ms(a.event_time)
            if a.alert_type == "SENSOR_RECOVERED":  # an event, not a condition: born resolved
                kept.append(replace(a, resolved_at=a.event_time))
                continue
            if a.alert_type in COOLDOWN_TYPES and t < self.quiet.get(key, -1):
                self.suppressed.add(key)
                continue
            self.opened.setdefault(key, t)
            kept.append(a)
        return kept

    def _holds(self, key: str, statics: set[str]) -> bool:
        """Does the condition of an open episode still hold after the reading just seen?"""
        kind, _, metric = key.partition("|")
        if kind in _STATIC_TYPES:
            return key in statics
        if kind == "CONSECUTIVE_ALERTS":
            return self.consecutive > 0
        if kind == "SENSOR_OFFLINE":
            return self.offline
        if kind == ANOMALY:
            det = self.detectors.get(metric)
            return det is not None and bool(det.open)
        return _episode_key(kind, metric or None) in self.episodes

    def _late(self, r: Reading, statics: list[Alert]) -> list[Alert]:
        """Static alerts of a reading late for the sensor (outside the lifecycle, which follows
        the readings in order): one inside the open episode of its key stays open (the
        episode's resolution closes it); any other is born resolved at the sensor's next
        reading after it (the lifecycle has moved past it)."""
        out = []
        for a in statics:
            opened = self.opened.get(f"{a.alert_type}|{a.metric or ''}")
            if opened is not None and opened <= r.t_ms:
                out.append(a)
                continue
            i = bisect.bisect_right(self._t, r.t_ms)
            end = self._t[i] if i < len(self._t) else self.last_t_ms
            out.append(replace(a, resolved_at=from_ms(end if end is not None else r.t_ms)))
        return out

    def expire(self, at_ms: int) -> list[Resolution]:
        """The sensor's state is evicted at ``at_ms``: its open episodes end there."""
        last = from_ms(self.last_t_ms) if self.last_t_ms is not None else None
        out = [Resolution(self.sensor_id, kind, metric or None, from_ms(t), from_ms(at_ms),
                          last if kind == "SENSOR_OFFLINE" else None, cause="expired")
               for key, t in sorted(self.opened.items())
               for kind, _, metric in [key.partition("|")]]
        self.opened.clear()
        self.suppressed.clear()
        self.quiet.clear()
        return out

    def _resolve(self, r: Reading, statics: list[Alert], before: int | None) -> None:
        """Close the episodes whose condition this reading no longer meets (``before``: the
        sensor's reading before this one)."""
        hot = {f"{a.alert_type}|{a.metric or ''}" for a in statics}
        cooldown_ms = self.cfg.cooldown_s * 1000
        for key in [k for k in self.opened if not self._holds(k, hot)]:
            kind, _, metric = key.partition("|")
            since = from_ms(before) if kind == "SENSOR_OFFLINE" and before is not None else None
            self.resolved.append(Resolution(self.sensor_id, kind, metric or None,
                                            from_ms(self.opened.pop(key)), from_ms(r.t_ms),
                                            since))
            if kind in COOLDOWN_TYPES:
                self.quiet[key] = r.t_ms + cooldown_ms
        for key in [k for k in self.suppressed if not self._holds(k, hot)]:
            self.suppressed.discard(key)
            self.quiet[key] = r.t_ms + cooldown_ms
        for key in [k for k, until in self.quiet.items() if until <= r.t_ms]:
            del self.quiet[key]

    # --- rules --------------------------------------------------------------------------

    def _alert(self, kind: str, t_ms: int, now: datetime, metric: str | None,
               value: float | None, threshold: float | None, details: dict | None = None,
               sev: str | None = None) -> Alert:
        return Alert(self.sensor_id, self.location, kind, sev or severity(self.cfg, kind),
                     from_ms(t_ms), now, metric, value, threshold,
                     json.dumps(details, sort_keys=True) if details else None)

    def _episode(self, key: str, condition: bool) -> bool:
        """True when `condition` starts a new episode of `key` (fire once per episode)."""
        if condition:
            if key in self.episodes:
                return False
            self.episodes.add(key)
            return True
        self.episodes.discard(key)
        return False

    def _go_offline(self, deadline: int, now: datetime, details: str | None) -> list[Alert]:
        assert self.last_t_ms is not None
        out = self._close_minute(now)
        after_s = float((deadline - self.last_t_ms) / 1000)
        self.offline = True
        extra = {"last_reading": from_ms(self.last_t_ms).isoformat()}
        if details:
            extra["detected_by"] = details
        out.append(self._alert("SENSOR_OFFLINE", deadline, now, None, after_s, after_s, extra))
        return out

    def _on_reading(self, r: Reading, now: datetime) -> list[Alert]:
        if r.location is not None:
            self.location = r.location
        statics = static_alerts(self.sensor_id, r, self.cfg, now)
        if self.last_t_ms is not None and r.t_ms < self.last_t_ms:
            self.late_readings += 1
            return self._late(r, statics) if self.cfg.adaptive else statics
        before = self.last_t_ms
        out: list[Alert] = []
        enabled = self.cfg.enabled
        deadline = self.offline_deadline_ms()
        if deadline is not None and r.t_ms > deadline:
            out.extend(self._go_offline(deadline, now, "next reading"))
        if self.offline:
            self.offline = False
            gap_s = (r.t_ms - self.last_t_ms) / 1000 if self.last_t_ms is not None else None
            out.append(self._alert("SENSOR_RECOVERED", r.t_ms, now, None, gap_s,
                                   self.offline_after_ms / 1000))
        if self.cfg.adaptive and self.last_t_ms is not None and r.t_ms > self.last_t_ms:
            self.gaps.append((r.t_ms - self.last_t_ms) / 1000)
            if len(self.gaps) > self.cfg.offline.gaps:
                del self.gaps[0]
        if "RISING_TREND" in enabled:
            out.extend(self._trend(r, now))
        out.extend(statics)
        if "DYNAMIC_THRESHOLD" in enabled or "ZSCORE_OUTLIER" in enabled:
            out.extend(self._trailing(r, now))
        if "RAPID_CHANGE" in enabled:
            out.extend(self._rapid(r, now))
        if ANOMALY in enabled:
            out.extend(self._anomaly(r, now))
        if statics:
            self.consecutive += 1
            if self.consecutive == self.cfg.consecutive.count and \
                    "CONSECUTIVE_ALERTS" in enabled:
                kinds = sorted({a.alert_type for a in statics})
                out.append(self._alert("CONSECUTIVE_ALERTS", r.t_ms, now, None,
                                       float(self.consecutive),
                                       float(self.cfg.consecutive.count), {"last": kinds}))
        else:
            self.consecutive = 0
        self._append(r)
        if self.cfg.adaptive:
            out = self._open(out)
            self._resolve(r, statics, before)
        return out

    def _trend(self, r: Reading, now: datetime) -> list[Alert]:
        minute = r.t_ms - r.t_ms % MINUTE_MS
        out: list[Alert] = []
        if self.minute_start is not None and minute > self.minute_start:
            out = self._close_minute(now)
        temp = r.value("temperature")
        if self.minute_start is None:
            self.minute_start, self.minute_sum, self.minute_count = minute, 0.0, 0
        if temp is not None:
            self.minute_sum += temp
            self.minute_count += 1
        return out

    def _close_minute(self, now: datetime) -> list[Alert]:
        """The open minute is complete: extend or break the rising chain."""
        if self.minute_start is None:
            return []
        start, count = self.minute_start, self.minute_count
        mean = self.minute_sum / count if count else None
        self.minute_start, self.minute_sum, self.minute_count = None, 0.0, 0
        if mean is None:
            self.trend_run, self.prev_minute_start, self.prev_minute_mean = 0, None, None
            return []
        adjacent = self.prev_minute_start == start - MINUTE_MS
        if adjacent and self.prev_minute_mean is not None and mean > self.prev_minute_mean:
            self.trend_run += 1
        else:
            self.trend_run = 0
        self.prev_minute_start, self.prev_minute_mean = start, mean
        need = self.cfg.rising_trend.minutes
        if self._episode("RISING_TREND", self.trend_run >= need):
            end = start + MINUTE_MS
            return [self._alert("RISING_TREND", end, now, "temperature", mean, None,
                                {"rises": self.trend_run,
                                 "from_minute": from_ms(start - need * MINUTE_MS).isoformat()})]
        return []

    def _window(self, lo_ms: int, hi_ms: int) -> tuple[int, int]:
        """Indices of history readings with lo_ms <= t < hi_ms."""
        return bisect.bisect_left(self._t, lo_ms), bisect.bisect_left(self._t, hi_ms)

    def _trailing_window(self, t_ms: int) -> tuple[int, int]:
        """History indices of the trailing statistics of a reading at ``t_ms``: the readings
        of [t - window_s, t); in a cadence-aware profile, when those are fewer than
        min_readings, the last min_readings readings before t if they span at most
        max_span_s (a slow sensor's statistics by count)."""
        tr = self.cfg.trailing
        lo, hi = self._window(t_ms - tr.window_s * 1000, t_ms)
        if self.cfg.adaptive and hi - lo < tr.min_readings and hi >= tr.min_readings:
            first = hi - tr.min_readings
            if t_ms - self._t[first] <= tr.max_span_s * 1000:
                lo = first
        return lo, hi

    def _trailing(self, r: Reading, now: datetime) -> list[Alert]:
        enabled = self.cfg.enabled
        lo, hi = self._trailing_window(r.t_ms)
        stats: dict[str, tuple[float, float] | None] = {}
        for m in METRICS:
            stats[m] = None
            if hi - lo < self.cfg.trailing.min_readings:
                continue
            mean, std, n = _mean_std(self._v[m][lo:hi])
            if n < self.cfg.trailing.min_readings:
                continue
            if std > 0:
                stats[m] = (mean, std)
        out: list[Alert] = []
        temp, t_stats = r.value("temperature"), stats["temperature"]
        dyn_threshold = None
        if temp is not None and t_stats is not None:
            dyn_threshold = t_stats[0] + self.cfg.dynamic_threshold.k_std * t_stats[1]
        dyn = dyn_threshold is not None and temp is not None and temp > dyn_threshold
        if "DYNAMIC_THRESHOLD" in enabled and self._episode("DYNAMIC_THRESHOLD", dyn):
            assert t_stats is not None
            out.append(self._alert("DYNAMIC_THRESHOLD", r.t_ms, now, "temperature", temp,
                                   dyn_threshold, {"mean": t_stats[0], "std": t_stats[1],
                                                   "n": hi - lo}))
        for m in self.cfg.zscore.metrics:
            x, s = r.value(m), stats[m]
            z = abs(x - s[0]) / s[1] if x is not None and s is not None else None
            outlier = z is not None and z > self.cfg.zscore.threshold
            if "ZSCORE_OUTLIER" in enabled and self._episode(f"ZSCORE_OUTLIER:{m}", outlier):
                assert s is not None
                out.append(self._alert("ZSCORE_OUTLIER", r.t_ms, now, m, x,
                                       self.cfg.zscore.threshold,
                                       {"z": z, "mean": s[0], "std": s[1], "n": hi - lo}))
        return out

    def _rapid(self, r: Reading, now: datetime) -> list[Alert]:
        temp = r.value("temperature")
        lo, hi = self._window(r.t_ms - self.cfg.rapid_change.within_s * 1000, r.t_ms)
        best: tuple[float, int] | None = None
        if temp is not None:
            for i in range(lo, hi):
                prev = self._v["temperature"][i]
                if not math.isnan(prev) and (best is None or abs(temp - prev) > best[0]):
                    best = (abs(temp - prev), i)
        fire = best is not None and best[0] > self.cfg.rapid_change.delta
        if self._episode("RAPID_CHANGE", fire):
            assert best is not None
            i = best[1]
            return [self._alert("RAPID_CHANGE", r.t_ms, now, "temperature", temp,
                                self.cfg.rapid_change.delta,
                                {"change": best[0], "from_value": self._v["temperature"][i],
                                 "from_time": from_ms(self._t[i]).isoformat()})]
        return []

    def _anomaly(self, r: Reading, now: datetime) -> list[Alert]:
        """ANOMALY per metric: the adaptive detector's episode opened at this reading."""
        out: list[Alert] = []
        for m in self.cfg.anomaly.metrics:
            v = r.value(m)
            if v is None:
                continue
            det = self.detectors.get(m)
            if det is None:
                det = self.detectors[m] = AnomalyDetector(_settings(self.cfg, m))
            d = det.update(r.t_ms, v)
            if d.opened:
                out.append(self._alert(ANOMALY, r.t_ms, now, m, v, d.expected,
                                       {"score": round(d.score, 2),
                                        "method": self.cfg.anomaly.method}))
        return out

    # --- history ------------------------------------------------------------------------

    def _append(self, r: Reading) -> None:
        # Readings arrive in order (late ones never reach here), so appending keeps it sorted.
        self._t.append(r.t_ms)
        for m in METRICS:
            v = r.value(m)
            self._v[m].append(math.nan if v is None else v)
        self.last_t_ms = r.t_ms

    def _prune(self) -> None:
        """Drop readings no rule can look at again (older than newest - longest window)."""
        if self.last_t_ms is None:
            return
        k = bisect.bisect_left(self._t, self.last_t_ms - self.history_ms)
        tr = self.cfg.trailing
        if self.cfg.adaptive and k > len(self._t) - tr.min_readings:
            # keep the last min_readings readings within max_span_s (statistics by count)
            k_span = bisect.bisect_left(self._t, self.last_t_ms - tr.max_span_s * 1000)
            k = min(k, max(k_span, len(self._t) - tr.min_readings))
        if k:
            del self._t[:k]
            for m in METRICS:
                del self._v[m][:k]

    # --- state store round trip ---------------------------------------------------------

    def to_state(self) -> tuple[tuple, bytes]:
        """(scalars row per SCALAR_FIELDS, the history, intervals and detectors packed by
        `pack_state`)."""
        self._prune()
        scalars = (self.last_t_ms, self.location, self.offline, self.consecutive,
                   self._episodes_text(), self.minute_start, self.minute_sum,
                   self.minute_count, self.prev_minute_start, self.prev_minute_mean,
                   self.trend_run, self.late_readings)
        dets = {m: d.to_state() for m, d in self.detectors.items()}
        return scalars, pack_state(self._t, [self._v[m] for m in METRICS], self.gaps, dets)

    # The episodes column: the rule episodes "K1,K2" (the seed's text); in the cadence-aware
    # profiles, when there is any, ";" then the open alerts "type|metric@ms,...", the
    # cool-downs "type|metric@until,..." and the suppressed episodes "type|metric,...".
    def _episodes_text(self) -> str:
        text = ",".join(sorted(self.episodes))
        if not (self.opened or self.quiet or self.suppressed):
            return text
        return ";".join([text, ",".join(f"{k}@{v}" for k, v in sorted(self.opened.items())),
                         ",".join(f"{k}@{v}" for k, v in sorted(self.quiet.items())),
                         ",".join(sorted(self.suppressed))])

    def _read_episodes(self, text: str) -> None:
        parts = text.split(";")
        self.episodes = {e for e in parts[0].split(",") if e}
        if len(parts) == 4:
            for target, part in ((self.opened, parts[1]), (self.quiet, parts[2])):
                for item in filter(None, part.split(",")):
                    key, _, ms = item.rpartition("@")
                    target[key] = int(ms)
            self.suppressed = {e for e in parts[3].split(",") if e}

    def history_rows(self) -> list[tuple]:
        """The history as rows per HISTORY_FIELDS (None for a missing value)."""
        return [(t, *(_none_if_nan(self._v[m][i]) for m in METRICS))
                for i, t in enumerate(self._t)]

    @classmethod
    def from_state(cls, sensor_id: str, cfg: AlertsConfig, scalars: Sequence[Any] | None,
                   history: bytes | None) -> SensorAlertState:
        st = cls(sensor_id, cfg)
        if scalars is not None:
            (last, loc, offline, consec, episodes, mstart, msum, mcount, pstart, pmean, run,
             late) = scalars
            st.last_t_ms = _int_or_none(last)
            st.location = loc
            st.offline = bool(offline)
            st.consecutive = int(consec or 0)
            st._read_episodes(episodes or "")
            st.minute_start = _int_or_none(mstart)
            st.minute_sum = float(msum or 0.0)
            st.minute_count = int(mcount or 0)
            st.prev_minute_start = _int_or_none(pstart)
            st.prev_minute_mean = None if pmean is None or _isnan(pmean) else float(pmean)
            st.trend_run = int(run or 0)
            st.late_readings = int(late or 0)
        if history:
            st._t, values, gaps, dets = unpack_state(history)
            st._v = dict(zip(METRICS, values, strict=True))
            st.gaps = gaps
            st.detectors = {m: AnomalyDetector.from_state(_settings(cfg, m), v)
                            for m, v in dets.items()}
        return st


# History in the state store: one little-endian float64 matrix, a row per reading of
# (t_ms, temperature, humidity, pressure), NaN for a missing value. Epoch milliseconds are
# exact in a float64 (< 2**53). One bytes value per sensor costs one (de)serialization, where
# a row per reading cost one per reading: the rule windows hold up to trailing.window_s of
# readings (180 at one reading per 10 s).
_HISTORY_DTYPE = np.dtype("<f8")
_HISTORY_WIDTH = len(HISTORY_FIELDS)  # t_ms, then one column per metric


def pack_history(times: Sequence[int], values: Sequence[Sequence[float]]) -> bytes:
    if not times:
        return b""
    return np.column_stack([times, *values]).astype(_HISTORY_DTYPE).tobytes()


def unpack_history(blob: bytes) -> tuple[list[int], list[list[float]]]:
    matrix = np.frombuffer(blob, dtype=_HISTORY_DTYPE).reshape(-1, _HISTORY_WIDTH)
    times = matrix[:, 0].astype(np.int64).tolist()
    return times, [matrix[:, 1 + i].tolist() for i in range(len(METRICS))]


# The state blob (the sensor's `history` column), layout v3: one little-endian float64 array
#   [NaN, 3, rows, detector mask, gaps] + the history matrix (rows x 4, as pack_history)
#   + ANOMALY_STATE_SIZE floats per metric in the mask (METRICS order, bit i = METRICS[i])
#   + the gaps.
# A leading NaN marks it: a v2 blob (the history matrix alone, pack_history) starts with a
# reading's t_ms, never NaN, so it is read as the history of a sensor with no intervals or
# detectors learnt yet (migration on read; the next store writes v3).
STATE_VERSION = 3
_HEADER = 5


def pack_state(times: Sequence[int], values: Sequence[Sequence[float]], gaps: Sequence[float],
               detectors: dict[str, tuple[float, ...]]) -> bytes:
    if not detectors and not gaps:
        return pack_history(times, values)  # nothing learnt beyond the history: v2 layout
    mask = sum(1 << i for i, m in enumerate(METRICS) if m in detectors)
    parts: list[float] = [math.nan, float(STATE_VERSION), float(len(times)), float(mask),
                          float(len(gaps))]
    head = np.array(parts, dtype=_HISTORY_DTYPE)
    hist = (np.column_stack([times, *values]).astype(_HISTORY_DTYPE).ravel() if times
            else np.empty(0, dtype=_HISTORY_DTYPE))
    rest = [v for m in METRICS if m in detectors for v in detectors[m]] + list(gaps)
    return head.tobytes() + hist.tobytes() + np.array(rest, dtype=_HISTORY_DTYPE).tobytes()


def unpack_state(blob: bytes) -> tuple[list[int], list[list[float]], list[float],
                                       dict[str, list[float]]]:
    """(times, values per metric, gaps, detector floats per metric) of a v2 or v3 blob."""
    arr = np.frombuffer(blob, dtype=_HISTORY_DTYPE)
    if not math.isnan(arr[0]):
        times, values = unpack_history(blob)
        return times, values, [], {}
    version, rows, mask, n_gaps = (int(v) for v in arr[1:_HEADER])
    if version != STATE_VERSION:
        raise ValueError(f"alert state blob of layout v{version}; this version reads "
                         f"v{STATE_VERSION} and v2")
    end = _HEADER + rows * _HISTORY_WIDTH
    matrix = arr[_HEADER:end].reshape(-1, _HISTORY_WIDTH)
    times = matrix[:, 0].astype(np.int64).tolist()
    values = [matrix[:, 1 + i].tolist() for i in range(len(METRICS))]
    dets: dict[str, list[float]] = {}
    for i, m in enumerate(METRICS):
        if mask >> i & 1:
            dets[m] = arr[end:end + ANOMALY_STATE_SIZE].tolist()
            end += ANOMALY_STATE_SIZE
    gaps = arr[end:end + n_gaps].tolist()
    if end + n_gaps != len(arr):
        raise ValueError(f"alert state blob: {len(arr)} floats, the header says "
                         f"{end + n_gaps}")
    return times, values, gaps, dets


def _mean_std(values: list[float]) -> tuple[float, float, int]:
    """Mean and sample standard deviation of the values that are not NaN, and their count.

    Plain Python: on the few hundred values of a rule window numpy's per-call overhead costs
    more than the arithmetic (this runs for every reading and metric).
    """
    xs = [x for x in values if x == x]  # x != x only for NaN
    n = len(xs)
    if n < 2:
        return math.nan, math.nan, n
    mean = sum(xs) / n
    return mean, math.sqrt(sum([(x - mean) * (x - mean) for x in xs]) / (n - 1)), n


def _quantile(xs: Sequence[float], q: float) -> float:
    """The q-quantile of ``xs`` (linear between order statistics; q=0.5 is the median)."""
    ordered = sorted(xs)
    pos = q * (len(ordered) - 1)
    i = int(pos)
    if i + 1 >= len(ordered):
        return ordered[-1]
    return ordered[i] + (ordered[i + 1] - ordered[i]) * (pos - i)


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


def _nan_key(v: float | None) -> float:
    return -math.inf if v is None or _isnan(v) else v


def _none_if_nan(v: float) -> float | None:
    return None if math.isnan(v) else v


def _int_or_none(v: Any) -> int | None:
    return None if v is None or _isnan(v) else int(v)
