"""The pure, deterministic message source of the simulated fleet.

``generate_messages(spec)`` yields the Kafka messages a fleet would send, in sending order: one
reading per sensor every ``interval_s`` of event time (each sensor at its own phase within the
interval), with injected events and faults at the spec's rates. Same spec, same bytes: every
random draw comes from generators seeded by ``spec.seed`` and the wall clock is never read —
pacing (rate, speed-up) is the driver's job (generator/driver.py).

Rates are per reading: an event kind's rate is the chance that an eligible reading (a sensor in
normal state: no event running, at least 31 minutes since its last event and since the stream
started, previous reading delivered intact, and time left for the event to finish) starts an
event of that kind; a fault kind's rate is the chance that a reading outside any event becomes
that fault. ``SourceStats`` counts the opportunities so tests can check the rates.

Ground truth goes to the optional ``truth`` callback as dicts (the truth file's lines):
``{"type": "fault", "fault", "sensor_id", "event_time", "expected_reasons"}`` when a faulty
message is sent, ``{"type": "event", "kind", "sensor_id", "start", "end"}`` when an event ends.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import MappingProxyType

import numpy as np

from generator.events import EVENT_KINDS, EVENT_QUIET_MS, MAX_EVENT_MS, EventRun, plan_event
from generator.faults import CONTENT_FAULTS, FAULT_KINDS, apply_fault
from generator.fleet import Sensor, by_phase, json_string
from generator.signals import FleetSignals, PressureWalk

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
DEFAULT_START = datetime(2024, 1, 10, tzinfo=UTC)
DEFAULT_RANGES: Mapping[str, tuple[float, float]] = MappingProxyType(
    {"temperature": (-50.0, 50.0), "humidity": (0.0, 100.0), "pressure": (870.0, 1085.0)}
)
# How far behind the stream's current event time the "late" kinds arrive (contract of issue 3).
OUT_OF_ORDER_MS = (1_000, 50_000)
LATE_WITHIN_MS = (60_000, 480_000)  # 1..8 min (+ < 1 interval) -> 1..9 min behind
LATE_BEYOND_MS = (15 * 60_000, 55 * 60_000)  # 15..55 min (+ < 1 interval) -> 15..60 min
DUPLICATE_DELAY_MS = (0, 30_000)
WATERMARK_MS = 10 * 60_000

Truth = Callable[[dict[str, object]], None]


@dataclass(frozen=True, slots=True)
class Message:
    """One Kafka message. ``sensor_id``/``event_time`` name the reading it comes from (also
    when its body is faulty); ``fault`` is None for a clean reading."""

    key: bytes | None
    value: bytes
    sensor_id: str | None
    event_time: datetime | None
    fault: str | None = None


@dataclass(frozen=True)
class GeneratorSpec:
    """Everything that decides the stream. ``count`` (messages) or ``duration_s`` (event time)
    bounds it; with neither it is endless."""

    sensors: tuple[Sensor, ...]
    seed: int = 42
    interval_s: float = 5.0
    start: datetime = DEFAULT_START
    count: int | None = None
    duration_s: float | None = None
    faults: Mapping[str, float] = field(default_factory=dict)
    events: Mapping[str, float] = field(default_factory=dict)
    ranges: Mapping[str, tuple[float, float]] = field(default_factory=lambda: DEFAULT_RANGES)
    # Event-free time at the stream's start (default: the trailing-statistics window and a
    # margin, EVENT_QUIET_MS), so that a live demo can show events within its first minute.
    first_event_after_s: float | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "sensors", tuple(self.sensors))
        # plain dict copies: the caller's mappings cannot change the spec, and it pickles
        object.__setattr__(self, "faults", dict(self.faults))
        object.__setattr__(self, "events", dict(self.events))
        object.__setattr__(self, "ranges", {k: tuple(v) for k, v in self.ranges.items()})
        if not self.sensors:
            raise ValueError("the spec needs at least one sensor")
        if self.start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC)")
        if self.interval_s < 0.001:
            raise ValueError("interval_s must be at least 1 ms")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")
        if self.duration_s is not None and self.duration_s < 0:
            raise ValueError("duration_s must be >= 0")
        if self.first_event_after_s is not None and self.first_event_after_s < 0:
            raise ValueError("first_event_after_s must be >= 0")
        _check_rates("fault", self.faults, FAULT_KINDS)
        _check_rates("event", self.events, EVENT_KINDS)
        needs_minute = [k for k in ("rapid_jump", "rising_trend", "outlier")
                        if self.events.get(k, 0) > 0]
        if needs_minute and self.interval_s > 60:
            raise ValueError(
                f"events {needs_minute} need a reading at least every 60 s (interval_s <= 60)"
            )
        if self.events.get("silence", 0) > 0 and self.interval_s >= 600:
            raise ValueError("silence needs interval_s < 600 (a silence lasts 11-20 minutes)")

    @property
    def interval_ms(self) -> int:
        return max(1, round(self.interval_s * 1000))

    @property
    def start_ms(self) -> int:
        return _to_ms(self.start)

    @property
    def first_event_ms(self) -> int:
        """Event time from which events may start."""
        quiet = (EVENT_QUIET_MS if self.first_event_after_s is None
                 else round(self.first_event_after_s * 1000))
        return self.start_ms + quiet


def _check_rates(what: str, rates: Mapping[str, float], known: tuple[str, ...]) -> None:
    unknown = sorted(set(rates) - set(known))
    if unknown:
        raise ValueError(f"unknown {what} kind(s) {unknown}; known: {', '.join(known)}")
    for kind, rate in rates.items():
        if not 0.0 <= rate <= 1.0:
            raise ValueError(f"{what} rate {kind}={rate} must be within [0, 1]")
    if sum(rates.values()) > 1.0 + 1e-9:
        raise ValueError(f"{what} rates add up to more than 1")


@dataclass
class SourceStats:
    """What the source did: readings, messages, and the chances events and faults had."""

    readings: int = 0  # reading slots of the fleet (including silenced ones)
    messages: int = 0
    event_opportunities: int = 0
    fault_opportunities: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)
    truncated_events: int = 0


def _to_ms(t: datetime) -> int:
    delta = t - EPOCH
    return delta.days * 86_400_000 + delta.seconds * 1000 + delta.microseconds // 1000


def ms_to_datetime(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


class _Timestamps:
    """ISO-8601 UTC text of epoch milliseconds, caching the per-second part."""

    def __init__(self) -> None:
        self._cache: dict[int, str] = {}

    def __call__(self, ms: int) -> str:
        sec, frac = divmod(ms, 1000)
        head = self._cache.get(sec)
        if head is None:
            if len(self._cache) > 200_000:
                self._cache.clear()
            head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
            self._cache[sec] = head
        return f"{head}.{frac:03d}Z"


def iso(ms: int) -> str:
    return _Timestamps()(ms)


def _cumulative(rates: Mapping[str, float], kinds: tuple[str, ...]) -> list[tuple[float, str]]:
    out, acc = [], 0.0
    for kind in kinds:
        rate = rates.get(kind, 0.0)
        if rate > 0:
            acc += rate
            out.append((acc, kind))
    return out


def _pick(u: float, table: list[tuple[float, str]]) -> str:
    for bound, kind in table:
        if u < bound:
            return kind
    return table[-1][1]


def generate_messages(
    spec: GeneratorSpec, truth: Truth | None = None, stats: SourceStats | None = None
) -> Iterator[Message]:
    """The fleet's messages in sending order (see the module docstring)."""
    return _Source(spec, truth, stats).run()


