"""Alerts as a stateful stream transform: silver readings -> alert rows (ALERT_SCHEMA).

`AlertProcessor` (Spark 4 `transformWithStateInPandas`, event-time mode) runs the rules of
`gold.alert_rules.SensorAlertState` for every sensor. Its grouping key is not the sensor but
a bucket of sensors (xxhash64(sensor_id) mod alerts.key_buckets): each call into Python and
each state-server round trip has a fixed cost, and with one key per sensor a batch over
10,000 sensors paid it 10,000 times over (about ten round trips per sensor). Per bucket:

- a MapState sensor_id -> that sensor's scalars and packed history (read and written only
  for the sensors of this batch: one round trip each way);
- a ValueState index: every sensor of the bucket with its last event time and offline flag,
  and the one timer the bucket has registered.

Time is event time throughout, so a replay gives the same alerts. The bucket's timer sits at
the earliest instant one of its sensors needs: its SENSOR_OFFLINE deadline (last reading +
offline.after_s) or, once offline, its eviction (last reading + alerts.state_ttl_s, which
deletes an abandoned sensor's state). Whenever the bucket runs, with data or on its timer,
every sensor whose instant the watermark has reached is handled. Spark 4.2 refuses state TTL
in event-time mode (STATEFUL_PROCESSOR_INCORRECT_TIME_MODE_TO_ASSIGN_TTL), hence the eviction
instant. A fleet gone silent advances no watermark, so no timer fires: see
`jobs.alerts_job.SilentFleetWatchdog` for the processing-time fallback.

No reading, writing or starting of queries here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.streaming.stateful_processor import ExpiredTimerInfo, TimerValues

from gold.alert_rules import SCALAR_FIELDS, Alert, Reading, SensorAlertState, ddl
from gold.schema import ALERT_SCHEMA
from jobs.config import AlertsConfig

logger = logging.getLogger(__name__)

INPUT_COLUMNS: tuple[str, ...] = (
    "sensor_id", "event_time", "temperature", "humidity", "pressure", "location",
)
BUCKET_COLUMN = "sensor_bucket"
# State layout (declared to Spark in `AlertProcessor.init`).
SENSOR_KEY = "sensor_id string"
SENSOR_FIELDS: tuple[tuple[str, str], ...] = (*SCALAR_FIELDS, ("history", "binary"))
INDEX_FIELDS: tuple[tuple[str, str], ...] = (
    ("sensors", "array<string>"), ("last_ms", "array<bigint>"), ("offline", "array<boolean>"),
    ("timer_ms", "bigint"),
)


def _now(timer_values: TimerValues) -> datetime:
    ms = timer_values.getCurrentProcessingTimeInMs()
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def _frame(alerts: list[Alert]) -> pd.DataFrame:
    rows = [a.as_row() for a in alerts]
    frame = pd.DataFrame(rows, columns=ALERT_SCHEMA.fieldNames())
    for col in ("event_time", "detected_at"):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    for col in ("value", "threshold"):
        frame[col] = frame[col].astype("float64")
    return frame


def _readings_by_sensor(frames: Iterable[pd.DataFrame]) -> dict[str, list[Reading]]:
    out: dict[str, list[Reading]] = {}
    for frame in frames:
        times = pd.to_datetime(frame["event_time"], utc=True)
        ms = (times.astype("int64") // 1_000_000).tolist()  # ns -> ms (pandas 2 keeps ns)
        for sid, t, temp, hum, pres, loc in zip(
                frame["sensor_id"].tolist(), ms, frame["temperature"].tolist(),
                frame["humidity"].tolist(), frame["pressure"].tolist(),
                frame["location"].tolist(), strict=True):
            out.setdefault(str(sid), []).append(Reading(t, temp, hum, pres, loc))
    return out


@dataclass
class _Index:
    """The bucket's sensors: sensor_id -> (last event time ms, offline); its timer."""

    sensors: dict[str, tuple[int, bool]] = field(default_factory=dict)
    timer_ms: int | None = None


