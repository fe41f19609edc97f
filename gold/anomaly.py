"""Adaptive anomaly detector of one sensor's metric (alert type ANOMALY), pure Python.

`AnomalyDetector` learns online, from the readings of one (sensor, metric), what the next
reading should be and how far off it usually is, and opens an episode when a reading is far
off both in the sensor's own terms and in absolute terms:

- expected = level + daily offset. The level is an exponentially weighted mean with time
  constant ``level_tau_s`` (6 h with daily offsets, 1 h without); with
  ``method="seasonal"`` 24 hour-of-day offsets (linearly interpolated between bin centres,
  time constant ``season_tau_s`` of each bin's own hour) learn the daily cycle on top.
  ``method="ewma"`` has no daily offsets.
- spread: an exponentially weighted mean absolute residual (time constant ``spread_tau_s``),
  as a standard deviation (x 1.2533, exact for Gaussian noise).
- robust: a residual enters the level, the offsets and the spread clipped at ``clip`` times
  the score's scale (Huber; the first reading after a gap is not clipped), so the anomalies
  the detector looks for barely move its baseline; while an episode is open nothing is
  learnt but the level's clipped update and the tail (below).
- score = |residual| / max(sd, floor / enter, tail / enter): the noise floor ``floor`` is
  the smallest deviation, in the metric's units, that may ever open an episode (a flat or
  quantised sensor has no spread to divide by).
- the sensor's own tail: a deviation it exceeds about ``tail_per_day`` times a day (learnt
  as a stochastic quantile in time: up a fixed factor per excursion above it, down steadily)
  is part of its normal behaviour, so the score is relative to max(sd, floor, tail) / enter
  and a sensor whose spikes are routine is not paged for every spike. An excursion counts
  once, plus once per ``TAIL_DWELL_S`` it lasts, whatever the cadence (a 5-minute spike moves
  the tail as much at 1 s as at 5 min); it ends when the deviation falls below
  tail x exit / enter, so one hovering around the tail is one excursion. It counts during an
  open episode too: every episode a sensor has makes its next one a little harder to open,
  so alerts that recur more than about ``tail_per_day`` times a day stop, and rare ones
  still page.
- hysteresis: an episode opens when the score reaches ``enter`` (one alert), stays open while
  it is at least ``exit``, and after it closes no episode opens for ``cooldown_s``.
- warm-up: nothing opens before ``warmup_s`` of event time and ``warmup_readings`` readings.
- any cadence: every decay is per second of event time (a weight 1 - exp(-dt / tau)), never
  per reading. The reporting interval is learnt (a geometric mean of the intervals); after a
  gap (more than ``GAP_INTERVALS`` intervals and ``GAP_MIN_S``) the first reading opens no
  episode, the expected value gets uncertain in proportion to the gap (an added variance that
  decays with the level's time constant) and that uncertainty lets the level re-anchor.

State: `STATE_SIZE` = 34 floats per (sensor, metric) whatever the cadence or the run length
(10 scalars and 24 daily offsets; `to_state` / `from_state`), so it can live in the Spark state
store. The ``open`` float holds two flags: bit 0 the episode is open, bit 1 the last reading
was above the tail; a state written before the second flag existed (0 or 1) reads as "not
above the tail". Time is epoch milliseconds (UTC) as in `gold.alert_rules`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

METHODS: tuple[str, ...] = ("seasonal", "ewma")
ALERT_TYPE = "ANOMALY"
BINS = 24
DAY_MS = 86_400_000
BIN_MS = DAY_MS // BINS
MAD_TO_SD = math.sqrt(math.pi / 2)  # mean absolute deviation -> standard deviation (Gaussian)
# A gap: more than this many learnt intervals and at least GAP_MIN_S between two readings.
GAP_INTERVALS = 4.0
GAP_MIN_S = 60.0
# The learnt interval follows the log of the intervals with this weight (at least 1/n).
INTERVAL_WEIGHT = 0.05
# Log-step of the tail deviation per excursion above it (it falls by tail_per_day steps a
# day); an excursion that lasts counts one more step per TAIL_DWELL_S of event time.
TAIL_STEP = 0.2
TAIL_DWELL_S = 300.0
# Bits of the serialized ``open`` float.
_OPEN_BIT = 1
_IN_TAIL_BIT = 2
# Smallest deviation that may open an episode, per metric (°C, %RH, hPa): below a typical
# sensor's accuracy and quantisation nobody is to be paged.
# The level's time constant: slow where daily offsets carry the cycle, else fast enough to
# follow it (a trend of slope k lags by k * tau).
LEVEL_TAU_S: Mapping[str, float] = {"seasonal": 6 * 3_600.0, "ewma": 3_600.0}
DEFAULT_FLOORS: Mapping[str, float] = {"temperature": 1.0, "humidity": 3.0, "pressure": 2.0}

_SCALARS = ("t_last", "t_first", "n", "level", "mad", "tail", "log_interval", "extra_var",
            "open", "quiet_until")
STATE_SIZE = len(_SCALARS) + BINS


@dataclass(frozen=True)
class AnomalySettings:
    """Parameters of the detector; times in seconds of event time, ``floor`` in the metric's
    units, ``enter``/``exit``/``clip`` in standard deviations of the learnt spread."""

    floor: float = 1.0
    method: str = "seasonal"
    enter: float = 6.0
    exit: float = 3.0
    clip: float = 3.0
    level_tau_s: float | None = None  # None: the method's (LEVEL_TAU_S)
    spread_tau_s: float = 6 * 3_600.0
    season_tau_s: float = 3 * 86_400.0
    cooldown_s: float = 3 * 3_600.0
    tail_per_day: float = 1.0
    warmup_s: float = 2 * 3_600.0
    warmup_readings: int = 12

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not 0 < self.exit <= self.enter:
            raise ValueError(f"need 0 < exit <= enter, got exit={self.exit} enter={self.enter}")
        if self.floor < 0 or self.clip <= 0:
            raise ValueError("floor must be >= 0 and clip > 0")
        if self.level_tau_s is None:
            object.__setattr__(self, "level_tau_s", LEVEL_TAU_S[self.method])
        for name in ("level_tau_s", "spread_tau_s", "season_tau_s"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0")

    @property
    def level_tau(self) -> float:
        assert self.level_tau_s is not None  # set in __post_init__
        return self.level_tau_s

    @classmethod
    def for_metric(cls, metric: str, **overrides: object) -> AnomalySettings:
        """Defaults with the metric's noise floor (`DEFAULT_FLOORS`)."""
        base = cls(floor=DEFAULT_FLOORS[metric])
        return replace(base, **overrides) if overrides else base  # type: ignore[arg-type]


