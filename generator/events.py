"""Injected events: shapes that really meet the conditions of the alert rules (DESIGN.md).

Each event takes over one sensor's readings for a while. ``start``/``end`` in the truth file are
the event times of the first and last reading the event changed; for ``silence`` they are the
last reading before the gap and the first reading after it (SENSOR_OFFLINE falls at
start + 10 min, SENSOR_RECOVERED at end). Events only change temperature, except
``humidity_surge`` which only changes humidity, so one event is one kind of anomaly.

What each shape guarantees (given interval <= 60 s, which GeneratorSpec enforces when needed):

- heat_spike: every reading of the event is above 31 °C (plateau 32–37 °C plus clean noise).
- cold_drop: every reading is below 9 °C (plateau 3–8 °C plus noise).
- humidity_surge: every reading's humidity is above 83 % and at most 96 %.
- rapid_jump: the first reading differs by 6.2–7.5 °C from the sensor's previous reading (one
  interval, so <= 60 s, earlier); it holds, then ramps back slowly enough (< 5 °C per minute)
  to make exactly one RAPID_CHANGE episode; it stays inside 10..30 °C.
- rising_trend: 20 minutes of a steady rise (3.5–4.5 °C in all, nearly noise-free), so the
  clock-aligned 1-minute means rise strictly for at least 18 consecutive minutes, then a slow
  ramp back; it stays inside 10..30 °C.
- outlier: one reading 3.5 °C off the clean signal; clean noise is uniform and bounded, so its
  z-score against the trailing 30 minutes is far above 3, while its jump stays below 5 °C and
  the value inside 10..30 °C.
- silence: no reading for 11–20 minutes, then the sensor reports again.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

EVENT_KINDS: tuple[str, ...] = (
    "heat_spike", "cold_drop", "humidity_surge", "rapid_jump", "rising_trend", "outlier",
    "silence",
)
MINUTE_MS = 60_000
# The longest an event can last (rising_trend: 20 min + an 8 min ramp; silence: up to 20 min
# plus one interval). Events start only if they can finish before the stream ends.
MAX_EVENT_MS = 30 * MINUTE_MS
# Free of events before one starts: the trailing statistics window (30 min) plus a margin.
EVENT_QUIET_MS = 31 * MINUTE_MS
MID_TEMPERATURE = 21.0
SAFE_HIGH = 29.0  # highest temperature a non-threshold event may reach (threshold 30)

# A reading step returns (temperature, humidity) or None (no reading: silence).
Step = tuple[float, float] | None


@dataclass
class EventRun:
    kind: str
    sensor_id: str
    start_ms: int
    end_ms: int = -1
    done: bool = False
    # shape parameters (meaning depends on kind)
    readings: int = 0
    hold: int = 0
    ramp: int = 0
    level: float = 0.0
    offset: float = 0.0
    slope_per_ms: float = 0.0
    k: int = 0
    extra: dict[str, float] = field(default_factory=dict)

    def step(self, t_ms: int, signal: float, t_noise: float, humidity: float) -> Step:
        """The event's reading at ``t_ms`` given the clean values; advances the event."""
        k = self.k
        self.k += 1
        kind = self.kind
        out: Step
        if kind in ("heat_spike", "cold_drop"):
            out = (self.level + t_noise, humidity)
            last = k == self.readings - 1
        elif kind == "humidity_surge":
            out = (signal + t_noise, self.level + t_noise)
            last = k == self.readings - 1
        elif kind == "outlier":
            out = (signal + self.offset, humidity)
            last = True
        elif kind == "rapid_jump":
            clean = signal + t_noise
            if k <= self.hold:
                # the jump, then hold near the new level (noise halved keeps it inside 10..30)
                out = (self.level + t_noise * 0.5, humidity)
            else:
                q = k - self.hold  # 1..ramp
                w = q / (self.ramp + 1)
                out = (self.level * (1.0 - w) + clean * w, humidity)
            last = k == self.hold + self.ramp
        elif kind == "rising_trend":
            clean = signal + t_noise
            if k < self.readings:
                out = (self.level + self.slope_per_ms * (t_ms - self.start_ms) + t_noise * 0.05,
                       humidity)
                self.offset = out[0]
            else:
                q = k - self.readings + 1  # 1..ramp
                w = q / (self.ramp + 1)
                out = (self.offset * (1.0 - w) + clean * w, humidity)
            last = k == self.readings + self.ramp - 1
        elif kind == "silence":
            # reading 0 is the last one heard; 1..readings are missing; then it is back
            if k == 0:
                out = (signal + t_noise, humidity)
            elif k <= self.readings:
                return None
            else:
                out = (signal + t_noise, humidity)
                self.end_ms = t_ms
                self.done = True
                return out
            last = False
        else:  # pragma: no cover - kinds are validated by GeneratorSpec
            raise ValueError(kind)
        if kind != "silence":
            self.end_ms = t_ms
        if last:
            self.done = True
        return out


def plan_event(
    kind: str,
    sensor_id: str,
    t_ms: int,
    interval_ms: int,
    rng: random.Random,
    *,
    signal: float,
    last_temperature: float,
) -> EventRun:
    """A new event of ``kind`` whose first reading is at ``t_ms``."""

    def readings_for(ms: float) -> int:
        return max(1, math.ceil(ms / interval_ms))

    run = EventRun(kind, sensor_id, t_ms)
    if kind == "heat_spike":
        run.level = rng.uniform(32.0, 37.0)
        run.readings = readings_for(rng.uniform(3, 10) * MINUTE_MS)
    elif kind == "cold_drop":
        run.level = rng.uniform(3.0, 8.0)
        run.readings = readings_for(rng.uniform(3, 10) * MINUTE_MS)
    elif kind == "humidity_surge":
        run.level = rng.uniform(84.0, 95.0)
        run.readings = readings_for(rng.uniform(3, 10) * MINUTE_MS)
    elif kind == "outlier":
        sign = rng.choice((-1.0, 1.0))
        if signal + 3.5 > SAFE_HIGH:
            sign = -1.0
        run.offset = 3.5 * sign
        run.readings = 1
    elif kind == "rapid_jump":
        jump = rng.uniform(6.2, 7.5)
        run.level = last_temperature + (jump if last_temperature < MID_TEMPERATURE else -jump)
        run.hold = readings_for(rng.uniform(1, 3) * MINUTE_MS) - 1
        run.ramp = readings_for(4 * MINUTE_MS)
    elif kind == "rising_trend":
        rise = rng.uniform(3.5, 4.5)
        run.level = min(signal, SAFE_HIGH - 0.5 - rise)
        run.readings = readings_for(20 * MINUTE_MS)
        run.slope_per_ms = rise / (20 * MINUTE_MS)
        run.ramp = readings_for(8 * MINUTE_MS)
    elif kind == "silence":
        run.readings = readings_for(rng.uniform(11, 20) * MINUTE_MS)
    else:
        raise ValueError(f"unknown event kind {kind!r}; known: {', '.join(EVENT_KINDS)}")
    return run
