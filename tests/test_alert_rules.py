"""The alert rules of one sensor (gold/alert_rules.py), without Spark: every type fires exactly
where DESIGN.md says and not on a near miss."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gold.alert_rules import Alert, Reading, SensorAlertState, alert_id, from_ms, to_ms
from gold.schema import ALERT_SCHEMA, ALERT_TYPES
from jobs.config import load_config

CFG = load_config(env={}, overrides={"alerts.profile": "seed"}).alerts
T0 = datetime(2024, 1, 10, 14, 0, tzinfo=UTC)
NOW = datetime(2024, 1, 10, 18, 0, tzinfo=UTC)
BASE = {"temperature": 20.0, "humidity": 50.0, "pressure": 1013.0}


def r(seconds: float, **values: float) -> Reading:
    v = {**BASE, **values}
    return Reading.at(T0 + timedelta(seconds=seconds), v["temperature"], v["humidity"],
                      v["pressure"], "Building A")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(*batches: list[Reading], watermark_s: float | None = None) -> list[Alert]:
    """Feed batches like the streaming job does: state stored and restored between batches."""
    scalars, history = None, None
    out: list[Alert] = []
    for batch in batches:
        st = SensorAlertState.from_state("S1", CFG, scalars, history)
        out.extend(st.process(batch, now=NOW))
        scalars, history = st.to_state()
    if watermark_s is not None:
        st = SensorAlertState.from_state("S1", CFG, scalars, history)
        out.extend(st.on_watermark(to_ms(at(watermark_s)), now=NOW))
    return out


def fired(alerts: list[Alert], kind: str) -> list[tuple]:
    return [(a.event_time, a.metric, a.severity) for a in alerts if a.alert_type == kind]


def trailing(n: int = 10, *, step_s: float = 60, metric: str = "temperature",
             lo: float = 20.0, hi: float = 21.0) -> list[Reading]:
    """n readings alternating lo/hi (mean (lo+hi)/2, non-zero sample std) ending before n*step."""
    return [r(i * step_s, **{metric: lo if i % 2 == 0 else hi}) for i in range(n)]


# --- static thresholds ----------------------------------------------------------------------

@pytest.mark.parametrize(
    ("values", "kind", "expected"),
    [
        ({"temperature": 30.01}, "HIGH_TEMP", "WARNING"),
        ({"temperature": 40.0}, "HIGH_TEMP", "WARNING"),
        ({"temperature": 40.01}, "HIGH_TEMP", "CRITICAL"),
        ({"temperature": 30.0}, "HIGH_TEMP", None),
        ({"temperature": 9.99}, "LOW_TEMP", "WARNING"),
        ({"temperature": 0.0}, "LOW_TEMP", "WARNING"),
        ({"temperature": -0.01}, "LOW_TEMP", "CRITICAL"),
        ({"temperature": 10.0}, "LOW_TEMP", None),
        ({"humidity": 80.01}, "HIGH_HUMIDITY", "WARNING"),
        ({"humidity": 90.01}, "HIGH_HUMIDITY", "CRITICAL"),
        ({"humidity": 80.0}, "HIGH_HUMIDITY", None),
    ],
)
def test_static_threshold(values: dict, kind: str, expected: str | None) -> None:
    alerts = run([r(0, **values)])
    want = [(at(0), "temperature" if kind != "HIGH_HUMIDITY" else "humidity", expected)]
    assert fired(alerts, kind) == (want if expected else [])


def test_static_alerts_fire_on_every_breaching_reading() -> None:
    alerts = run([r(0, temperature=31), r(10, temperature=32)], [r(20, temperature=33)])
    assert [a.event_time for a in alerts if a.alert_type == "HIGH_TEMP"] == [at(0), at(10),
                                                                            at(20)]


# --- rapid change -----------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        ([r(0), r(60, temperature=25.01)], [60]),             # 60 s back is inclusive
        ([r(0), r(61, temperature=25.01)], []),               # 61 s back is outside
        ([r(0), r(30, temperature=25.0)], []),                # a change of exactly 5 is not > 5
        ([r(0), r(30, temperature=14.9)], [30]),              # a drop counts too
        ([r(0), r(30, temperature=26), r(40, temperature=26.5)], [30]),  # one per episode
        ([r(0), r(30, temperature=26), r(100, temperature=26),
          r(110, temperature=20)], [30, 110]),                # episode ended, new one
    ],
)
def test_rapid_change(readings: list[Reading], expected: list[float]) -> None:
    assert fired(run(readings), "RAPID_CHANGE") == [(at(s), "temperature", "WARNING")
                                                    for s in expected]


def test_rapid_change_across_batches() -> None:
    assert fired(run([r(0)], [r(45, temperature=26)]), "RAPID_CHANGE") == [
        (at(45), "temperature", "WARNING")]


# --- trailing statistics: dynamic threshold and z-score ----------------------------------------

# 10 readings alternating 20/21: mean 20.5, sample std 0.527 -> dynamic threshold 21.554,
# z of 22 = 2.85, z of 23 = 4.74.
@pytest.mark.parametrize(
    ("history", "value", "expected"),
    [
        (trailing(10), 21.6, [600]),
        (trailing(10), 21.5, []),                      # under mean + 2 std
        (trailing(9), 25.0, []),                       # only 9 trailing readings
        (trailing(10, lo=20, hi=20), 25.0, []),        # zero deviation
    ],
)
def test_dynamic_threshold(history: list[Reading], value: float, expected: list[float]) -> None:
    t = len(history) * 60
    alerts = run(history, [r(t, temperature=value)])
    assert fired(alerts, "DYNAMIC_THRESHOLD") == [(at(s), "temperature", "WARNING")
                                                  for s in expected]


def test_trailing_window_is_half_open() -> None:
    """[t - 30 min, t): a reading exactly 30 min back counts, 1 ms more does not."""
    hist = trailing(10, step_s=180)  # 0 .. 1620 s; the first is exactly 30 min before 1800
    assert fired(run(hist[1:], [r(1800, temperature=23)]), "ZSCORE_OUTLIER") == []
    alerts = run(hist, [r(1800, temperature=23)])
    assert fired(alerts, "ZSCORE_OUTLIER") == [(at(1800), "temperature", "WARNING")]
    hist_out = [r(-0.001, temperature=20)] + hist[1:]
    assert fired(run(hist_out, [r(1800, temperature=23)]), "ZSCORE_OUTLIER") == []


@pytest.mark.parametrize(
    ("metric", "lo", "hi", "value", "fires"),
    [
        ("temperature", 20, 21, 23.0, True),
        ("temperature", 20, 21, 22.0, False),
        ("humidity", 50, 51, 48.0, True),      # below the mean counts (absolute z)
        ("humidity", 50, 51, 49.0, False),
        ("pressure", 1013, 1014, 1016.1, True),
        ("pressure", 1013, 1014, 1015.0, False),
    ],
)
def test_zscore_outlier_per_metric(metric: str, lo: float, hi: float, value: float,
                                   fires: bool) -> None:
    alerts = run(trailing(10, metric=metric, lo=lo, hi=hi), [r(600, **{metric: value})])
    assert fired(alerts, "ZSCORE_OUTLIER") == ([(at(600), metric, "WARNING")] if fires else [])


def test_zscore_episodes_are_per_metric_and_once() -> None:
    hist = [r(i * 60, temperature=20 + i % 2, humidity=50 + i % 2) for i in range(10)]
    alerts = run(hist, [r(600, temperature=23), r(660, temperature=23, humidity=48)])
    got = fired(alerts, "ZSCORE_OUTLIER")
    assert got == [(at(600), "temperature", "WARNING"), (at(660), "humidity", "WARNING")]


# --- consecutive static alerts ------------------------------------------------------------------

@pytest.mark.parametrize(
    ("temps", "expected"),
    [
        ([31, 31, 31], [2]),
        ([31, 31, 31, 31, 31], [2]),             # once per run
        ([31, 31, 20, 31], []),                  # the run is broken
        ([31, 5, 31], [2]),                      # any static type continues the run
        ([31, 31, 20, 31, 31, 31], [5]),         # a new run fires again on its 3rd
    ],
)
def test_consecutive_alerts(temps: list[float], expected: list[int]) -> None:
    alerts = run([r(i * 10, temperature=t) for i, t in enumerate(temps)])
    assert fired(alerts, "CONSECUTIVE_ALERTS") == [(at(i * 10), None, "CRITICAL")
                                                   for i in expected]


def test_consecutive_counts_by_event_time_not_arrival() -> None:
    # arrival order 2, 0, 1 in one batch: sorted by event time -> 3 consecutive
    alerts = run([r(20, temperature=31), r(0, temperature=31), r(10, temperature=31)])
    assert fired(alerts, "CONSECUTIVE_ALERTS") == [(at(20), None, "CRITICAL")]


# --- rising trend -------------------------------------------------------------------------------

def minutes(means: list[float], *, start_min: int = 0) -> list[Reading]:
    """Two readings per clock minute, averaging to the given means (+/-0.01 around it)."""
    out = []
    for i, m in enumerate(means):
        base = (start_min + i) * 60
        out += [r(base + 5, temperature=m - 0.01), r(base + 35, temperature=m + 0.01)]
    return out


@pytest.mark.parametrize(
    ("means", "expected_end_min"),
    [
        ([20 + 0.1 * i for i in range(16)] + [20], 16),        # 15 rises: fires at end of 16th
        ([20 + 0.1 * i for i in range(15)] + [20], None),      # 14 rises only
        ([20 + 0.1 * i for i in range(8)] + [20.7] + [20.8 + 0.1 * i for i in range(8)] + [20],
         None),                                                # one flat minute breaks it
        ([20 + 0.1 * i for i in range(20)], 16),               # fires once, while rising on
    ],
)
def test_rising_trend(means: list[float], expected_end_min: int | None) -> None:
    alerts = run(minutes(means))
    expected = [] if expected_end_min is None else [
        (at(expected_end_min * 60), "temperature", "WARNING")]
    assert fired(alerts, "RISING_TREND") == expected


def test_rising_trend_needs_adjacent_minutes() -> None:
    means = [20 + 0.1 * i for i in range(16)]
    gap = minutes(means[:8]) + minutes(means[8:] + [20], start_min=9)  # minute 8 is empty
    assert fired(run(gap), "RISING_TREND") == []


def test_rising_trend_completed_by_offline() -> None:
    """The last minute completes when the sensor goes silent (offline timer)."""
    readings = minutes([20 + 0.1 * i for i in range(16)])
    last = 15 * 60 + 35
    alerts = run(readings, watermark_s=last + 600)
    assert fired(alerts, "RISING_TREND") == [(at(16 * 60), "temperature", "WARNING")]


# --- offline / recovered ------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("watermark_s", "fires"),
    [(100 + 600, True), (100 + 600 - 0.001, False), (100 + 5000, True)],
)
def test_sensor_offline_by_watermark(watermark_s: float, fires: bool) -> None:
    alerts = run([r(0), r(100)], watermark_s=watermark_s)
    assert fired(alerts, "SENSOR_OFFLINE") == ([(at(700), None, "CRITICAL")] if fires else [])


@pytest.mark.parametrize(
    ("next_s", "fires"),
    [(700.001, True), (700.0, False), (650, False)],
)
def test_sensor_offline_and_recovered_by_next_reading(next_s: float, fires: bool) -> None:
    alerts = run([r(100)], [r(next_s), r(next_s + 10)])
    assert fired(alerts, "SENSOR_OFFLINE") == ([(at(700), None, "CRITICAL")] if fires else [])
    assert fired(alerts, "SENSOR_RECOVERED") == ([(at(next_s), None, "INFO")] if fires else [])


def test_offline_fires_once_and_recovers_once() -> None:
    scalars, history = None, None
    st = SensorAlertState.from_state("S1", CFG, scalars, history)
    st.process([r(0)], now=NOW)
    first = st.on_watermark(to_ms(at(600)), now=NOW)
    again = st.on_watermark(to_ms(at(5000)), now=NOW)
    back = st.process([r(6000), r(6010)], now=NOW)
    assert [a.alert_type for a in first] == ["SENSOR_OFFLINE"] and again == []
    assert fired(back, "SENSOR_RECOVERED") == [(at(6000), None, "INFO")]
    assert fired(back, "SENSOR_OFFLINE") == []
    assert st.offline_deadline_ms() == to_ms(at(6610))


# --- cross-cutting ------------------------------------------------------------------------------

def test_quiet_sensor_raises_nothing() -> None:
    readings = [r(i * 10, temperature=20 + (i % 3) * 0.1, humidity=50 + (i % 2) * 0.2)
                for i in range(400)]
    assert run(readings[:200], readings[200:], watermark_s=3990 + 599) == []


def test_alert_id_is_deterministic_and_distinguishes_fields() -> None:
    a = alert_id("S1", "ZSCORE_OUTLIER", "humidity", at(0))
    assert a == alert_id("S1", "ZSCORE_OUTLIER", "humidity", to_ms(at(0)))
    others = {alert_id("S2", "ZSCORE_OUTLIER", "humidity", at(0)),
              alert_id("S1", "ZSCORE_OUTLIER", "pressure", at(0)),
              alert_id("S1", "DYNAMIC_THRESHOLD", "humidity", at(0)),
              alert_id("S1", "ZSCORE_OUTLIER", "humidity", at(0.001))}
    assert a not in others and len(others) == 4


def test_alert_rows_match_the_gold_schema() -> None:
    alerts = run(trailing(10), [r(600, temperature=41, humidity=95), r(601, temperature=41),
                                r(602, temperature=41)], watermark_s=2000)
    kinds = {a.alert_type for a in alerts}
    assert {"HIGH_TEMP", "HIGH_HUMIDITY", "CONSECUTIVE_ALERTS", "SENSOR_OFFLINE",
            "RAPID_CHANGE", "DYNAMIC_THRESHOLD", "ZSCORE_OUTLIER"} <= kinds
    for a in alerts:
        row = a.as_row()
        assert list(row) == ALERT_SCHEMA.fieldNames()
        assert row["alert_type"] in ALERT_TYPES
        assert row["event_time"].tzinfo is not None


def test_batching_does_not_change_the_alerts() -> None:
    """Determinism: one batch or many (in event-time order) give the same alerts."""
    readings = (trailing(12) + minutes([30 + 0.2 * i for i in range(17)], start_min=13)
                + [r(40 * 60, temperature=5), r(41 * 60, temperature=5)])
    whole = run(readings, watermark_s=60 * 60)
    pieces = run(*[readings[i:i + 3] for i in range(0, len(readings), 3)], watermark_s=60 * 60)
    assert [a.as_row() for a in whole] == [a.as_row() for a in pieces]
    assert len({a.alert_type for a in whole}) >= 6


def test_late_reading_only_raises_static_alerts_and_is_counted() -> None:
    st = SensorAlertState.from_state("S1", CFG, None, None)
    st.process([r(0), r(100)], now=NOW)
    late = st.process([r(50, temperature=45)], now=NOW)
    assert [a.alert_type for a in late] == ["HIGH_TEMP"]       # no CONSECUTIVE/RAPID state use
    assert st.late_readings == 1 and st.consecutive == 0 and st.last_t_ms == to_ms(at(100))


def test_state_is_bounded_by_the_longest_window() -> None:
    st = SensorAlertState.from_state("S1", CFG, None, None)
    for hour in range(6):
        st.process([r(hour * 3600 + s) for s in range(0, 3600, 5)], now=NOW)
        history = st.history_rows()
        span_s = (history[-1][0] - history[0][0]) / 1000
        assert span_s <= CFG.trailing.window_s and len(history) <= CFG.trailing.window_s / 5 + 1


def test_state_round_trip_keeps_everything() -> None:
    st = SensorAlertState.from_state("S1", CFG, None, None)
    st.process(trailing(12) + [r(710, humidity=None), r(720, temperature=31),
                               r(730, temperature=31)], now=NOW)
    scalars, history = st.to_state()
    back = SensorAlertState.from_state("S1", CFG, scalars, history)
    assert back.to_state() == (scalars, history)
    assert back.history_rows() == st.history_rows()
    assert back.history_rows()[-3] == (to_ms(at(710)), 20.0, None, 1013.0)
    assert back.consecutive == 2 and from_ms(back.last_t_ms or 0) == at(730)