class AlertProcessor(StatefulProcessor):
    """Runs the alert rules of every sensor of one bucket; state in RocksDB via the handle."""

    def __init__(self, cfg: AlertsConfig, *, evict_after_ms: int) -> None:
        if evict_after_ms <= cfg.offline.after_s * 1000:
            raise ValueError("alerts.state_ttl_s must be longer than alerts.offline.after_s")
        self.cfg = cfg
        self.evict_after_ms = evict_after_ms
        self.offline_after_ms = cfg.offline.after_s * 1000

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.index = handle.getValueState("index", ddl(INDEX_FIELDS))
        self.sensors = handle.getMapState("sensors", SENSOR_KEY, ddl(SENSOR_FIELDS))

    # --- state --------------------------------------------------------------------------

    def _load_index(self) -> _Index:
        row = self.index.get()
        if row is None:
            return _Index()
        sensors, last, offline, timer = row
        return _Index(dict(zip(sensors, zip(last, offline, strict=True), strict=True)), timer)

    def _save_index(self, idx: _Index) -> None:
        """Store the index and move the bucket's timer to its earliest instant."""
        due = [self._next_instant(last, off) for last, off in idx.sensors.values()]
        timer = min(due) if due else None
        if timer != idx.timer_ms:
            if idx.timer_ms is not None:
                self.handle.deleteTimer(idx.timer_ms)
            if timer is not None:
                self.handle.registerTimer(timer)
            idx.timer_ms = timer
        if idx.sensors:
            names = sorted(idx.sensors)
            self.index.update((names, [idx.sensors[n][0] for n in names],
                               [idx.sensors[n][1] for n in names], idx.timer_ms))
        else:
            self.index.clear()

    def _next_instant(self, last_ms: int, offline: bool) -> int:
        return last_ms + (self.evict_after_ms if offline else self.offline_after_ms)

    def _load(self, sensor_id: str) -> SensorAlertState:
        row = self.sensors.getValue((sensor_id,))
        if row is None:
            return SensorAlertState(sensor_id, self.cfg)
        *scalars, history = row
        return SensorAlertState.from_state(sensor_id, self.cfg, scalars, history)

    def _store(self, idx: _Index, st: SensorAlertState) -> None:
        scalars, history = st.to_state()
        self.sensors.updateValue((st.sensor_id,), (*scalars, history))
        assert st.last_t_ms is not None
        idx.sensors[st.sensor_id] = (st.last_t_ms, st.offline)

    def _sweep(self, idx: _Index, watermark_ms: int, now: datetime,
               done: Iterable[str] = ()) -> list[Alert]:
        """Sensors not in ``done`` whose offline deadline or eviction the watermark reached."""
        skip = set(done)
        out: list[Alert] = []
        for sid in sorted(idx.sensors):
            last, offline = idx.sensors[sid]
            if sid in skip or self._next_instant(last, offline) > watermark_ms:
                continue
            if not offline:
                st = self._load(sid)
                out += st.on_watermark(watermark_ms, now=now, details="watermark")
                self._store(idx, st)
            if last + self.evict_after_ms <= watermark_ms:
                self.sensors.removeKey((sid,))
                del idx.sensors[sid]
        return out

    # --- Spark entry points -------------------------------------------------------------

    def handleInputRows(self, key: tuple, rows: Iterator[pd.DataFrame],
                        timerValues: TimerValues) -> Iterator[pd.DataFrame]:
        idx = self._load_index()
        readings = _readings_by_sensor(rows)
        now = _now(timerValues)
        # A deadline already behind the watermark would never fire as a timer.
        watermark = timerValues.getCurrentWatermarkInMs()
        alerts: list[Alert] = []
        for sid in sorted(readings):
            st = self._load(sid)
            alerts += st.process(readings[sid], now=now)
            if watermark > 0:
                alerts += st.on_watermark(watermark, now=now, details="watermark")
            self._store(idx, st)
        if watermark > 0:
            alerts += self._sweep(idx, watermark, now, done=readings)
        self._save_index(idx)
        if alerts:
            yield _frame(alerts)

    def handleExpiredTimer(self, key: tuple, timerValues: TimerValues,
                           expiredTimerInfo: ExpiredTimerInfo) -> Iterator[pd.DataFrame]:
        idx = self._load_index()
        idx.timer_ms = None  # Spark deletes the expired timer itself after this call
        watermark = max(timerValues.getCurrentWatermarkInMs(),
                        expiredTimerInfo.getExpiryTimeInMs())
        alerts = self._sweep(idx, watermark, _now(timerValues))
        self._save_index(idx)
        if alerts:
            yield _frame(alerts)

    def close(self) -> None:
        pass


def alert_stream(readings: DataFrame, *, cfg: AlertsConfig, watermark: str) -> DataFrame:
    """Silver readings (stream or batch) -> alert rows in ALERT_SCHEMA.

    Keeps only INPUT_COLUMNS, puts the watermark on event_time, groups by the sensor's bucket
    and runs `AlertProcessor` in event-time mode (append output).
    """
    bucket = F.pmod(F.xxhash64("sensor_id"), F.lit(cfg.key_buckets))
    return (
        readings.select(*INPUT_COLUMNS)
        .withWatermark("event_time", watermark)
        .withColumn(BUCKET_COLUMN, bucket)
        .groupBy(BUCKET_COLUMN)
        .transformWithStateInPandas(
            statefulProcessor=AlertProcessor(cfg, evict_after_ms=cfg.state_ttl_s * 1000),
            outputStructType=ALERT_SCHEMA,
            outputMode="Append",
            timeMode="EventTime",
        )
    )
