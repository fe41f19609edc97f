"""Alerts as a stateful stream transform: silver readings -> alert rows (ALERT_SCHEMA).

`AlertProcessor` (Spark 4 `transformWithStateInPandas`, event-time mode) runs the rules of
`gold.alert_rules.SensorAlertState` for every sensor. Its grouping key is not the sensor but
a bucket of sensors (xxhash64(sensor_id) mod alerts.key_buckets): each call into Python and
each state-server round trip has a fixed cost, and with one key per sensor a batch over
10,000 sensors paid it 10,000 times over (about ten round trips per sensor). Per bucket:

- a MapState sensor_id -> that sensor's scalars and packed state: its history, and in the
  cadence-aware profiles its reporting intervals and adaptive detectors (`pack_state`; read
  and written only for the sensors of this batch: one round trip each way);
- a ValueState index: every sensor of the bucket with the instant its offline deadline counts
  from and its offline flag, and the one timer the bucket has registered.

Time is event time throughout, so a replay gives the same alerts. The bucket's timer sits at
the earliest instant one of its sensors needs: its SENSOR_OFFLINE deadline (last reading +
offline.after_s in the seed profile, + the sensor's learnt offline time in the others) or,
once offline, its eviction (last reading + alerts.state_ttl_s, which deletes an abandoned
sensor's state). The index keeps, per sensor, deadline - offline.after_s while online and the
last reading once offline, so the index's layout is the seed's: an index of the older
version (the last reading throughout) only makes a timer fire early once, and the sweep then
stores the sensor's own deadline. Whenever the bucket runs, with data or on its timer,
every sensor whose instant the watermark has reached is handled. Spark 4.2 refuses state TTL
in event-time mode (STATEFUL_PROCESSOR_INCORRECT_TIME_MODE_TO_ASSIGN_TTL), hence the eviction
instant. A fleet gone silent advances no watermark, so no timer fires: see
`jobs.alerts_job.SilentFleetWatchdog` for the processing-time fallback.

Output (OUTPUT_SCHEMA): the alerts and, in the cadence-aware profiles, a resolution row per
episode ended (KIND_COLUMN; by a reading, or by the eviction of an abandoned sensor's state),
which `jobs.alerts_job.deliver_alerts` applies to gold/alerts and publishes.

No reading, writing or starting of queries here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.streaming import StatefulProcessor, StatefulProcessorHandle
from pyspark.sql.streaming.stateful_processor import ExpiredTimerInfo, TimerValues
from pyspark.sql.types import BooleanType, StringType, StructField, StructType, TimestampType

from gold.alert_rules import (
    SCALAR_FIELDS,
    Alert,
    Reading,
    Resolution,
    SensorAlertState,
    ddl,
    to_ms,
)
from gold.schema import ALERT_SCHEMA, STATIC_ALERT_TYPES
from jobs.config import AlertsConfig
from silver.transform import static_rules

logger = logging.getLogger(__name__)

INPUT_COLUMNS: tuple[str, ...] = (
    "sensor_id", "event_time", "temperature", "humidity", "pressure", "location",
    "partition", "offset",
)
# Whether the real-time query publishes the reading's static alerts (`published_early`).
FRESH_COLUMN = "fresh"
# The processor's output: an alert row, and whether the real-time static-threshold query
# (`static_alert_rows` under `published_early`) has already put it on Kafka.
EARLY_COLUMN = "published_early"
# ... or, with KIND_COLUMN = RESOLUTION, an episode's end (cadence-aware profiles): the opening
# alert's alert_id, sensor_id, alert_type, metric and event_time (its opened_at), the
# sensor's location, resolved_at, severity INFO, no value or threshold, details
# {"resolved_by": cause}, and SINCE_COLUMN: the episode's alerts are those of (sensor,
# type, metric) with event time in [since, resolved_at) (`gold.alert_rules.Resolution`).
KIND_COLUMN = "kind"
ALERT, RESOLUTION = "alert", "resolution"
SINCE_COLUMN = "since"
OUTPUT_SCHEMA = StructType([*ALERT_SCHEMA.fields, StructField(EARLY_COLUMN, BooleanType(), False),
                            StructField(KIND_COLUMN, StringType(), False),
                            StructField(SINCE_COLUMN, TimestampType())])
BUCKET_COLUMN = "sensor_bucket"
# State layout (declared to Spark in `AlertProcessor.init`).
SENSOR_KEY = "sensor_id string"
SENSOR_FIELDS: tuple[tuple[str, str], ...] = (*SCALAR_FIELDS, ("history", "binary"))
# last_ms: the instant the sensor's next instant counts from (see the module docstring).
INDEX_FIELDS: tuple[tuple[str, str], ...] = (
    ("sensors", "array<string>"), ("last_ms", "array<bigint>"), ("offline", "array<boolean>"),
    ("timer_ms", "bigint"),
)


def _now(timer_values: TimerValues) -> datetime:
    ms = timer_values.getCurrentProcessingTimeInMs()
    return datetime.fromtimestamp(ms / 1000, tz=UTC)


def resolution_row(res: Resolution, location: str | None, now: datetime) -> dict:
    """A resolution as an output row (KIND_COLUMN = RESOLUTION)."""
    return {"alert_id": res.alert_id, "sensor_id": res.sensor_id, "location": location,
            "alert_type": res.alert_type, "severity": "INFO", "event_time": res.opened_at,
            "detected_at": now, "metric": res.metric, "value": None, "threshold": None,
            "details": json.dumps({"resolved_by": res.cause}), "resolved_at": res.resolved_at,
            EARLY_COLUMN: False, KIND_COLUMN: RESOLUTION, SINCE_COLUMN: res.covers_from}


def _frame(alerts: list[Alert], early: set[tuple[str, int]],
           resolutions: list[dict] | None = None) -> pd.DataFrame:
    """Alert rows, then resolution rows (`resolution_row`); a static alert of a reading in
    ``early`` (sensor, ms) is marked published."""
    rows = [{**a.as_row(), EARLY_COLUMN: a.alert_type in STATIC_ALERT_TYPES
             and (a.sensor_id, to_ms(a.event_time)) in early, KIND_COLUMN: ALERT,
             SINCE_COLUMN: None} for a in alerts]
    frame = pd.DataFrame(rows + (resolutions or []), columns=OUTPUT_SCHEMA.fieldNames())
    for col in ("event_time", "detected_at", "resolved_at", SINCE_COLUMN):
        frame[col] = pd.to_datetime(frame[col], utc=True)
    for col in ("value", "threshold"):
        frame[col] = frame[col].astype("float64")
    return frame


@dataclass(frozen=True)
class _Batch:
    """One bucket's input rows: each sensor's readings, unique by event time, and the
    (sensor, ms) of the readings whose static alerts the real-time query publishes."""

    readings: dict[str, list[Reading]]
    early: set[tuple[str, int]]


def _batch(frames: Iterable[pd.DataFrame]) -> _Batch:
    """Group rows by sensor; of rows with the same (sensor, event time) keep the first by
    source position (partition, offset), as silver's de-duplication does."""
    rows: list[tuple] = []
    for frame in frames:
        times = pd.to_datetime(frame["event_time"], utc=True)
        ms = (times.astype("int64") // 1_000_000).tolist()  # ns -> ms (pandas 2 keeps ns)
        rows += zip(frame["sensor_id"].tolist(), ms, _positions(frame["partition"]),
                    _positions(frame["offset"]), frame["temperature"].tolist(),
                    frame["humidity"].tolist(), frame["pressure"].tolist(),
                    frame["location"].tolist(), frame[FRESH_COLUMN].tolist(), strict=True)
    rows.sort(key=lambda r: (str(r[0]), r[1], r[2], r[3]))
    out: dict[str, list[Reading]] = {}
    early: set[tuple[str, int]] = set()
    last: tuple[str, int] | None = None
    for sid, t, _part, _off, temp, hum, pres, loc, fresh in rows:
        sid = str(sid)
        if (sid, t) == last:
            continue  # a duplicate of the reading just kept
        last = (sid, t)
        out.setdefault(sid, []).append(Reading(t, temp, hum, pres, loc))
        if fresh:
            early.add((sid, t))
    return _Batch(out, early)


def _positions(values: pd.Series) -> list[int]:
    """Source positions for sorting; a source without them (files, socket) sorts as -1."""
    return [-1 if pd.isna(v) else int(v) for v in values.tolist()]


@dataclass
class _Index:
    """The bucket's sensors: sensor_id -> (base ms, offline); its timer. The sensor's next
    instant is base + offline.after_s while online (its offline deadline), base +
    state_ttl_s once offline (base = its last reading then: its eviction)."""

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
        deadline = st.offline_deadline_ms()
        if deadline is None:  # offline, or SENSOR_OFFLINE not raised: only its eviction is due
            idx.sensors[st.sensor_id] = (st.last_t_ms, True)
        else:
            idx.sensors[st.sensor_id] = (deadline - self.offline_after_ms, False)

    def _sweep(self, idx: _Index, watermark_ms: int, now: datetime,
               done: Iterable[str] = ()) -> tuple[list[Alert], list[dict]]:
        """Sensors not in ``done`` whose offline deadline or eviction the watermark reached:
        their alerts, and the resolution rows of the episodes an eviction ends."""
        skip = set(done)
        out: list[Alert] = []
        ends: list[dict] = []
        for sid in sorted(idx.sensors):
            last, offline = idx.sensors[sid]
            if sid in skip or self._next_instant(last, offline) > watermark_ms:
                continue
            st = None
            if not offline:
                st = self._load(sid)
                out += st.on_watermark(watermark_ms, now=now, details="watermark")
                self._store(idx, st)
                last, offline = idx.sensors[sid]
            if offline and last + self.evict_after_ms <= watermark_ms:
                if self.cfg.adaptive:  # the episodes left open end with the state
                    st = st or self._load(sid)
                    ends += [resolution_row(r, st.location, now)
                             for r in st.expire(last + self.evict_after_ms)]
                self.sensors.removeKey((sid,))
                del idx.sensors[sid]
        return out, ends

    # --- Spark entry points -------------------------------------------------------------

    def handleInputRows(self, key: tuple, rows: Iterator[pd.DataFrame],
                        timerValues: TimerValues) -> Iterator[pd.DataFrame]:
        idx = self._load_index()
        batch = _batch(rows)
        readings = batch.readings
        now = _now(timerValues)
        # A deadline already behind the watermark would never fire as a timer.
        watermark = timerValues.getCurrentWatermarkInMs()
        alerts: list[Alert] = []
        ends: list[dict] = []
        for sid in sorted(readings):
            st = self._load(sid)
            # Readings the sensor's history already holds are duplicates of kept readings.
            fresh = [r for r in readings[sid] if not st.has_reading_at(r.t_ms)]
            alerts += st.process(fresh, now=now)
            if watermark > 0:
                alerts += st.on_watermark(watermark, now=now, details="watermark")
            ends += [resolution_row(r, st.location, now) for r in st.take_resolved()]
            self._store(idx, st)
        if watermark > 0:
            swept, expired = self._sweep(idx, watermark, now, done=readings)
            alerts += swept
            ends += expired
        self._save_index(idx)
        if alerts or ends:
            yield _frame(alerts, batch.early, ends)

    def handleExpiredTimer(self, key: tuple, timerValues: TimerValues,
                           expiredTimerInfo: ExpiredTimerInfo) -> Iterator[pd.DataFrame]:
        idx = self._load_index()
        idx.timer_ms = None  # Spark deletes the expired timer itself after this call
        watermark = max(timerValues.getCurrentWatermarkInMs(),
                        expiredTimerInfo.getExpiryTimeInMs())
        alerts, ends = self._sweep(idx, watermark, _now(timerValues))
        self._save_index(idx)
        if alerts or ends:
            yield _frame(alerts, set(), ends)

    def close(self) -> None:
        pass


def alert_stream(readings: DataFrame, *, cfg: AlertsConfig, watermark: str,
                 early_window_s: int | None = None) -> DataFrame:
    """Valid readings (stream or batch) -> alert and resolution rows in OUTPUT_SCHEMA.

    ``readings`` has INPUT_COLUMNS and ``kafka_timestamp`` (more are dropped) and may hold
    duplicates: of readings with the same (sensor_id, event_time) the rules see the first by
    source position, once.
    Puts the watermark on event_time, groups by the sensor's bucket and runs `AlertProcessor`
    in event-time mode (append output). With ``early_window_s`` the static alerts that
    `static_alert_rows` publishes (readings produced at most that long after their event
    time) come out with ``published_early`` true.
    """
    bucket = F.pmod(F.xxhash64("sensor_id"), F.lit(cfg.key_buckets))
    fresh = (F.lit(False) if early_window_s is None else F.coalesce(
        published_early(F.col("event_time"), F.col("kafka_timestamp"), early_window_s),
        F.lit(False)))
    return (
        readings.select(*INPUT_COLUMNS, fresh.alias(FRESH_COLUMN))
        .withWatermark("event_time", watermark)
        .withColumn(BUCKET_COLUMN, bucket)
        .groupBy(BUCKET_COLUMN)
        .transformWithStateInPandas(
            statefulProcessor=AlertProcessor(cfg, evict_after_ms=cfg.state_ttl_s * 1000),
            outputStructType=OUTPUT_SCHEMA,
            outputMode="Append",
            timeMode="EventTime",
        )
    )


def published_early(event_time: Column, produced: Column, window_s: int) -> Column:
    """Is a reading fresh enough for the real-time query: produced at most ``window_s`` after
    its event time? (The alerts query's watermark drops readings older than that.)"""
    return event_time >= produced - F.expr(f"INTERVAL {int(window_s)} SECONDS")


def alert_id_column(sensor_id: Column, alert_type: Column, metric: Column,
                    event_time: Column) -> Column:
    """`gold.alert_rules.alert_id` as a column expression: the same id for the same alert."""
    ms = F.floor(F.unix_micros(event_time) / 1000).cast("long").cast("string")
    raw = F.concat_ws("|", sensor_id, alert_type, F.coalesce(metric, F.lit("")), ms)
    return F.substring(F.sha2(raw, 256), 1, 32)


def static_alert_rows(readings: DataFrame, *, cfg: AlertsConfig, detected_at: Column
                      ) -> DataFrame:
    """Valid readings -> one row per static-threshold alert (HIGH_TEMP, LOW_TEMP,
    HIGH_HUMIDITY) in ALERT_SCHEMA, each with the alert_id the stateful rules give it.

    Stateless (projections, filter, explode), so it runs in Spark's Real-Time Mode.
    """
    candidates = F.array(*[
        F.when(rule.hit(F.col(rule.metric)), F.struct(
            F.lit(rule.alert_type).alias("alert_type"),
            F.when(rule.is_critical(F.col(rule.metric)), F.lit("CRITICAL"))
            .otherwise(F.lit("WARNING")).alias("severity"),
            F.lit(rule.metric).alias("metric"),
            F.col(rule.metric).alias("value"),
            F.lit(float(rule.threshold)).alias("threshold"),
        )) for rule in static_rules(cfg)
    ])
    hits = readings.select(
        "sensor_id", "location", "event_time",
        F.explode(F.filter(candidates, lambda a: a.isNotNull())).alias("a"))
    cols = {
        "alert_id": alert_id_column(F.col("sensor_id"), F.col("a.alert_type"),
                                    F.col("a.metric"), F.col("event_time")),
        "alert_type": F.col("a.alert_type"), "severity": F.col("a.severity"),
        "detected_at": detected_at, "metric": F.col("a.metric"), "value": F.col("a.value"),
        "threshold": F.col("a.threshold"), "details": F.lit(None), "resolved_at": F.lit(None),
    }
    return hits.select(*[cols.get(f.name, F.col(f.name)).cast(f.dataType).alias(f.name)
                         for f in ALERT_SCHEMA.fields])
