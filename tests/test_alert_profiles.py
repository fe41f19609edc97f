"""Alert profiles (`alerts.profile`), without Spark: the production profile's rules through
`SensorAlertState` (ANOMALY instead of the trailing mean/std rules, trailing statistics by
count, SENSOR_OFFLINE relative to the sensor's reporting interval) at 1 s, 15 min and 1 h
cadence, the state blob through the state store's layout (and a blob of the older layout),
and the alerts query's processor on a fake state handle."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gold.alert_rules import (
    Alert,
    Reading,
    SensorAlertState,
    pack_history,
    to_ms,
    unpack_state,
)
from jobs.config import PROFILE_RULES, ConfigError, load_config

PROD = load_config(env={}).alerts
SEED = load_config(env={}, overrides={"alerts.profile": "seed"}).alerts
T0 = datetime(2024, 3, 1, tzinfo=UTC)
NOW = datetime(2024, 4, 1, tzinfo=UTC)
SEC, MIN, HOUR = 1000, 60_000, 3_600_000


def reading(t_ms: int, temp: float, hum: float = 50.0, pres: float = 1013.0) -> Reading:
    return Reading(to_ms(T0) + t_ms, temp, hum, pres, "A")


def noisy(n: int, step_ms: int, *, seed: int = 1, level: float = 21.0, noise: float = 0.3,
          start_ms: int = 0) -> list[Reading]:
    rng = random.Random(seed)
    return [reading(start_ms + i * step_ms, level + rng.uniform(-noise, noise),
                    50 + rng.uniform(-1, 1), 1013 + rng.uniform(-0.3, 0.3)) for i in range(n)]


def run(cfg, *batches: list[Reading], watermark_ms: int | None = None,  # noqa: ANN001
        sensor: str = "S1") -> list[Alert]:
    """Batches as the query feeds them: the state stored and restored between batches, the
    watermark (newest - 10 min, or ``watermark_ms`` after the last batch) after each."""
    scalars, blob = None, None
    out: list[Alert] = []
    newest = None
    for batch in batches:
        st = SensorAlertState.from_state(sensor, cfg, scalars, blob)
        out += st.process(batch, now=NOW)
        newest = max([newest or 0, *(r.t_ms for r in batch)])
        out += st.on_watermark(newest - 600 * SEC, now=NOW)
        scalars, blob = st.to_state()
    if watermark_ms is not None:
        st = SensorAlertState.from_state(sensor, cfg, scalars, blob)
        out += st.on_watermark(to_ms(T0) + watermark_ms, now=NOW)
    return out


def kinds(alerts: list[Alert]) -> list[str]:
    return [a.alert_type for a in alerts]


def fired(alerts: list[Alert], kind: str) -> list[tuple[int, str | None]]:
    return [(to_ms(a.event_time) - to_ms(T0), a.metric) for a in alerts if a.alert_type == kind]


def chunks(rs: list[Reading], size: int) -> list[list[Reading]]:
    return [rs[i:i + size] for i in range(0, len(rs), size)]


# --- profile selection ------------------------------------------------------------------------

def test_production_is_the_default_and_seed_keeps_every_seed_rule() -> None:
    assert PROD.profile == "production" and PROD.adaptive and not SEED.adaptive
    assert PROD.enabled == set(PROFILE_RULES["production"])
    assert {"ANOMALY", "SENSOR_OFFLINE", "RAPID_CHANGE", "CONSECUTIVE_ALERTS"} <= PROD.enabled
    assert not PROD.enabled & {"DYNAMIC_THRESHOLD", "ZSCORE_OUTLIER", "RISING_TREND"}
    assert SEED.enabled == set(PROFILE_RULES["seed"]) and "ANOMALY" not in SEED.enabled
    picked = load_config(env={}, overrides={"alerts.rules": ["ZSCORE_OUTLIER", "ANOMALY"]})
    assert picked.alerts.enabled == {"ZSCORE_OUTLIER", "ANOMALY"}
    assert PROD.severities["ANOMALY"] == "WARNING"
    from gold.anomaly import METHODS
    from jobs.config import ANOMALY_METHODS

    assert ANOMALY_METHODS == METHODS


@pytest.mark.parametrize(("key", "value", "message"), [
    ("alerts.profile", "strict", "alerts.profile must be one of production, seed"),
    ("alerts.rules", ["ZSCORE"], "unknown alert type"),
    ("alerts.anomaly.method", "hst", "alerts.anomaly.method must be one of seasonal, ewma"),
    ("alerts.anomaly.metrics", ["co2"], "alerts.anomaly: metrics must be"),
    ("alerts.anomaly.exit", 7.0, "0 < exit <= enter"),
    ("alerts.offline.interval_quantile", 1.5, "0 < interval_quantile <= 1"),
])
def test_a_bad_profile_or_rule_is_refused(key: str, value: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env={}, overrides={key: value})


def test_seed_raises_the_trailing_rules_where_production_raises_anomaly() -> None:
    """The same 1 s sensor: 3 h of clean noise, then a 5 °C step."""
    warm = noisy(3 * 3600, SEC)
    step = [reading(3 * 3600 * SEC + i * SEC, 26.0) for i in range(30)]
    seed = run(SEED, *chunks(warm + step, 600))
    prod = run(PROD, *chunks(warm + step, 600))
    assert {"DYNAMIC_THRESHOLD", "ZSCORE_OUTLIER"} <= set(kinds(seed))
    assert "ANOMALY" not in kinds(seed)
    assert fired(prod, "ANOMALY") == [(3 * 3600 * SEC, "temperature")]
    assert not set(kinds(prod)) & {"DYNAMIC_THRESHOLD", "ZSCORE_OUTLIER", "RISING_TREND"}
    assert "RAPID_CHANGE" in kinds(prod) and "RAPID_CHANGE" in kinds(seed)


# --- ANOMALY through SensorAlertState -----------------------------------------------------------

@pytest.mark.parametrize(("step_ms", "days"), [(SEC, 0), (15 * MIN, 6), (HOUR, 10)])
def test_anomaly_fires_on_a_spike_and_stays_quiet_on_a_near_miss(step_ms: int, days: int
                                                                 ) -> None:
    n = 3 * 3600 if step_ms == SEC else days * 86_400_000 // step_ms
    warm = noisy(n, step_ms, noise=0.05)
    t = n * step_ms
    quiet = run(PROD, *chunks(warm, 500), [reading(t, 21.8)])
    assert kinds(quiet) == [], "0.8 °C off a steady sensor is under the 1 °C floor"
    loud = run(PROD, *chunks(warm, 500), [reading(t, 24.0)])
    assert fired(loud, "ANOMALY") == [(t, "temperature")]


@pytest.mark.parametrize("step_ms", [SEC, 5 * SEC, 15 * MIN, HOUR])
def test_a_healthy_sensor_stays_quiet(step_ms: int) -> None:
    n = 4 * 3600 * SEC // step_ms if step_ms <= 5 * SEC else 14 * 86_400_000 // step_ms
    assert run(PROD, *chunks(noisy(n, step_ms, seed=7), 400)) == []


def test_anomaly_episodes_are_per_metric() -> None:
    warm = noisy(3 * 3600, SEC, seed=3)
    t = 3 * 3600 * SEC
    both = [reading(t + i * SEC, 21.0, 75.0) for i in range(5)]
    alerts = run(PROD, *chunks(warm, 900), both)
    assert sorted(fired(alerts, "ANOMALY")) == [(t, "humidity")]
    hot = [reading(t + 10 * SEC + i * SEC, 25.0, 75.0) for i in range(5)]
    alerts = run(PROD, *chunks(warm, 900), both, hot)
    assert sorted(fired(alerts, "ANOMALY")) == [(t, "humidity"), (t + 10 * SEC, "temperature")]


# --- trailing statistics by count ---------------------------------------------------------------

def alternating(n: int, step_ms: int) -> list[Reading]:
    """mean 20.5, sample std 0.527: z of 23 = 4.74, of 22 = 2.85."""
    return [reading(i * step_ms, 20.0 if i % 2 == 0 else 21.0) for i in range(n)]


ZSCORE_PROD = load_config(env={}, overrides={"alerts.rules": ["ZSCORE_OUTLIER"]}).alerts
ZSCORE_SEED = load_config(env={}, overrides={"alerts.rules": ["ZSCORE_OUTLIER"],
                                             "alerts.profile": "seed"}).alerts


@pytest.mark.parametrize("step_ms", [15 * MIN, HOUR])
def test_slow_sensor_trailing_statistics_by_count(step_ms: int) -> None:
    hist = alternating(10, step_ms)
    t = 10 * step_ms
    assert fired(run(ZSCORE_PROD, hist, [reading(t, 23.0)]), "ZSCORE_OUTLIER") == [
        (t, "temperature")]
    assert fired(run(ZSCORE_PROD, hist, [reading(t, 22.0)]), "ZSCORE_OUTLIER") == []
    assert fired(run(ZSCORE_SEED, hist, [reading(t, 23.0)]), "ZSCORE_OUTLIER") == [], \
        "the seed's 30 minutes hold too few readings of a slow sensor"


def test_trailing_by_count_only_within_its_span() -> None:
    step = 3 * HOUR  # 10 readings span 27 h > trailing.max_span_s (24 h)
    hist = alternating(10, step)
    assert fired(run(ZSCORE_PROD, hist, [reading(10 * step, 23.0)]), "ZSCORE_OUTLIER") == []
    assert fired(run(ZSCORE_PROD, hist[1:], [reading(10 * step, 23.0)]), "ZSCORE_OUTLIER") \
        == [], "9 readings are too few"


def test_fast_sensor_trailing_window_is_the_seeds() -> None:
    """At 1 reading a minute the 30-minute window holds enough: by time, as in the seed."""
    hist = alternating(40, MIN)
    t = 40 * MIN
    for cfg in (ZSCORE_PROD, ZSCORE_SEED):
        assert fired(run(cfg, hist, [reading(t, 23.0)]), "ZSCORE_OUTLIER") == [(t, "temperature")]


# --- SENSOR_OFFLINE relative to the reporting interval ------------------------------------------

def steady(n: int, step_ms: int) -> list[Reading]:
    return [reading(i * step_ms, 21.0) for i in range(n)]


def test_hourly_sensor_is_not_offline_between_readings() -> None:
    alerts = run(PROD, *[[r] for r in noisy(24 * 7, HOUR, noise=0.1)])
    assert fired(alerts, "SENSOR_OFFLINE") == [] and fired(alerts, "SENSOR_RECOVERED") == []
    seed = run(SEED, *[[r] for r in noisy(24, HOUR, noise=0.1)])
    assert len(fired(seed, "SENSOR_OFFLINE")) == 23, "the seed pages every hourly reading"


@pytest.mark.parametrize(("step_ms", "after_ms"), [
    (SEC, 600 * SEC),            # faster than offline.after_s: the seed's 10 minutes
    (15 * MIN, 45 * MIN),        # 3 x its interval
    (HOUR, 3 * HOUR),
])
def test_offline_after_a_multiple_of_the_learnt_interval(step_ms: int, after_ms: int) -> None:
    n = 40
    hist = steady(n, step_ms)
    last = (n - 1) * step_ms
    assert fired(run(PROD, *chunks(hist, 10), watermark_ms=last + after_ms - 1),
                 "SENSOR_OFFLINE") == [], "a near miss: 1 ms before the deadline"
    alerts = run(PROD, *chunks(hist, 10), watermark_ms=last + after_ms)
    assert fired(alerts, "SENSOR_OFFLINE") == [(last + after_ms, None)]
    (off,) = [a for a in alerts if a.alert_type == "SENSOR_OFFLINE"]
    assert off.threshold == after_ms / 1000
    back = run(PROD, *chunks(hist, 10), [reading(last + after_ms + 1, 21.0)])
    assert fired(back, "SENSOR_OFFLINE") == [(last + after_ms, None)]
    assert fired(back, "SENSOR_RECOVERED") == [(last + after_ms + 1, None)]


def test_one_long_gap_does_not_stretch_the_offline_time() -> None:
    hist = steady(20, MIN) + [reading(20 * MIN + 5 * HOUR, 21.0)]
    st = SensorAlertState("S1", PROD)
    st.process(hist, now=NOW)
    assert st.offline_after_ms == 600 * SEC, "the 90th percentile of its gaps is a minute"


def test_a_sensor_heard_once_waits_initial_after_s() -> None:
    st = SensorAlertState("S1", PROD)
    st.process([reading(0, 21.0)], now=NOW)
    assert st.offline_after_ms == PROD.offline.initial_after_s * SEC
    seed = SensorAlertState("S1", SEED)
    seed.process([reading(0, 21.0)], now=NOW)
    assert seed.offline_after_ms == SEED.offline.after_s * SEC


# --- state in the store's layout -----------------------------------------------------------------

def test_state_round_trip_keeps_detectors_and_intervals() -> None:
    rs = noisy(3 * 3600, SEC, seed=5)
    st = SensorAlertState("S1", PROD)
    st.process(rs[:9000], now=NOW)
    scalars, blob = st.to_state()
    assert isinstance(blob, bytes)
    back = SensorAlertState.from_state("S1", PROD, scalars, blob)
    assert back.to_state() == (scalars, blob)
    assert set(back.detectors) == {"temperature", "humidity", "pressure"}
    assert back.gaps == st.gaps and len(back.gaps) == PROD.offline.gaps
    tail = rs[9000:] + [reading(3 * 3600 * SEC, 26.0)]
    assert [a.as_row() for a in back.process(tail, now=NOW)] == [
        a.as_row() for a in st.process(tail, now=NOW)]
    # bounded: a few dozen floats per detector, the intervals, the history of the windows
    _, values, gaps, dets = unpack_state(blob)
    assert all(len(v) == 34 for v in dets.values()) and len(gaps) == 32


def test_seed_state_keeps_the_seed_layout() -> None:
    st = SensorAlertState("S1", SEED)
    st.process(noisy(100, SEC), now=NOW)
    scalars, blob = st.to_state()
    assert not math.isnan(np.frombuffer(blob, dtype="<f8")[0]), "the history matrix alone"


def test_a_blob_of_the_older_layout_is_read_and_migrated() -> None:
    """A sensor stored by the previous version (the history matrix alone): its history is
    kept, its intervals and detectors start learning, and the next store writes v3."""
    times = [to_ms(T0) + i * SEC for i in range(20)]
    old = pack_history(times, [[21.0] * 20, [50.0] * 20, [1013.0] * 20])
    scalars = (times[-1], "A", False, 0, "", None, 0.0, 0, None, None, 0, 0)
    st = SensorAlertState.from_state("S1", PROD, scalars, old)
    assert st.history_len() == 20 and st.detectors == {} and st.gaps == []
    assert st.process([reading(20 * SEC, 21.0)], now=NOW) == []
    _, blob = st.to_state()
    assert math.isnan(np.frombuffer(blob, dtype="<f8")[0])
    assert unpack_state(blob)[0][-1] == to_ms(T0) + 20 * SEC


def test_a_blob_of_an_unknown_layout_is_refused() -> None:
    st = SensorAlertState("S1", PROD)
    st.process(noisy(10, SEC), now=NOW)
    _, blob = st.to_state()
    arr = np.frombuffer(blob, dtype="<f8").copy()
    arr[1] = 9.0
    with pytest.raises(ValueError, match="layout v9; this version reads v3 and v2"):
        unpack_state(arr.tobytes())


# --- the alerts query's processor on a fake state handle ---------------------------------------

class _Value:
    def __init__(self) -> None:
        self.row: tuple | None = None

    def get(self) -> tuple | None:
        return self.row

    def update(self, row: tuple) -> None:
        self.row = row

    def clear(self) -> None:
        self.row = None


class _Map:
    def __init__(self) -> None:
        self.rows: dict[tuple, tuple] = {}

    def getValue(self, key: tuple) -> tuple | None:  # noqa: N802 - Spark's API
        return self.rows.get(key)

    def updateValue(self, key: tuple, row: tuple) -> None:  # noqa: N802
        self.rows[key] = row

    def removeKey(self, key: tuple) -> None:  # noqa: N802
        self.rows.pop(key, None)


class _Handle:
    def __init__(self) -> None:
        self.index, self.sensors, self.timers = _Value(), _Map(), set()

    def getValueState(self, name: str, schema: str) -> _Value:  # noqa: N802
        return self.index

    def getMapState(self, name: str, key: str, schema: str) -> _Map:  # noqa: N802
        return self.sensors

    def registerTimer(self, ms: int) -> None:  # noqa: N802
        self.timers.add(ms)

    def deleteTimer(self, ms: int) -> None:  # noqa: N802
        self.timers.discard(ms)


class _Timer:
    def __init__(self, watermark_ms: int) -> None:
        self.watermark_ms = watermark_ms

    def getCurrentProcessingTimeInMs(self) -> int:  # noqa: N802
        return to_ms(NOW)

    def getCurrentWatermarkInMs(self) -> int:  # noqa: N802
        return self.watermark_ms


def _rows(rs: list[Reading], sensor: str = "S1") -> Iterator[pd.DataFrame]:
    yield pd.DataFrame({
        "sensor_id": [sensor] * len(rs),
        "event_time": pd.to_datetime([r.t_ms for r in rs], unit="ms", utc=True),
        "temperature": [r.temperature for r in rs], "humidity": [r.humidity for r in rs],
        "pressure": [r.pressure for r in rs], "location": ["A"] * len(rs),
        "partition": [0] * len(rs), "offset": list(range(len(rs))), "fresh": [False] * len(rs),
    })


def _processor(cfg):  # noqa: ANN001, ANN202
    from gold.alerts import AlertProcessor

    proc = AlertProcessor(cfg, evict_after_ms=cfg.state_ttl_s * 1000)
    handle = _Handle()
    proc.init(handle)  # type: ignore[arg-type]
    return proc, handle


def _feed(proc, rs: list[Reading], watermark_ms: int) -> list[str]:  # noqa: ANN001
    out = list(proc.handleInputRows(("b",), _rows(rs), _Timer(watermark_ms)))
    return [t for frame in out for t in frame["alert_type"].tolist()]


def test_processor_times_an_hourly_sensor_by_its_own_interval() -> None:
    """The bucket's timer sits at the sensor's learnt deadline (3 h after its last reading),
    not at offline.after_s, and the stored row is the SENSOR_FIELDS row with a v3 blob."""
    proc, handle = _processor(PROD)
    hourly = steady(30, HOUR)
    for i in range(0, 30, 5):
        assert _feed(proc, hourly[i:i + 5], hourly[i + 4].t_ms - 600 * SEC) == []
    last = hourly[-1].t_ms
    assert handle.timers == {last + 3 * HOUR}
    row = handle.sensors.rows[("S1",)]
    from gold.alerts import SENSOR_FIELDS

    assert len(row) == len(SENSOR_FIELDS) and isinstance(row[-1], bytes)
    assert math.isnan(np.frombuffer(row[-1], dtype="<f8")[0])


def test_processor_migrates_an_index_of_the_older_version() -> None:
    """An index written by the previous version holds the last reading: the timer fires at
    last + offline.after_s once, the sensor is not offline, and its own deadline is stored."""
    proc, handle = _processor(PROD)
    hourly = steady(30, HOUR)
    _feed(proc, hourly, hourly[-1].t_ms - 600 * SEC)
    last = hourly[-1].t_ms
    names, _, offline, timer = handle.index.row
    handle.index.row = (names, [last], offline, last + 600 * SEC)  # as v2 wrote it
    from pyspark.sql.streaming.stateful_processor import ExpiredTimerInfo

    class _Expired(ExpiredTimerInfo):
        def __init__(self, ms: int) -> None:
            self.ms = ms

        def getExpiryTimeInMs(self) -> int:  # noqa: N802
            return self.ms

    out = list(proc.handleExpiredTimer(("b",), _Timer(last + 600 * SEC),
                                       _Expired(last + 600 * SEC)))
    assert out == []
    assert handle.index.row[1] == [last + 3 * HOUR - 600 * SEC]
    assert handle.timers >= {last + 3 * HOUR}


# --- the checkpoint's layout marker ---------------------------------------------------------

def _checkpoint(tmp_path: Path, layout: str):  # noqa: ANN202
    from jobs.alerts_job import LAYOUT_FILE, QUERY_NAME

    cfg = load_config(env={}, overrides={"paths.data_dir": str(tmp_path)})
    ckpt = cfg.paths.checkpoint(QUERY_NAME)
    (ckpt / "offsets").mkdir(parents=True)
    (ckpt / "offsets" / "0").write_text("v1\n{}\n")
    (ckpt / LAYOUT_FILE).write_text(json.dumps(
        {"layout": layout, "key_buckets": cfg.alerts.key_buckets, "input": "kafka"}))
    return cfg, ckpt / LAYOUT_FILE


def test_a_checkpoint_of_the_older_layout_is_migrated(tmp_path: Path) -> None:
    from jobs.alerts_job import STATE_LAYOUT, layout_problem, record_layout

    cfg, marker = _checkpoint(tmp_path, "sensor-buckets-v2")
    assert layout_problem(cfg) is None
    record_layout(cfg)
    assert json.loads(marker.read_text())["layout"] == STATE_LAYOUT == "sensor-buckets-v3"
    assert layout_problem(cfg) is None


def test_a_checkpoint_of_another_layout_is_refused_naming_the_fix(tmp_path: Path) -> None:
    from jobs.alerts_job import layout_problem, record_layout

    cfg, _ = _checkpoint(tmp_path, "sensor-buckets-v1")
    assert "its state layout is 'sensor-buckets-v1'" in (layout_problem(cfg) or "")
    with pytest.raises(RuntimeError, match="sensor-buckets-v1"):
        record_layout(cfg)
    from jobs import preflight

    with pytest.raises(preflight.PreflightError, match="to start it afresh"):
        preflight.check_alerts_layout(cfg)


def test_timing_is_fixed_by_event_time() -> None:
    """Readings at 1 s through production in one batch or many give the same alerts."""
    rs = noisy(3 * 3600, SEC, seed=11) + [reading(3 * 3600 * SEC + i * SEC, 27.0)
                                          for i in range(5)]
    whole = run(PROD, rs)
    parts = run(PROD, *chunks(rs, 777))
    assert [a.as_row() for a in whole] == [a.as_row() for a in parts] and whole
    assert timedelta(seconds=PROD.anomaly.cooldown_s) == timedelta(hours=3)


# --- lifecycle: episodes, resolution, cool-down --------------------------------------------------

def _resolved(st: SensorAlertState) -> list[tuple[str, int, int]]:
    return [(x.alert_type, to_ms(x.opened_at) - to_ms(T0), to_ms(x.resolved_at) - to_ms(T0))
            for x in st.take_resolved()]


def _through_store(st: SensorAlertState, cfg=PROD) -> SensorAlertState:  # noqa: ANN001
    scalars, blob = st.to_state()
    back = SensorAlertState.from_state(st.sensor_id, cfg, scalars, blob)
    assert back.to_state() == (scalars, blob)
    return back


def test_rapid_change_episode_resolves_and_cools_down_at_1s() -> None:
    st = SensorAlertState("S1", PROD)
    seq = ([reading(i * SEC, 20.0) for i in range(60)]
           + [reading(i * SEC, 26.0) for i in range(60, 200)]       # jump at 60 s
           + [reading(i * SEC, 20.0) for i in range(200, 1300)]     # back: within cool-down
           + [reading(i * SEC, 26.0) for i in range(1300, 1400)])   # again, cool-down over
    alerts: list[Alert] = []
    resolved: list[tuple[str, int, int]] = []
    for part in chunks(seq, 50):
        alerts += st.process(part, now=NOW)
        resolved += _resolved(st)
        st = _through_store(st)
    assert fired(alerts, "RAPID_CHANGE") == [(60 * SEC, "temperature"),
                                             (1300 * SEC, "temperature")]
    # open while a reading of the last 60 s differs by > 5 °C: resolved at 120 s; the drop at
    # 200 s began within the cool-down (120 + 900 s): no alert, and no resolution of its own
    assert [r for r in resolved if r[0] == "RAPID_CHANGE"] == [
        ("RAPID_CHANGE", 60 * SEC, 120 * SEC), ("RAPID_CHANGE", 1300 * SEC, 1360 * SEC)]
    assert st.active() == []


def test_near_miss_of_the_cool_down_still_alerts() -> None:
    """A second jump just after the cool-down (resolution + 900 s) alerts again."""
    st = SensorAlertState("S1", PROD)
    seq = ([reading(i * SEC, 20.0) for i in range(60)]
           + [reading(i * SEC, 26.0) for i in range(60, 1021)]
           + [reading(1021 * SEC, 20.0)])
    alerts = st.process(seq, now=NOW)
    assert fired(alerts, "RAPID_CHANGE") == [(60 * SEC, "temperature"),
                                             (1021 * SEC, "temperature")]


@pytest.mark.parametrize("step_ms", [15 * MIN, HOUR])
def test_static_and_offline_episodes_at_slow_cadence(step_ms: int) -> None:
    """A static threshold alerts on every breaching reading (the real-time path publishes
    each) but is one episode; SENSOR_OFFLINE is an episode from its deadline to the
    recovery."""
    st = SensorAlertState("S1", PROD)
    temps = [21.0] * 10 + [31.0, 32.0, 21.0] + [21.0] * 5
    alerts = st.process([reading(i * step_ms, v) for i, v in enumerate(temps)], now=NOW)
    assert len(fired(alerts, "HIGH_TEMP")) == 2
    assert _resolved(st) == [("HIGH_TEMP", 10 * step_ms, 12 * step_ms)]
    last = (len(temps) - 1) * step_ms
    st = _through_store(st)
    off = st.on_watermark(to_ms(T0) + last + 3 * step_ms, now=NOW)
    assert kinds(off) == ["SENSOR_OFFLINE"]
    assert [k for _, k, _, _ in st.active()] == ["SENSOR_OFFLINE"]
    st = _through_store(st)
    back = st.process([reading(last + 5 * step_ms, 21.0)], now=NOW)
    assert kinds(back) == ["SENSOR_RECOVERED"]
    assert _resolved(st) == [("SENSOR_OFFLINE", last + 3 * step_ms, last + 5 * step_ms)]
    assert st.active() == []


def test_anomaly_episode_resolves_when_the_detector_closes() -> None:
    st = SensorAlertState("S1", PROD)
    warm = noisy(3 * 3600, SEC, seed=21)
    st.process(warm, now=NOW)
    t = 3 * 3600 * SEC
    spike = [reading(t + i * SEC, 25.0) for i in range(10)]  # under a RAPID_CHANGE
    assert fired(st.process(spike, now=NOW), "ANOMALY") == [(t, "temperature")]
    assert [(k, m) for _, k, m, _ in st.active()] == [("ANOMALY", "temperature")]
    st = _through_store(st)
    st.process(noisy(60, SEC, seed=22, start_ms=t + 10 * SEC), now=NOW)
    assert _resolved(st) == [("ANOMALY", t, t + 10 * SEC)]
    assert st.active() == []


def test_resolution_names_the_opening_alert() -> None:
    st = SensorAlertState("S1", PROD)
    alerts = st.process([reading(0, 31.0), reading(10 * SEC, 21.0)], now=NOW)
    (res,) = st.take_resolved()
    assert res.alert_id == alerts[0].alert_id and res.metric == "temperature"


def test_seed_has_no_lifecycle() -> None:
    st = SensorAlertState("S1", SEED)
    st.process([reading(0, 20.0), reading(30 * SEC, 26.0), reading(100 * SEC, 26.0),
                reading(110 * SEC, 20.0)], now=NOW)
    assert st.take_resolved() == [] and st.active() == []
    assert st.to_state()[0][4] == "RAPID_CHANGE", "the seed's episodes text"


def test_evaluate_with_a_named_detector_replaces_the_profiles_anomaly() -> None:
    from jobs.alert_evaluate import Detectors, LabelledSeries, evaluate

    cfg = load_config(env={})
    rs = noisy(12 * 24 * 3, 5 * MIN, seed=31, noise=0.2)
    times = [r.t_ms for r in rs]
    vals = [r.temperature for r in rs]
    vals[-50] = 26.0
    s = LabelledSeries("s", tuple(times), {"temperature": tuple(vals)}, ())
    rules = evaluate([s], cfg).types["ANOMALY"].alerts
    both = evaluate([s], cfg, detectors=Detectors.parse("rules,anomaly")).types
    assert rules == both["ANOMALY"].alerts == 1, "one ANOMALY, not one from each"
