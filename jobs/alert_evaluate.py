"""Score the alert rules on labelled series (`lakehouse alerts evaluate`). Pure: no file I/O.

A labelled series is one sensor's readings with labelled event windows (NAB's windows, or
runs of labelled readings). Its readings go through `gold.alert_rules.SensorAlertState` the
way the alerts query drives it (`gold.alerts.AlertProcessor.handleInputRows`): silver's range
check first (an out-of-range or missing value is quarantined and never reaches the rules), a
reading whose event time the sensor already holds is a duplicate, then `process` with the
batch and `on_watermark` at the newest event time minus `streaming.watermark`. Here each
reading is a micro-batch of its own, in the order of the file; the rules give the same alerts
for any batching, and `detected_at` is the reading's event time so a run is deterministic.

Scores, per series, per alert group (static thresholds, statistical rules, the other rules,
all) and per alert type:

- events hit: labelled windows [start, end] (both inclusive) holding an alert's event time;
- false alerts: alerts outside every window, per sensor-day and sensor-hour of the series'
  span (first to last reading of the file, quarantined ones included);
- share of alerts inside events;
- chance: the number of events as many alerts, uniform at random over the span, hit. Its
  distribution is exact (inclusion-exclusion over the windows) up to `EXACT_MAX_EVENTS`
  windows and a seeded Monte Carlo beyond; `p` is the probability that chance hits at least
  as many events. Series are independent, so the overall distribution is the convolution of
  the series' ones.
"""

from __future__ import annotations

import importlib.util
import math
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gold.alert_rules import METRICS, Alert, Reading, SensorAlertState, from_ms, to_ms
from gold.anomaly import ALERT_TYPE as ANOMALY
from gold.anomaly import METHODS as ANOMALY_METHODS
from gold.anomaly import AnomalyDetector, AnomalySettings
from gold.schema import STATIC_ALERT_TYPES
from jobs.alert_score import STATISTICAL
from jobs.config import Config

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
GROUPS: tuple[str, ...] = ("all", "static", "statistical", "other")
SCALES: tuple[str, ...] = ("none", "fit")
# Inclusion-exclusion costs 2**k terms; beyond this many windows the chance is sampled.
EXACT_MAX_EVENTS = 12
DEFAULT_DRAWS = 10_000


def alert_group(alert_type: str) -> str:
    """static (the per-reading thresholds), statistical (trailing mean/std rules) or other."""
    if alert_type in STATIC_ALERT_TYPES:
        return "static"
    if alert_type in STATISTICAL:
        return "statistical"
    return "other"


@dataclass(frozen=True)
class Window:
    """A labelled event: event times in [start_ms, end_ms], both inclusive."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise ValueError(f"window ends before it starts: {from_ms(self.start_ms)} .. "
                             f"{from_ms(self.end_ms)}")

    def holds(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms <= self.end_ms


@dataclass(frozen=True)
class LabelledSeries:
    """One sensor's rows as read (file order): times and the values of the metrics it has
    (None for a missing value), and its labelled windows."""

    name: str
    times_ms: tuple[int, ...]
    values: Mapping[str, tuple[float | None, ...]]
    windows: tuple[Window, ...]

    def __post_init__(self) -> None:
        unknown = set(self.values) - set(METRICS)
        if unknown or not self.values:
            raise ValueError(f"{self.name}: metrics must be some of {METRICS}, got "
                             f"{sorted(self.values)}")
        for m, vs in self.values.items():
            if len(vs) != len(self.times_ms):
                raise ValueError(f"{self.name}: {len(vs)} {m} values for "
                                 f"{len(self.times_ms)} timestamps")

    @property
    def metrics(self) -> tuple[str, ...]:
        return tuple(m for m in METRICS if m in self.values)

    @property
    def span_ms(self) -> tuple[int, int]:
        if not self.times_ms:
            return 0, 0
        return min(self.times_ms), max(self.times_ms)


def quiet_band(cfg: Config, metric: str) -> tuple[float, float]:
    """Values of ``metric`` that silver accepts and no static threshold fires on."""
    lo, hi = cfg.validation.ranges()[metric]
    a = cfg.alerts
    if metric == "temperature":  # HIGH_TEMP fires above, LOW_TEMP below (strictly)
        lo, hi = max(lo, a.low_temp.threshold), min(hi, a.high_temp.threshold)
    elif metric == "humidity":  # HIGH_HUMIDITY fires above
        hi = min(hi, a.high_humidity.threshold)
    return lo, hi


def fit(values: Sequence[float | None], band: tuple[float, float]) -> list[float | None]:
    """Map the values' [min, max] linearly onto ``band`` (a constant series onto its middle)."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    if not present:
        return list(values)
    vmin, vmax = min(present), max(present)
    lo, hi = band
    if vmax == vmin:
        return [None if v is None else (lo + hi) / 2 for v in values]
    scale = (hi - lo) / (vmax - vmin)
    return [None if v is None or not math.isfinite(v) else lo + (v - vmin) * scale
            for v in values]