def truth_records(spec: GeneratorSpec) -> list[dict[str, object]]:
    """Run the source to its end and return only its ground truth."""
    out: list[dict[str, object]] = []
    for _ in generate_messages(spec, truth=out.append):
        pass
    return out


class _Source:
    def __init__(self, spec: GeneratorSpec, truth: Truth | None, stats: SourceStats | None):
        self.spec = spec
        self.truth = truth
        self.stats = stats if stats is not None else SourceStats()
        seeds = np.random.SeedSequence(spec.seed).spawn(3)
        self.np_rng = np.random.Generator(np.random.PCG64(seeds[0]))
        walk_rng = np.random.Generator(np.random.PCG64(seeds[1]))
        self.rng = random.Random(int(seeds[2].generate_state(1)[0]))
        self.order = by_phase(spec.sensors)
        self.sensors = [spec.sensors[i] for i in self.order]
        self.signals = FleetSignals(self.sensors)
        self.pressure = PressureWalk(walk_rng, spec.start_ms)
        self.iso = _Timestamps()
        n = len(self.sensors)
        interval = spec.interval_ms
        self.offsets = np.array([int(s.phase * interval) for s in self.sensors], dtype=np.int64)
        self.offsets_list = self.offsets.tolist()
        self.ids = [s.sensor_id for s in self.sensors]
        self.keys = [s.sensor_id.encode() for s in self.sensors]
        self.id_json = [json_string(s.sensor_id) for s in self.sensors]
        self.loc_json = [json_string(s.location) for s in self.sensors]
        self.fault_table = _cumulative(spec.faults, FAULT_KINDS)
        self.event_table = _cumulative(spec.events, EVENT_KINDS)
        self.fault_total = self.fault_table[-1][0] if self.fault_table else 0.0
        self.event_total = self.event_table[-1][0] if self.event_table else 0.0
        # per-sensor state
        self.active: dict[int, EventRun] = {}
        self.quiet_until = [spec.first_event_ms] * n
        self.intact = [False] * n  # previous reading delivered intact and in order
        self.last_temp = [0.0] * n
        # sending state
        self.held: list[tuple[int, int, str, Message]] = []  # (release_ms, seq, kind, msg)
        self.seq = 0
        self.max_event_ms = -1  # the stream's current event time (valid readings sent)
        self.end_ms = self._end_estimate()

    def _end_estimate(self) -> int | None:
        """Event time the stream ends at (estimated in count mode), for planning events."""
        spec = self.spec
        ends = []
        if spec.duration_s is not None:
            ends.append(spec.start_ms + round(spec.duration_s * 1000))
        if spec.count is not None:
            per_tick = len(self.sensors) * (1.0 + spec.faults.get("duplicate", 0.0))
            ends.append(spec.start_ms + math.floor(spec.count / per_tick) * spec.interval_ms)
        return min(ends) if ends else None

    # -- emission helpers -------------------------------------------------------------------

    def _fault_truth(self, kind: str, sid: str, t_ms: int, reasons: list[str]) -> None:
        self.stats.faults[kind] = self.stats.faults.get(kind, 0) + 1
        if self.truth is not None:
            self.truth({"type": "fault", "fault": kind, "sensor_id": sid,
                        "event_time": self.iso(t_ms), "expected_reasons": reasons})

    def _event_truth(self, run: EventRun, truncated: bool = False) -> None:
        self.stats.events[run.kind] = self.stats.events.get(run.kind, 0) + 1
        if truncated:
            self.stats.truncated_events += 1
        if self.truth is not None:
            line: dict[str, object] = {"type": "event", "kind": run.kind,
                                       "sensor_id": run.sensor_id,
                                       "start": self.iso(run.start_ms),
                                       "end": self.iso(max(run.end_ms, run.start_ms))}
            if truncated:
                line["truncated"] = True
            self.truth(line)

    def _release(self, msg_kind: str, msg: Message) -> Message:
        """A held message goes out now; its label follows how late it really is."""
        assert msg.event_time is not None
        behind = self.max_event_ms - _to_ms(msg.event_time)
        kind = msg_kind
        if msg_kind != "duplicate":
            if behind <= 0:
                kind = ""  # nothing newer was sent meanwhile: it is simply in order
            elif behind < 60_000:
                kind = "out_of_order"
            elif behind <= WATERMARK_MS:
                kind = "late_within_watermark"
            else:
                kind = "late_beyond_watermark"
        if kind:
            self._fault_truth(kind, msg.sensor_id or "", _to_ms(msg.event_time), [])
            return Message(msg.key, msg.value, msg.sensor_id, msg.event_time, kind)
        return Message(msg.key, msg.value, msg.sensor_id, msg.event_time, None)

    def _hold(self, release_ms: int, kind: str, msg: Message) -> None:
        self.seq += 1
        heapq.heappush(self.held, (release_ms, self.seq, kind, msg))

    def _room(self) -> int:
        """Messages still allowed (count mode), counting those held for later."""
        if self.spec.count is None:
            return 1 << 62
        return self.spec.count - self.stats.messages - len(self.held)

    # -- the loop ----------------------------------------------------------------------------

    def run(self) -> Iterator[Message]:
        spec = self.spec
        n = len(self.sensors)
        interval = spec.interval_ms
        start = spec.start_ms
        stop_ms = start + round(spec.duration_s * 1000) if spec.duration_s is not None else None
        rng = self.rng
        fmt = self.iso
        ids, keys, id_json, loc_json = self.ids, self.keys, self.id_json, self.loc_json
        offsets = self.offsets_list
        active, quiet_until, intact, last_temp = (
            self.active, self.quiet_until, self.intact, self.last_temp)
        fault_total, event_total = self.fault_total, self.event_total
        stats = self.stats
        held = self.held
        max_event_span = MAX_EVENT_MS + interval
        tick = 0
        done = False
        while not done:
            tick_ms = start + tick * interval
            if stop_ms is not None and tick_ms >= stop_ms:
                break
            t_vec = self.offsets + tick_ms
            u = self.np_rng.random((5, n))
            signal, t_noise, temp, hum, pres = self.signals.tick(
                t_vec, self.pressure.at(tick_ms), u)
            signal_l, t_noise_l = signal.tolist(), t_noise.tolist()
            temp_l, hum_l, pres_l = temp.tolist(), hum.tolist(), pres.tolist()
            u_event, u_fault = u[3].tolist(), u[4].tolist()
            for i in range(n):
                t_ms = tick_ms + offsets[i]
                if stop_ms is not None and t_ms >= stop_ms:
                    done = True
                    break
                # a held message goes once something newer than its release time was sent
                while held and held[0][0] <= self.max_event_ms:
                    _, _, kind, msg = heapq.heappop(held)
                    self.stats.messages += 1
                    yield self._release(kind, msg)
                if self._room() <= 0:
                    done = True
                    break
                stats.readings += 1
                t_val, h_val = temp_l[i], hum_l[i]
                run = active.get(i)
                if run is None and intact[i] and t_ms >= quiet_until[i] and (
                    self.end_ms is None or t_ms + max_event_span <= self.end_ms
                ):
                    stats.event_opportunities += 1
                    if u_event[i] < event_total:
                        kind = _pick(u_event[i], self.event_table)
                        run = plan_event(kind, ids[i], t_ms, interval, rng,
                                         signal=signal_l[i], last_temperature=last_temp[i])
                        active[i] = run
                if run is not None:
                    step = run.step(t_ms, signal_l[i], t_noise_l[i], h_val)
                    if run.done:
                        del active[i]
                        quiet_until[i] = t_ms + EVENT_QUIET_MS
                        self._event_truth(run)
                    if step is None:
                        continue
                    t_val, h_val = step
                    fault = None
                else:
                    stats.fault_opportunities += 1
                    uf = u_fault[i]
                    fault = _pick(uf, self.fault_table) if uf < fault_total else None
                value = (
                    f'{{"sensor_id": {id_json[i]}, "timestamp": "{fmt(t_ms)}", '
                    f'"temperature": {t_val:.2f}, "humidity": {h_val:.2f}, '
                    f'"pressure": {pres_l[i]:.2f}, "location": {loc_json[i]}}}'
                )
                if fault is None:
                    self.stats.messages += 1
                    intact[i] = True
                    last_temp[i] = t_val
                    if t_ms > self.max_event_ms:
                        self.max_event_ms = t_ms
                    yield Message(keys[i], value.encode(), ids[i], ms_to_datetime(t_ms), None)
                    continue
                msg = self._fault_message(fault, i, t_ms, value, t_val, h_val, pres_l[i])
                if msg is not None:
                    self.stats.messages += 1
                    yield msg
            tick += 1
        yield from self._flush()

    def _fault_message(
        self, fault: str, i: int, t_ms: int, value: str, t_val: float, h_val: float, p_val: float
    ) -> Message | None:
        """Send (return) or hold the faulty form of reading i; None when it is held."""
        rng = self.rng
        sid = self.ids[i]
        event_time = ms_to_datetime(t_ms)
        clean = Message(self.keys[i], value.encode(), sid, event_time, None)
        if fault in CONTENT_FAULTS:
            fields = {"sensor_id": sid, "timestamp": self.iso(t_ms),
                      "temperature": round(t_val, 2), "humidity": round(h_val, 2),
                      "pressure": round(p_val, 2), "location": self.sensors[i].location}
            text, reasons = apply_fault(fault, fields, event_time, rng, self.spec.ranges)
            valid = not reasons
            self.intact[i] = valid
            if valid:
                self.last_temp[i] = t_val
                if t_ms > self.max_event_ms:
                    self.max_event_ms = t_ms
            self._fault_truth(fault, sid, t_ms, reasons)
            return Message(self.keys[i], text.encode(), sid, event_time, fault)
        if fault == "duplicate":
            # the reading goes out intact now; its exact copy follows a little later
            self.intact[i] = True
            self.last_temp[i] = t_val
            if t_ms > self.max_event_ms:
                self.max_event_ms = t_ms
            if self._room() >= 2:
                self._hold(t_ms + rng.randint(*DUPLICATE_DELAY_MS), "duplicate", clean)
            return clean
        delay = {"out_of_order": OUT_OF_ORDER_MS, "late_within_watermark": LATE_WITHIN_MS,
                 "late_beyond_watermark": LATE_BEYOND_MS}[fault]
        self.intact[i] = False
        self._hold(t_ms + rng.randint(*delay), fault, clean)
        return None

    def _flush(self) -> Iterator[Message]:
        """At the end: unfinished events are reported as truncated, held messages are sent."""
        for i in sorted(self.active):
            self._event_truth(self.active[i], truncated=True)
        self.active.clear()
        while self.held:
            _, _, kind, msg = heapq.heappop(self.held)
            if self.spec.count is not None and self.stats.messages >= self.spec.count:
                break
            self.stats.messages += 1
            yield self._release(kind, msg)
