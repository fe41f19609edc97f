"""Alerts as a stateful stream transform: silver readings -> alert rows (ALERT_SCHEMA).

Per sensor, `AlertProcessor` (Spark 4 `transformWithStateInPandas`, event-time mode) keeps the
state of `gold.alert_rules.SensorAlertState` in the state store: a ValueState of scalars and a
ListState of only the readings the rule windows still need (pruned on every update).

Timers, all event time (fired by Spark when the watermark passes them, so a replay gives the
same alerts): SENSOR_OFFLINE at last reading + offline.after_s, and an eviction timer at last
reading + alerts.state_ttl_s that deletes an abandoned sensor's state. Spark 4.2 refuses
state TTL in event-time mode (STATEFUL_PROCESSOR_INCORRECT_TIME_MODE_TO_ASSIGN_TTL: TTL is
processing time), hence the eviction timer. A processor has one time mode, so the
processing-time fallback for a fleet gone silent (no data, so no watermark progress, so no
timer fires) cannot be a timer here: see `jobs.alerts_job.silent_fleet_sweep`.

No reading, writing or starting of queries here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import UTC, datetime

import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.streaming.stateful_processor import ExpiredTimerInfo, TimerValues

from gold.alert_rules import (
    HISTORY_FIELDS,
    SCALAR_FIELDS,
    Alert,
    Reading,
    SensorAlertState,
    ddl,
)
from gold.schema import ALERT_SCHEMA
from jobs.config import AlertsConfig

logger = logging.getLogger(__name__)

INPUT_COLUMNS: tuple[str, ...] = (
    "sensor_id", "event_time", "temperature", "humidity", "pressure", "location",
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


def _readings(frame: pd.DataFrame) -> list[Reading]:
    times = pd.to_datetime(frame["event_time"], utc=True)
    ms = (times.astype("int64") // 1_000_000).tolist()  # ns -> ms (pandas 2 keeps ns here)
    return [Reading(t, temp, hum, pres, loc) for t, temp, hum, pres, loc in zip(
        ms, frame["temperature"].tolist(), frame["humidity"].tolist(),
        frame["pressure"].tolist(), frame["location"].tolist(), strict=True)]


class AlertProcessor(StatefulProcessor):
    """Runs the alert rules of one sensor per grouping key; state in RocksDB via the handle."""

    def __init__(self, cfg: AlertsConfig, *, evict_after_ms: int) -> None:
        if evict_after_ms <= cfg.offline.after_s * 1000:
            raise ValueError("alerts.state_ttl_s must be longer than alerts.offline.after_s")
        self.cfg = cfg
        self.evict_after_ms = evict_after_ms

    def init(self, handle: StatefulProcessorHandle) -> None:
        self.handle = handle
        self.scalars = handle.getValueState("scalars", ddl(SCALAR_FIELDS))
        self.history = handle.getListState("history", ddl(HISTORY_FIELDS))

    def _load(self, sensor_id: str) -> SensorAlertState:
        scalars = self.scalars.get() if self.scalars.exists() else None
        history = list(self.history.get()) if self.history.exists() else []
        return SensorAlertState.from_state(sensor_id, self.cfg, scalars, history)

    def _timers(self, st: SensorAlertState) -> set[int]:
        """Event-time timers this state needs: offline deadline and eviction."""
        out = set()
        if st.last_t_ms is not None:
            out.add(st.last_t_ms + self.evict_after_ms)
        deadline = st.offline_deadline_ms()
        if deadline is not None:
            out.add(deadline)
        return out

    def _save(self, st: SensorAlertState, old_timers: set[int]) -> None:
        scalars, history = st.to_state()
        self.scalars.update(scalars)
        if history:
            self.history.put(history)
        else:
            self.history.clear()
        new_timers = self._timers(st)
        for ts in old_timers - new_timers:
            self.handle.deleteTimer(ts)
        for ts in new_timers - old_timers:
            self.handle.registerTimer(ts)

    def handleInputRows(self, key: tuple, rows: Iterator[pd.DataFrame],
                        timerValues: TimerValues) -> Iterator[pd.DataFrame]:
        sensor_id = str(key[0])
        st = self._load(sensor_id)
        old_timers = self._timers(st)
        readings = [r for frame in rows for r in _readings(frame)]
        now = _now(timerValues)
        alerts = st.process(readings, now=now)
        # A deadline already behind the watermark would never fire as a timer.
        watermark = timerValues.getCurrentWatermarkInMs()
        if watermark > 0:
            alerts += st.on_watermark(watermark, now=now, details="watermark")
        self._save(st, old_timers)
        if alerts:
            yield _frame(alerts)

    def handleExpiredTimer(self, key: tuple, timerValues: TimerValues,
                           expiredTimerInfo: ExpiredTimerInfo) -> Iterator[pd.DataFrame]:
        sensor_id = str(key[0])
        expiry = expiredTimerInfo.getExpiryTimeInMs()
        st = self._load(sensor_id)
        # Spark deletes the expired timer itself after this call.
        old_timers = self._timers(st) - {expiry}
        if st.last_t_ms is not None and expiry >= st.last_t_ms + self.evict_after_ms:
            for ts in old_timers:
                self.handle.deleteTimer(ts)
            self.scalars.clear()
            self.history.clear()
            return
        alerts = st.on_watermark(max(timerValues.getCurrentWatermarkInMs(), expiry),
                                 now=_now(timerValues), details="watermark")
        self._save(st, old_timers)
        if alerts:
            yield _frame(alerts)

    def close(self) -> None:
        pass


def alert_stream(readings: DataFrame, *, cfg: AlertsConfig, watermark: str) -> DataFrame:
    """Silver readings (stream or batch) -> alert rows in ALERT_SCHEMA.

    Keeps only INPUT_COLUMNS, puts the watermark on event_time, groups by sensor_id and runs
    `AlertProcessor` in event-time mode (append output).
    """
    return (
        readings.select(*INPUT_COLUMNS)
        .withWatermark("event_time", watermark)
        .groupBy("sensor_id")
        .transformWithStateInPandas(
            statefulProcessor=AlertProcessor(cfg, evict_after_ms=cfg.state_ttl_s * 1000),
            outputStructType=ALERT_SCHEMA,
            outputMode="Append",
            timeMode="EventTime",
        )
    )