@dataclass(frozen=True)
class Prepared:
    """The readings that reach the rules, and what silver's checks took out."""

    readings: tuple[Reading, ...]
    quarantined: tuple[Reading, ...]
    duplicates: int


def prepare(series: LabelledSeries, cfg: Config, *, scale: str = "none") -> Prepared:
    """Readings of the series as the alerts query sees them.

    Metrics the series lacks get the middle of their `quiet_band` (a constant: no rule fires
    on it). With ``scale="fit"`` each metric the series has is mapped onto its quiet band first
    (for values in other units than the metric's). A reading with a missing or out-of-range
    value is quarantined, as silver does; of readings with the same event time the first is
    kept.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    n = len(series.times_ms)
    cols: dict[str, Sequence[float | None]] = {}
    for m in METRICS:
        band = quiet_band(cfg, m)
        if m not in series.values:
            cols[m] = [(band[0] + band[1]) / 2] * n
        elif scale == "fit":
            cols[m] = fit(series.values[m], band)
        else:
            cols[m] = series.values[m]
    ranges = cfg.validation.ranges()
    kept: list[Reading] = []
    bad: list[Reading] = []
    seen: set[int] = set()
    duplicates = 0
    for i, t in enumerate(series.times_ms):
        r = Reading(t, cols["temperature"][i], cols["humidity"][i], cols["pressure"][i])
        ok = True
        for m in METRICS:
            v = r.value(m)
            if v is None or not math.isfinite(v) or not ranges[m][0] <= v <= ranges[m][1]:
                ok = False
        if not ok:
            bad.append(r)
        elif t in seen:
            duplicates += 1
        else:
            seen.add(t)
            kept.append(r)
    return Prepared(tuple(kept), tuple(bad), duplicates)


@dataclass(frozen=True)
class Detectors:
    """What raises alerts in an evaluation: the configured rules and/or the adaptive
    detector (`gold.anomaly`, alert type ANOMALY) with one of its methods."""

    rules: bool = True
    anomaly: str | None = None  # a gold.anomaly method, or "hst" (River's HalfSpaceTrees)

    @classmethod
    def parse(cls, text: str) -> Detectors:
        """``rules``, ``anomaly[:method]`` or both joined by ``,`` / ``+``."""
        rules, anomaly = False, None
        for part in (p.strip() for p in text.replace("+", ",").split(",")):
            name, _, method = part.partition(":")
            if name == "rules" and not method:
                rules = True
            elif name == "anomaly" and anomaly is None:
                anomaly = method or ANOMALY_METHODS[0]
                if anomaly not in (*ANOMALY_METHODS, "hst"):
                    raise ValueError(f"anomaly method must be one of "
                                     f"{', '.join((*ANOMALY_METHODS, 'hst'))}, got {method!r}")
                if anomaly == "hst" and importlib.util.find_spec("river") is None:
                    raise ValueError("anomaly:hst needs River, an optional extra: "
                                     ".venv/bin/pip install -e '.[compare]'")
            else:
                raise ValueError(f"detector must be rules, anomaly[:method] or both, got "
                                 f"{part!r}")
        return cls(rules, anomaly)

    def __str__(self) -> str:
        parts = (["rules"] if self.rules else []) + (
            [f"anomaly:{self.anomaly}"] if self.anomaly else [])
        return ",".join(parts)


def run_anomaly(sensor_id: str, readings: Iterable[Reading], *, method: str = "seasonal",
                metrics: Sequence[str] = METRICS,
                overrides: Mapping[str, Any] | None = None) -> list[Alert]:
    """ANOMALY alerts of `gold.anomaly.AnomalyDetector` (default settings of each metric, the
    given method, any ``overrides`` of `AnomalySettings`) on the readings in order: one alert
    per episode, at the reading that opens it; ``detected_at`` is its event time."""
    if method == "hst":
        return _run_hst(sensor_id, readings, metrics)
    dets = {m: AnomalyDetector(AnomalySettings.for_metric(m, method=method,
                                                          **(overrides or {})))
            for m in metrics}
    out: list[Alert] = []
    for r in readings:
        for m, det in dets.items():
            v = r.value(m)
            if v is None:
                continue
            d = det.update(r.t_ms, v)
            if d.opened:
                t = from_ms(r.t_ms)
                out.append(Alert(sensor_id, r.location, ANOMALY, "WARNING", t, t, m, v,
                                 d.expected, f"score {d.score:.1f} ({method})"))
    return out


# River's HalfSpaceTrees, for comparison only: it needs values scaled to [0, 1] up front
# (here by the metric's validation range would flatten everything, so by the series' own
# min..max: a look-ahead no streaming detector has) and flags its top scores.
HST_QUANTILE = 0.999


def _run_hst(sensor_id: str, readings: Iterable[Reading],
             metrics: Sequence[str]) -> list[Alert]:
    from river import anomaly  # optional: only this comparison needs it

    rows = list(readings)
    out: list[Alert] = []
    for m in metrics:
        vals = [r.value(m) for r in rows]
        present = [v for v in vals if v is not None]
        if not present or max(present) == min(present):
            continue
        lo, hi = min(present), max(present)
        model = anomaly.HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=42)
        scores: list[tuple[float, Reading, float]] = []
        for r, v in zip(rows, vals, strict=True):
            if v is None:
                continue
            x = {"v": (v - lo) / (hi - lo)}
            scores.append((model.score_one(x), r, v))
            model.learn_one(x)
        warm = scores[min(len(scores) - 1, 250):]
        cut = sorted(s for s, _, _ in warm)[int(HST_QUANTILE * (len(warm) - 1))]
        prev_high = False
        for s, r, v in warm:
            high = s >= cut and s > 0
            if high and not prev_high:
                t = from_ms(r.t_ms)
                out.append(Alert(sensor_id, r.location, ANOMALY, "WARNING", t, t, m, v, None,
                                 f"hst score {s:.2f}"))
            prev_high = high
    return out


def run_rules(sensor_id: str, readings: Iterable[Reading], cfg: Config) -> list[Alert]:
    """Every alert the rules raise on the readings, fed one micro-batch per reading."""
    st = SensorAlertState(sensor_id, cfg.alerts)
    watermark_ms = cfg.streaming.watermark_s * 1000
    newest: int | None = None
    out: list[Alert] = []
    for r in readings:
        now = from_ms(r.t_ms)
        fresh = [] if st.has_reading_at(r.t_ms) else [r]
        out += st.process(fresh, now=now)
        newest = r.t_ms if newest is None else max(newest, r.t_ms)
        out += st.on_watermark(newest - watermark_ms, now=now, details="watermark")
        st.take_resolved()  # episodes' ends are not scored; do not keep them
    return out


# --- chance -------------------------------------------------------------------------------


def _union_length(intervals: Sequence[tuple[int, int]]) -> int:
    total, end = 0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total += e - s
            end = e
        elif e > end:
            total += e - end
            end = e
    return total


def _disjoint(windows: Sequence[tuple[int, int]]) -> bool:
    ordered = sorted(windows)
    return all(a[1] < b[0] for a, b in zip(ordered, ordered[1:], strict=False))


def chance_pmf(windows: Sequence[Window], n_alerts: int, span: tuple[int, int], *,
               seed: int | Sequence[int] = 0, draws: int = DEFAULT_DRAWS) -> np.ndarray:
    """Distribution of the number of windows hit by ``n_alerts`` alerts at independent uniform
    times over ``span``: element h is P(h windows hit). Exact up to EXACT_MAX_EVENTS windows,
    else a Monte Carlo of ``draws`` draws from a generator seeded with ``seed``."""
    k = len(windows)
    pmf = np.zeros(k + 1)
    t0, t1 = span
    if k == 0 or n_alerts == 0:
        pmf[0] = 1.0
        return pmf
    if t1 <= t0:  # every random alert falls on the one instant of the series
        pmf[sum(w.holds(t0) for w in windows)] = 1.0
        return pmf
    clipped = [(min(max(w.start_ms, t0), t1), max(min(w.end_ms, t1), t0)) for w in windows]
    if k <= EXACT_MAX_EVENTS:
        return _exact_pmf(clipped, n_alerts, t1 - t0)
    return _sampled_pmf(clipped, n_alerts, span, np.random.default_rng(seed), draws)


def _exact_pmf(clipped: Sequence[tuple[int, int]], n: int, span: int) -> np.ndarray:
    k = len(clipped)
    masks = np.arange(1 << k)
    bits = [(masks >> i) & 1 for i in range(k)]
    if _disjoint(clipped):
        covered = np.sum([b * (e - s) for b, (s, e) in zip(bits, clipped, strict=True)],
                         axis=0, dtype=float)
    else:
        covered = np.array([_union_length([w for i, w in enumerate(clipped) if m >> i & 1])
                            for m in range(1 << k)], dtype=float)
    # f[S] = P(no alert in any window of S); Möbius over supersets gives P(missed set == M).
    g = np.power(np.clip(1.0 - covered / span, 0.0, 1.0), n)
    for i in range(k):
        bit = 1 << i
        lower = (masks & bit) == 0
        g[lower] -= g[masks[lower] | bit]
    g = np.clip(g, 0.0, None)
    missed = np.sum(bits, axis=0)
    pmf = np.bincount(k - missed, weights=g, minlength=k + 1)
    return pmf / pmf.sum()


def _sampled_pmf(clipped: Sequence[tuple[int, int]], n: int, span: tuple[int, int],
                 rng: np.random.Generator, draws: int) -> np.ndarray:
    k = len(clipped)
    counts = np.zeros(k + 1)
    starts = np.array([s for s, _ in clipped], dtype=float)
    ends = np.array([e for _, e in clipped], dtype=float)
    order = np.argsort(starts)
    starts, ends = starts[order], ends[order]
    disjoint = _disjoint(clipped)
    chunk = max(1, 2_000_000 // n)
    done = 0
    while done < draws:
        m = min(chunk, draws - done)
        times = rng.uniform(span[0], span[1], size=(m, n))
        if disjoint:
            idx = np.searchsorted(starts, times, side="right") - 1
            inside = (idx >= 0) & (times <= ends[np.clip(idx, 0, None)])
            hit = np.zeros((m, k), dtype=bool)
            rows = np.broadcast_to(np.arange(m)[:, None], times.shape)
            hit[rows[inside], idx[inside]] = True
            hits = hit.sum(axis=1)
        else:
            hits = sum(((times >= s) & (times <= e)).any(axis=1).astype(int)
                       for s, e in zip(starts, ends, strict=True))
        counts += np.bincount(np.asarray(hits, dtype=int), minlength=k + 1)
        done += m
    return counts / counts.sum()


def convolve(pmfs: Iterable[np.ndarray]) -> np.ndarray:
    out = np.ones(1)
    for p in pmfs:
        out = np.convolve(out, p)
    return out


# --- scores -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Score:
    """Alerts of one group (or type) against the labelled events of one or more series."""

    alerts: int
    inside: int
    events: int
    hit: int
    span_ms: int
    chance: np.ndarray = field(repr=False, compare=False)

    @property
    def false_alerts(self) -> int:
        return self.alerts - self.inside

    @property
    def false_per_day(self) -> float | None:
        return self.false_alerts / (self.span_ms / DAY_MS) if self.span_ms else None

    @property
    def false_per_hour(self) -> float | None:
        return self.false_alerts / (self.span_ms / HOUR_MS) if self.span_ms else None

    @property
    def share_inside(self) -> float | None:
        return self.inside / self.alerts if self.alerts else None

    @property
    def hit_rate(self) -> float | None:
        return self.hit / self.events if self.events else None

    @property
    def chance_hits(self) -> float:
        """Expected number of events hit by chance."""
        return float(np.dot(np.arange(len(self.chance)), self.chance))

    @property
    def p_value(self) -> float | None:
        """P(chance hits >= hit); None without events."""
        if not self.events:
            return None
        return float(min(1.0, self.chance[self.hit:].sum()))

    def as_dict(self) -> dict[str, Any]:
        return {"alerts": self.alerts, "inside": self.inside, "false_alerts": self.false_alerts,
                "events": self.events, "hit": self.hit, "hit_rate": self.hit_rate,
                "sensor_days": self.span_ms / DAY_MS, "false_per_day": self.false_per_day,
                "false_per_hour": self.false_per_hour, "share_inside": self.share_inside,
                "chance_hits": self.chance_hits, "p_value": self.p_value}


def score(alert_times: Sequence[int], windows: Sequence[Window], span: tuple[int, int], *,
          seed: int | Sequence[int] = 0, draws: int = DEFAULT_DRAWS) -> Score:
    """Score alerts at ``alert_times`` (epoch ms) against the windows of one series."""
    inside = sum(any(w.holds(t) for w in windows) for t in alert_times)
    hit = sum(any(w.holds(t) for t in alert_times) for w in windows)
    return Score(len(alert_times), inside, len(windows), hit, span[1] - span[0],
                 chance_pmf(windows, len(alert_times), span, seed=seed, draws=draws))


def combine(scores: Iterable[Score]) -> Score:
    """Scores of independent series as one: counts and spans add, chance convolves."""
    items = list(scores)
    return Score(sum(s.alerts for s in items), sum(s.inside for s in items),
                 sum(s.events for s in items), sum(s.hit for s in items),
                 sum(s.span_ms for s in items), convolve(s.chance for s in items))


@dataclass(frozen=True)
class SeriesResult:
    series: LabelledSeries
    prepared: Prepared
    alerts: tuple[Alert, ...]
    groups: Mapping[str, Score]    # GROUPS
    types: Mapping[str, Score]     # alert types raised anywhere in the evaluation

    def as_dict(self) -> dict[str, Any]:
        t0, t1 = self.series.span_ms
        return {"series": self.series.name, "rows": len(self.series.times_ms),
                "readings": len(self.prepared.readings),
                "quarantined": len(self.prepared.quarantined),
                "duplicates": self.prepared.duplicates,
                "first": from_ms(t0).isoformat() if self.series.times_ms else None,
                "last": from_ms(t1).isoformat() if self.series.times_ms else None,
                "windows": [[from_ms(w.start_ms).isoformat(), from_ms(w.end_ms).isoformat()]
                            for w in self.series.windows],
                "groups": {g: s.as_dict() for g, s in self.groups.items()},
                "types": {t: s.as_dict() for t, s in self.types.items()}}


@dataclass(frozen=True)
class Evaluation:
    results: tuple[SeriesResult, ...]
    groups: Mapping[str, Score]
    types: Mapping[str, Score]
    settings: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"settings": dict(self.settings),
                "series": [r.as_dict() for r in self.results],
                "overall": {"groups": {g: s.as_dict() for g, s in self.groups.items()},
                            "types": {t: s.as_dict() for t, s in self.types.items()}}}


def _seed(seed: int, *parts: str) -> list[int]:
    return [seed, *(zlib.crc32(p.encode()) for p in parts)]


def _series_scores(s: LabelledSeries, alerts: Sequence[Alert], kinds: Sequence[str], *,
                   seed: int, draws: int) -> tuple[dict[str, Score], dict[str, Score]]:
    """The series' scores per alert group and per alert type."""
    def one(key: str, keep: Callable[[str], bool]) -> Score:
        times = [to_ms(a.event_time) for a in alerts if keep(a.alert_type)]
        return score(times, s.windows, s.span_ms, seed=_seed(seed, s.name, key), draws=draws)

    groups = {g: one(g, lambda t, g=g: g == "all" or alert_group(t) == g) for g in GROUPS}
    return groups, {k: one(k, lambda t, k=k: t == k) for k in kinds}