@dataclass(frozen=True)
class Decision:
    """What one reading did: ``opened`` is the alert (the first reading of an episode)."""

    t_ms: int
    value: float
    expected: float | None
    score: float
    opened: bool
    closed: bool
    is_open: bool


def _decay(dt_s: float, tau_s: float) -> float:
    """Weight of the new observation after ``dt_s`` seconds with time constant ``tau_s``."""
    return -math.expm1(-max(dt_s, 0.0) / tau_s)


class AnomalyDetector:
    """One (sensor, metric): `update(t_ms, value)` per reading in event-time order."""

    __slots__ = ("cfg", "t_last", "t_first", "n", "level", "mad", "tail", "log_interval",
                 "extra_var", "open", "quiet_until", "season", "in_tail")

    def __init__(self, cfg: AnomalySettings) -> None:
        self.cfg = cfg
        self.t_last = math.nan
        self.t_first = math.nan
        self.n = 0.0
        self.level = 0.0
        self.mad = 0.0
        self.tail = 0.0
        self.log_interval = 0.0
        self.extra_var = 0.0
        self.open = 0.0
        self.quiet_until = -math.inf
        self.season = [0.0] * BINS
        self.in_tail = False

    # -- model --------------------------------------------------------------------------

    def _bins(self, t_ms: float) -> tuple[int, int, float]:
        """The two bins around ``t_ms`` (by bin centre) and the weight of the second."""
        pos = ((t_ms % DAY_MS) / BIN_MS) - 0.5
        lo = math.floor(pos)
        w = pos - lo
        return lo % BINS, (lo + 1) % BINS, w

    def offset(self, t_ms: float) -> float:
        if self.cfg.method != "seasonal":
            return 0.0
        a, b, w = self._bins(t_ms)
        return self.season[a] * (1.0 - w) + self.season[b] * w

    def expected(self, t_ms: float) -> float | None:
        return None if self.n == 0 else self.level + self.offset(t_ms)

    @property
    def sd(self) -> float:
        return self.mad * MAD_TO_SD

    @property
    def interval_s(self) -> float:
        return math.exp(self.log_interval) if self.n >= 2 else 0.0

    def warm(self, t_ms: float) -> bool:
        c = self.cfg
        return (self.n >= c.warmup_readings
                and (t_ms - self.t_first) / 1000.0 >= c.warmup_s)

    # -- one reading --------------------------------------------------------------------

    def update(self, t_ms: int, value: float) -> Decision:
        """Score the reading against what was learnt, decide the episode, then learn from it.

        A reading older than the last one, or not finite, is scored but changes nothing."""
        c = self.cfg
        if self.n == 0:
            self.t_first = self.t_last = float(t_ms)
            self.level = value
            self.n = 1.0
            return Decision(t_ms, value, None, 0.0, False, False, False)
        dt_s = (t_ms - self.t_last) / 1000.0
        exp_v = self.level + self.offset(t_ms)
        r = value - exp_v
        if dt_s < 0 or not math.isfinite(value):
            return Decision(t_ms, value, exp_v, 0.0, False, False, bool(self.open))
        gap = (self.n >= 2 and dt_s > GAP_MIN_S
               and dt_s > GAP_INTERVALS * self.interval_s)
        var = self.sd ** 2
        if gap:  # a random walk's variance grows with the time unseen
            var_gap = var * dt_s / c.level_tau
            self.extra_var += var_gap
        var_eff = var + self.extra_var
        sd_eff = math.sqrt(var_eff)
        scale = max(sd_eff, c.floor / c.enter, self.tail / c.enter, 1e-12)
        score = abs(r) / scale
        was_open = bool(self.open)
        opened = closed = False
        if was_open and score < c.exit:
            self.open = 0.0
            closed = True
            self.quiet_until = t_ms + c.cooldown_s * 1000.0
        elif (not was_open and score >= c.enter and not gap and t_ms >= self.quiet_until
              and self.warm(t_ms)):
            self.open = 1.0
            opened = True
        self._learn(t_ms, dt_s, value, r, scale, var, gap)
        return Decision(t_ms, value, exp_v, score, opened, closed, bool(self.open))

    def _learn(self, t_ms: int, dt_s: float, value: float, r: float, scale: float,
               var: float, gap: bool) -> None:
        c = self.cfg
        n = self.n
        # intervals: a gap does not count, and a burst of same-time readings neither
        if dt_s > 0 and not gap:
            w_i = max(1.0 / n, INTERVAL_WEIGHT)
            self.log_interval += w_i * (math.log(dt_s) - self.log_interval)
        # a gap's weight is that of a usual interval: its uncertainty lives in extra_var
        dt_w = min(dt_s, GAP_INTERVALS * self.interval_s) if gap else dt_s
        start = 1.0 / (n + 1.0)  # plain averages while little is known
        robust = n >= 3 and self.mad > 0
        lim = c.clip * scale if robust and not gap else math.inf
        rc = min(max(r, -lim), lim)
        a_level = max(_decay(dt_w, c.level_tau), start)
        if self.extra_var > 0:  # uncertain level: the reading says more (Kalman gain)
            a_level = max(a_level, self.extra_var / (self.extra_var + var + 1e-300))
            self.extra_var *= 1.0 - _decay(dt_w, c.level_tau)
            if self.extra_var < 1e-12 * (var + 1e-300):
                self.extra_var = 0.0
        self.level += a_level * rc
        if not self.open:
            if c.method == "seasonal":
                a, b, w = self._bins(t_ms)
                g = _decay(dt_w * BINS, c.season_tau_s)
                resid = value - self.level - self.offset(t_ms)
                resid = min(max(resid, -lim), lim)
                self.season[a] += g * (1.0 - w) * resid
                self.season[b] += g * w * resid
            a_mad = max(_decay(dt_w, c.spread_tau_s), start)
            dev = abs(r) if not robust else min(abs(r), c.clip * self.mad)
            self.mad += a_mad * (dev - self.mad)
        self._learn_tail(abs(r), dt_w)
        self.t_last = float(t_ms)
        self.n = n + 1.0

    def _learn_tail(self, dev: float, dt_s: float) -> None:
        """The deviation the sensor exceeds about ``tail_per_day`` times a day: up by a
        fixed factor per excursion above it and per ``TAIL_DWELL_S`` the excursion lasts,
        down continuously (a stochastic quantile in time, so an excursion moves it by its
        duration, never by its size or by the number of readings in it)."""
        c = self.cfg
        if self.tail <= 0.0:
            if self.n >= 3 and self.mad > 0:
                self.tail = c.enter * self.sd
            return
        if dev > self.tail:
            w = min(1.0, dt_s / TAIL_DWELL_S) if self.in_tail else 1.0
            self.tail *= math.exp(TAIL_STEP * w)
            self.in_tail = True
        else:
            self.tail *= math.exp(-TAIL_STEP * c.tail_per_day * dt_s / 86_400.0)
            # the excursion ends below the tail's exit (the episode's hysteresis), so a
            # deviation hovering around the tail is one excursion, not one per crossing
            if dev < self.tail * c.exit / c.enter:
                self.in_tail = False

    # -- state --------------------------------------------------------------------------

    def to_state(self) -> tuple[float, ...]:
        """The whole state as `STATE_SIZE` floats (the settings are not part of it)."""
        flags = float((_OPEN_BIT if self.open else 0) | (_IN_TAIL_BIT if self.in_tail else 0))
        return (self.t_last, self.t_first, self.n, self.level, self.mad, self.tail,
                self.log_interval, self.extra_var, flags, self.quiet_until, *self.season)

    @classmethod
    def from_state(cls, cfg: AnomalySettings, state: Sequence[float]) -> AnomalyDetector:
        if len(state) != STATE_SIZE:
            raise ValueError(f"anomaly state holds {STATE_SIZE} floats, got {len(state)}")
        d = cls(cfg)
        (d.t_last, d.t_first, d.n, d.level, d.mad, d.tail, d.log_interval, d.extra_var,
         d.open, d.quiet_until) = (float(v) for v in state[:len(_SCALARS)])
        d.season = [float(v) for v in state[len(_SCALARS):]]
        flags = int(d.open)
        d.open = 1.0 if flags & _OPEN_BIT else 0.0
        d.in_tail = bool(flags & _IN_TAIL_BIT)
        return d

    def to_dict(self) -> dict[str, float | list[float]]:
        out: dict[str, float | list[float]] = dict(zip(_SCALARS, self.to_state(), strict=False))
        out["season"] = list(self.season)
        return out

    @classmethod
    def from_dict(cls, cfg: AnomalySettings, d: Mapping[str, object]) -> AnomalyDetector:
        season = d["season"]
        assert isinstance(season, Sequence)
        return cls.from_state(cfg, [float(d[k]) for k in _SCALARS]  # type: ignore[arg-type]
                              + [float(v) for v in season])
