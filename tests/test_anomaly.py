"""gold.anomaly: the adaptive per-sensor detector (alert type ANOMALY), pure Python, no Spark.

Every series is built here with seeded noise and explicit UTC event times: fires on clear
steps and spikes at 1 s and 1 h cadence, stays quiet on near misses, flat quantised noise and
the clean generator fleet, is not thrown off by an outlier burst or a long gap, opens one
episode per anomaly, and its bounded state round-trips with identical decisions."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

import pytest

from gold.alert_rules import to_ms
from gold.anomaly import (
    STATE_SIZE,
    AnomalyDetector,
    AnomalySettings,
    Decision,
)
from jobs.alert_evaluate import Detectors, LabelledSeries, Window, evaluate, run_anomaly
from jobs.config import load_config

T0 = to_ms(datetime(2024, 3, 1, tzinfo=UTC))
HOUR_MS = 3_600_000
TEMP = AnomalySettings.for_metric("temperature")


def series(n: int, step_ms: int, value: Callable[[int, int], float], *, start: int = T0
           ) -> list[tuple[int, float]]:
    """``n`` readings ``step_ms`` apart; ``value(i, t_ms)``."""
    return [(start + i * step_ms, value(i, start + i * step_ms)) for i in range(n)]


def noisy(seed: int, *, level: float = 21.0, noise: float = 0.3, amplitude: float = 0.0,
          quantum: float = 0.0) -> Callable[[int, int], float]:
    """Uniform noise around a level with an optional daily cycle and quantisation."""
    rng = random.Random(seed)

    def f(_: int, t_ms: int) -> float:
        v = level + amplitude * math.cos(2 * math.pi * (t_ms % 86_400_000) / 86_400_000)
        v += rng.uniform(-noise, noise)
        return round(v / quantum) * quantum if quantum else v

    return f


def feed(det: AnomalyDetector, rows: Iterable[tuple[int, float]]) -> list[Decision]:
    return [det.update(t, v) for t, v in rows]


def opened(decisions: Iterable[Decision]) -> list[int]:
    return [d.t_ms for d in decisions if d.opened]


def test_fast_cadence_step_fires_at_once() -> None:
    det = AnomalyDetector(TEMP)
    warm = series(3 * 3600, 1000, noisy(1))
    assert opened(feed(det, warm)) == [], "clean noise at 1 s must not open an episode"
    t = warm[-1][0]
    step = feed(det, [(t + (i + 1) * 1000, 26.0) for i in range(60)])
    assert opened(step) == [step[0].t_ms], "a 5 °C step opens one episode at its first reading"


def test_slow_cadence_spike_fires_on_a_daily_cycle() -> None:
    det = AnomalyDetector(TEMP)
    warm = series(10 * 24, HOUR_MS, noisy(2, noise=0.2, amplitude=3.0))
    assert opened(feed(det, warm)) == [], "an hourly daily cycle is learnt, not alerted"
    t = warm[-1][0] + HOUR_MS
    expected = 21.0 + 3.0 * math.cos(2 * math.pi * (t % 86_400_000) / 86_400_000)
    d = det.update(t, expected + 5.0)
    assert d.opened, f"a 5 °C spike on an hourly sensor must open (score {d.score:.1f})"


@pytest.mark.parametrize("step_ms", [1000, 5000, 300_000, HOUR_MS])
def test_flat_quantised_noise_stays_quiet(step_ms: int) -> None:
    det = AnomalyDetector(TEMP)
    n = int(30 * 86_400_000 // step_ms) if step_ms >= 300_000 else 6 * 3600_000 // step_ms
    rows = series(n, step_ms, noisy(3, noise=0.15, quantum=0.1))
    assert opened(feed(det, rows)) == []


def test_near_miss_below_the_floor_stays_quiet_and_above_fires() -> None:
    quiet = AnomalyDetector(TEMP)
    rows = series(3 * 3600, 1000, noisy(4, noise=0.05))
    feed(quiet, rows)
    loud = AnomalyDetector.from_state(TEMP, quiet.to_state())
    t = rows[-1][0]
    near = feed(quiet, [(t + (i + 1) * 1000, 21.8) for i in range(120)])
    assert opened(near) == [], "0.8 °C is below the 1 °C floor however steady the sensor"
    clear = feed(loud, [(t + (i + 1) * 1000, 22.5) for i in range(120)])
    assert len(opened(clear)) == 1, "1.5 °C on a steady sensor is above the floor"


def test_outlier_burst_does_not_inflate_the_baseline() -> None:
    det = AnomalyDetector(TEMP)
    f = noisy(5)
    rows = series(3 * 3600, 1000, f)
    feed(det, rows)
    level, sd = det.level, det.sd
    t = rows[-1][0]
    burst = feed(det, [(t + (i + 1) * 1000, 35.0) for i in range(30)])
    assert len(opened(burst)) == 1
    assert abs(det.level - level) < 0.3, "30 s of +14 °C must barely move the level"
    assert det.sd < 1.2 * sd, "nor the spread"
    t += 31_000
    after = feed(det, series(4 * 3600, 1000, f, start=t))
    assert opened(after) == [], "the normal readings after the burst are not alerted"
    assert after[1].closed or any(d.closed for d in after[:5]), "the episode closes at once"
    t = after[-1].t_ms + 1000
    second = feed(det, [(t + i * 1000, 14.0) for i in range(10)])
    assert len(opened(second)) == 1, "a second anomaly after the cool-down is still caught"


def test_hysteresis_one_alert_per_episode_and_close_after_return() -> None:
    cfg = AnomalySettings.for_metric("temperature", cooldown_s=600)
    det = AnomalyDetector(cfg)
    f = noisy(6)
    rows = series(3 * 3600, 1000, f)
    feed(det, rows)
    t = rows[-1][0]
    # hovering around the enter score: above enter, then between exit and enter, above again
    sd_scale = max(det.sd, cfg.floor / cfg.enter)
    hover = [21 + sd_scale * z for z in (8, 4.5, 8, 4.5, 9, 4.0)] * 20
    ep = feed(det, [(t + (i + 1) * 1000, v) for i, v in enumerate(hover)])
    assert len(opened(ep)) == 1, "crossing enter again before falling below exit is one episode"
    assert ep[-1].is_open
    t = ep[-1].t_ms
    back = feed(det, series(60, 1000, f, start=t + 1000))
    assert back[0].closed and not back[-1].is_open, "it closes below exit"
    t = back[-1].t_ms
    again = feed(det, [(t + (i + 1) * 1000, 27.0) for i in range(5)])
    assert opened(again) == [], "within the cool-down nothing opens"
    later = feed(det, [(t + 601_000 + i * 1000, 27.0) for i in range(5)])
    assert len(opened(later)) == 1, "after the cool-down a new episode opens"


@pytest.mark.parametrize("step_ms", [1000, 300_000])
def test_first_reading_after_a_long_gap_does_not_alert(step_ms: int) -> None:
    det = AnomalyDetector(TEMP)
    n = 3 * 3600_000 // step_ms if step_ms == 1000 else 3 * 288
    rows = series(n, step_ms, noisy(7, noise=0.1))
    feed(det, rows)
    t = rows[-1][0] + 3 * 86_400_000  # three days unheard
    d = det.update(t, 24.0)
    assert not d.opened, "a reading after a gap widens the uncertainty, it does not page"
    d2 = det.update(t + step_ms, 24.05)
    assert not d2.opened, "the level re-anchored on the reading after the gap"


def test_warm_up_and_before_it_nothing_opens() -> None:
    det = AnomalyDetector(TEMP)
    rows = series(600, 1000, noisy(8)) + [(T0 + 600_000, 40.0)]
    assert opened(feed(det, rows)) == [], "10 minutes of history is still the warm-up"


def test_state_round_trip_gives_identical_future_decisions() -> None:
    cfg = AnomalySettings.for_metric("humidity")
    rows = series(3 * 86_400 // 60, 60_000, noisy(9, level=45.0, noise=1.0, amplitude=5.0))
    rows += [(rows[-1][0] + (i + 1) * 60_000, 70.0) for i in range(10)]
    rows += series(600, 60_000, noisy(10, level=45.0, noise=1.0), start=rows[-1][0] + 60_000)
    det = AnomalyDetector(cfg)
    feed(det, rows[:2000])
    state = det.to_state()
    assert len(state) == STATE_SIZE and all(isinstance(v, float) for v in state)
    copy = AnomalyDetector.from_state(cfg, state)
    via_dict = AnomalyDetector.from_dict(cfg, json.loads(json.dumps(det.to_dict())))
    rest = rows[2000:]
    a, b, c = feed(det, rest), feed(copy, rest), feed(via_dict, rest)
    assert a == b == c
    assert opened(a), "the humidity surge in the rest was caught (the test checks something)"


def test_state_is_bounded() -> None:
    det = AnomalyDetector(TEMP)
    feed(det, series(200, 1000, noisy(11)))
    small = len(det.to_state())
    feed(det, series(100_000, 1000, noisy(12), start=T0 + 200_000))
    assert len(det.to_state()) == small == STATE_SIZE == 34


def test_bad_settings_and_state_are_refused() -> None:
    with pytest.raises(ValueError, match="method"):
        AnomalySettings(method="magic")
    with pytest.raises(ValueError, match="exit"):
        AnomalySettings(enter=3.0, exit=4.0)
    with pytest.raises(ValueError, match="34 floats"):
        AnomalyDetector.from_state(TEMP, (0.0,) * 5)


def test_clean_generator_fleet_is_quiet_and_a_heat_spike_is_caught() -> None:
    from generator.fleet import make_fleet
    from generator.stream import GeneratorSpec, generate_messages
    from jobs.alert_evaluate import Reading

    spec = GeneratorSpec(sensors=tuple(make_fleet(5, seed=3)), seed=3, interval_s=1.0,
                         duration_s=4 * 3600)  # 2 h of warm-up, 2 h that may alert
    by_sensor: dict[str, list[Reading]] = {}
    for m in generate_messages(spec):
        d = json.loads(m.value)
        assert m.event_time is not None
        by_sensor.setdefault(d["sensor_id"], []).append(
            Reading(to_ms(m.event_time), d["temperature"], d["humidity"], d["pressure"]))
    alerts = [a for sid, rs in by_sensor.items() for a in run_anomaly(sid, rs)]
    assert alerts == [], f"clean fleet raised {len(alerts)} ANOMALY alerts"
    rs = by_sensor["SENSOR_001"]
    t = rs[-1].t_ms
    spike = [Reading(t + (i + 1) * 1000, 34.0, rs[-1].humidity, rs[-1].pressure)
             for i in range(60)]
    hits = run_anomaly("SENSOR_001", rs + spike)
    assert [(a.metric, to_ms(a.event_time)) for a in hits] == [("temperature", spike[0].t_ms)]


def test_evaluate_scores_anomaly_alerts_as_statistical() -> None:
    cfg = load_config(env={})
    times = [T0 + i * 300_000 for i in range(12 * 24 * 5)]
    rng = random.Random(13)
    vals = [20.0 + rng.uniform(-0.2, 0.2) for _ in times]
    vals[-100] = 26.0
    win = Window(times[-102], times[-98])
    s = LabelledSeries("s", tuple(times), {"temperature": tuple(vals)}, (win,))
    ev = evaluate([s], cfg, detectors=Detectors.parse("anomaly"))
    st = ev.groups["statistical"]
    assert (st.alerts, st.hit, st.false_alerts) == (1, 1, 0)
    assert set(ev.types) == {"ANOMALY"}
    assert Detectors.parse("rules,anomaly:ewma") == Detectors(True, "ewma")
    with pytest.raises(ValueError, match="anomaly method"):
        Detectors.parse("anomaly:nope")
    assert timedelta(seconds=TEMP.cooldown_s) >= timedelta(hours=1)


def _spikes_in_a_cool_down(step_ms: int) -> AnomalyDetector:
    """3 h of clean noise, then three 5-minute +10 °C spikes 30 minutes apart (the second
    and third inside the first one's cool-down), then the cool-down runs out."""
    det = AnomalyDetector(TEMP)
    rng = random.Random(22)
    t = T0

    def run(seconds: int, offset: float = 0.0) -> None:
        nonlocal t
        for _ in range(seconds * 1000 // step_ms):
            t += step_ms
            det.update(t, 21.0 + rng.uniform(-0.3, 0.3) + offset)

    run(3 * 3600)
    for _ in range(3):
        run(300, 10.0)
        run(1800)
    run(3 * 3600)
    return det


@pytest.mark.parametrize("step_ms", [1000, 5000, 60_000])
def test_spikes_in_a_cool_down_teach_the_tail_their_duration_not_their_reading_count(
        step_ms: int) -> None:
    det = _spikes_in_a_cool_down(step_ms)
    reference = _spikes_in_a_cool_down(60_000).tail
    assert det.tail == pytest.approx(reference, rel=0.2), \
        "the same 5-minute spikes move the tail alike at any cadence"
    assert det.tail < 8.0, f"tail {det.tail:.1f}: the spikes' size was learnt as routine"
    t = int(det.t_last) + step_ms
    near = AnomalyDetector.from_state(TEMP, det.to_state())
    assert det.update(t, 29.0).opened, "an 8 °C outlier after the cool-down still pages"
    d = near.update(t, 25.5)
    assert not d.opened, f"4.5 °C is inside what the spikes taught (score {d.score:.1f})"


def test_routine_spikes_on_an_hourly_sensor_stop_paging_and_a_larger_one_pages() -> None:
    """A spike of +6 °C every 7 hours (not tied to an hour of day, so the daily offsets do
    not learn it) is routine for this sensor: the tail learns it from the episodes it opens,
    and paging falls to about once a day, where it paged every spike when the tail learnt only
    outside episodes; a spike twice that size still pages."""
    det = AnomalyDetector(TEMP)
    rng = random.Random(21)
    late: list[int] = []
    i = 0
    for i in range(40 * 24):
        t = T0 + i * HOUR_MS
        v = 21.0 + 3.0 * math.cos(2 * math.pi * (t % 86_400_000) / 86_400_000)
        v += rng.uniform(-0.2, 0.2) + (6.0 if i % 7 == 3 and i > 48 else 0.0)
        if det.update(t, v).opened and i >= 30 * 24:
            late.append(i)
    spikes = sum(1 for k in range(30 * 24, 40 * 24) if k % 7 == 3)
    assert spikes >= 34 and len(late) <= 12, f"{len(late)} of {spikes} routine spikes paged"
    t = T0 + (i + 1) * HOUR_MS
    base = 21.0 + 3.0 * math.cos(2 * math.pi * (t % 86_400_000) / 86_400_000)
    near = AnomalyDetector.from_state(TEMP, det.to_state())
    assert det.update(t, base + 12.0).opened, "a spike twice the routine size pages"
    assert not near.update(t, base + 3.0).opened, "half the routine size does not"


def test_excursion_flag_round_trips_and_older_states_read_as_outside() -> None:
    det = AnomalyDetector(TEMP)
    feed(det, series(3 * 3600, 1000, noisy(23)))
    t = int(det.t_last)
    feed(det, [(t + (i + 1) * 1000, 30.0) for i in range(5)])
    assert det.open and det.in_tail
    state = det.to_state()
    assert len(state) == STATE_SIZE and state[8] == 3.0, "open and in_tail in the flags float"
    copy = AnomalyDetector.from_state(TEMP, state)
    assert copy.open == 1.0 and copy.in_tail and copy.to_state() == state
    older = list(state)
    older[8] = 1.0  # a state from before the flag: only "open"
    old = AnomalyDetector.from_state(TEMP, older)
    assert old.open == 1.0 and not old.in_tail