def evaluate(series: Sequence[LabelledSeries], cfg: Config, *, scale: str = "none",
             seed: int = 0, draws: int = DEFAULT_DRAWS,
             detectors: Detectors = Detectors(),
             on_series: Callable[[SeriesResult], None] | None = None) -> Evaluation:
    """Run the detectors (default: the rules) on every series and score them;
    ``on_series(result)`` after each."""
    runs: list[tuple[LabelledSeries, Prepared, list[Alert]]] = []
    for s in series:
        prep = prepare(s, cfg, scale=scale)
        alerts = run_rules(s.name, prep.readings, cfg) if detectors.rules else []
        if detectors.anomaly:
            # the named detector instead of the profile's own ANOMALY (production's rules)
            alerts = [a for a in alerts if a.alert_type != ANOMALY]
            alerts += run_anomaly(s.name, prep.readings, method=detectors.anomaly)
            alerts.sort(key=lambda a: a.event_time)
        runs.append((s, prep, alerts))
    kinds = sorted({a.alert_type for _, _, alerts in runs for a in alerts})
    results: list[SeriesResult] = []
    for s, prep, alerts in runs:
        groups, types = _series_scores(s, alerts, kinds, seed=seed, draws=draws)
        results.append(SeriesResult(s, prep, tuple(alerts), groups, types))
        if on_series is not None:
            on_series(results[-1])
    settings = {"scale": scale, "seed": seed, "draws": draws, "detectors": str(detectors),
                "watermark_s": cfg.streaming.watermark_s, "exact_max_events": EXACT_MAX_EVENTS}
    return Evaluation(tuple(results),
                      {g: combine(r.groups[g] for r in results) for g in GROUPS},
                      {k: combine(r.types[k] for r in results) for k in kinds}, settings)


# --- tables -------------------------------------------------------------------------------

_HEAD = ("alerts", "events hit", "in events", "false/day", "false/h", "chance hits", "p")


def _num(v: float | None, fmt: str) -> str:
    return "–" if v is None else format(v, fmt)


def _cells(s: Score) -> list[str]:
    hit = f"{s.hit}/{s.events}" if s.events else "0/0"
    share = "–" if s.share_inside is None else f"{100 * s.share_inside:.1f} %"
    return [str(s.alerts), hit, share, _num(s.false_per_day, ".2f"),
            _num(s.false_per_hour, ".3f"), f"{s.chance_hits:.2f}" if s.events else "–",
            _num(s.p_value, ".3f")]


def _table(head: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(head))) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def describe(ev: Evaluation, *, by_type: bool = False) -> str:
    """Markdown tables: per series (all alerts), overall by group and type, and with
    ``by_type`` each series by group and type."""
    out = ["Per series, every alert type:", ""]
    rows = []
    for r in ev.results:
        days = r.groups["all"].span_ms / DAY_MS
        rows.append([r.series.name, str(len(r.prepared.readings)),
                     str(len(r.prepared.quarantined)), f"{days:.1f}",
                     *_cells(r.groups["all"])])
    out += _table(("series", "readings", "quarantined", "days", *_HEAD), rows)
    out += ["", "Overall, by alert group and type:", ""]
    rows = [[g, *_cells(ev.groups[g])] for g in GROUPS]
    rows += [[f"{k} ({alert_group(k)})", *_cells(ev.types[k])] for k in ev.types]
    out += _table(("alerts of", *_HEAD), rows)
    if by_type:
        out += ["", "Per series, by alert group and type:", ""]
        rows = []
        for r in ev.results:
            rows += [[r.series.name, g, *_cells(r.groups[g])] for g in GROUPS[1:]
                     if r.groups[g].alerts]
            rows += [[r.series.name, k, *_cells(s)] for k, s in r.types.items() if s.alerts]
        out += _table(("series", "alerts of", *_HEAD), rows)
    st = ev.settings
    out += ["", f"Events hit: labelled windows holding an alert's event time. false/day, "
                f"false/h: alerts outside every window per sensor-day, sensor-hour. Chance: "
                f"as many alerts uniform at random over each series' span (exact up to "
                f"{st['exact_max_events']} windows per series, else {st['draws']:,} draws, "
                f"seed {st['seed']}); p = P(chance hits >= events hit). scale: {st['scale']}; "
                f"detectors: {st.get('detectors', 'rules')}."]
    return "\n".join(out)
