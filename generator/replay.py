"""Replay of real sensor data as the pipeline's wire format, preserving event time.

Out of the box: the Beijing Multi-Site Air-Quality Data (12 monitoring stations, hourly,
2013-03-01 to 2017-02-28) in ``<data dir>/beijing-prsa/``. Each station becomes a sensor
(``BEIJING_AOTIZHONGXIN``, location ``Beijing - Aotizhongxin``); TEMP -> temperature, PRES ->
pressure, and relative humidity is derived from TEMP and DEWP (dew point) with the Magnus
formula. Event time is the row's year/month/day/hour in Beijing time (Asia/Shanghai, UTC+8 all
year) converted to UTC. Rows missing TEMP, PRES or DEWP are skipped and counted.

Any other CSV replays through a column mapping (``--mapping col=field,...``), see
``read_mapped_csv``.

Data attribution (the dataset is licensed CC BY 4.0, which asks for it wherever the data or a
part of it is shipped or shown):

    Beijing Multi-Site Air-Quality Data, UCI Machine Learning Repository, dataset 501.
    Zhang, S., Guo, B., Dong, A., He, J., Xu, Z. and Chen, S. X. (2017) "Cautionary tales on
    air-quality improvement in Beijing", Proceedings of the Royal Society A 473: 20170457,
    doi:10.1098/rspa.2017.0457.
    Licence: Creative Commons Attribution 4.0 International (CC BY 4.0).
"""

from __future__ import annotations

import csv
import heapq
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path

from generator.stream import Message, iso, ms_to_datetime

logger = logging.getLogger(__name__)

ATTRIBUTION = (
    "Data: Beijing Multi-Site Air-Quality Data (UCI Machine Learning Repository, dataset 501), "
    "CC BY 4.0. Zhang, Guo, Dong, He, Xu & Chen, \"Cautionary tales on air-quality improvement "
    "in Beijing\", Proc. R. Soc. A 473 (2017) 20170457, doi:10.1098/rspa.2017.0457."
)
BEIJING = "beijing"
BEIJING_DIR = "beijing-prsa"
BEIJING_TZ: tzinfo = timezone(timedelta(hours=8), "Asia/Shanghai")  # no DST since 1991
MISSING = {"", "NA", "NaN", "nan", "null", "NULL", "None"}
WIRE_FIELDS: tuple[str, ...] = (
    "sensor_id", "timestamp", "temperature", "humidity", "pressure", "location",
)
MAPPABLE_FIELDS: frozenset[str] = frozenset(WIRE_FIELDS) | {"dewpoint"}

# Magnus formula coefficients over water (Alduchov & Eskridge 1996), valid -45..60 °C.
MAGNUS_A = 17.625
MAGNUS_B = 243.04


def relative_humidity(temperature_c: float, dewpoint_c: float) -> float:
    """Relative humidity (%) from temperature and dew point (Magnus), capped to [0, 100]."""
    gamma_d = MAGNUS_A * dewpoint_c / (MAGNUS_B + dewpoint_c)
    gamma_t = MAGNUS_A * temperature_c / (MAGNUS_B + temperature_c)
    return max(0.0, min(100.0, 100.0 * math.exp(gamma_d - gamma_t)))


@dataclass(frozen=True, slots=True)
class Reading:
    sensor_id: str
    location: str
    event_ms: int
    temperature: float
    humidity: float
    pressure: float


@dataclass
class ReplayStats:
    rows: int = 0
    readings: int = 0
    skipped: Counter[str] = field(default_factory=Counter)

    def describe(self) -> str:
        skipped = ", ".join(f"{why}: {n:,}" for why, n in sorted(self.skipped.items()))
        return (f"{self.rows:,} rows read, {self.readings:,} readings, "
                f"{sum(self.skipped.values()):,} skipped" + (f" ({skipped})" if skipped else ""))


def _float(text: str | None) -> float | None:
    if text is None or text.strip() in MISSING:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# -- Beijing -----------------------------------------------------------------------------------


def beijing_files(data_dir: Path, stations: Sequence[str] | None = None) -> list[Path]:
    """The station CSVs under ``<data_dir>/beijing-prsa`` (all, or those named)."""
    folder = data_dir / BEIJING_DIR
    files = sorted(folder.glob("PRSA_Data_*.csv"))
    if not files:
        raise FileNotFoundError(
            f"no Beijing station files (PRSA_Data_*.csv) in {folder}; pass --data-dir"
        )
    if stations:
        wanted = {s.strip().lower() for s in stations}
        files = [f for f in files if f.name.split("_")[2].lower() in wanted]
        found = {f.name.split("_")[2].lower() for f in files}
        if wanted - found:
            raise FileNotFoundError(f"no file for station(s) {sorted(wanted - found)} in {folder}")
    return files


def beijing_sensor(station: str) -> tuple[str, str]:
    """Station name -> (sensor_id, location)."""
    name = station.strip()
    return f"BEIJING_{name.upper().replace(' ', '_')}", f"Beijing - {name}"


def read_beijing_csv(path: Path, stats: ReplayStats) -> Iterator[Reading]:
    """One station file in file order (which is time order)."""
    with path.open(newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            stats.rows += 1
            temp, pres, dewp = _float(row.get("TEMP")), _float(row.get("PRES")), _float(
                row.get("DEWP"))
            missing = [n for n, v in (("TEMP", temp), ("PRES", pres), ("DEWP", dewp)) if v is None]
            if missing:
                stats.skipped[f"missing {'/'.join(missing)}"] += 1
                continue
            assert temp is not None and pres is not None and dewp is not None
            try:
                local = datetime(int(row["year"]), int(row["month"]), int(row["day"]),
                                 int(row["hour"]), tzinfo=BEIJING_TZ)
            except (KeyError, TypeError, ValueError):
                stats.skipped["bad date"] += 1
                continue
            sensor_id, location = beijing_sensor(row.get("station") or path.name.split("_")[2])
            stats.readings += 1
            yield Reading(sensor_id, location, _epoch_ms(local), temp,
                          round(relative_humidity(temp, dewp), 2), pres)


def read_beijing(
    data_dir: Path, stations: Sequence[str] | None, stats: ReplayStats
) -> Iterator[Reading]:
    """All chosen stations merged into one stream in event-time order."""
    files = beijing_files(data_dir, stations)
    logger.info("replaying %d Beijing station file(s) from %s", len(files), data_dir / BEIJING_DIR)
    return merge_by_time(read_beijing_csv(f, stats) for f in files)


# -- any CSV -----------------------------------------------------------------------------------


def parse_mapping(text: str | None) -> dict[str, str]:
    """``"col=field,col2=field2"`` -> {col: field}; fields are wire fields or ``dewpoint``."""
    mapping: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        col, sep, name = item.partition("=")
        if not sep or not col.strip() or name.strip() not in MAPPABLE_FIELDS:
            raise ValueError(
                f"bad mapping {item!r}: expected column=field with field one of "
                f"{', '.join(sorted(MAPPABLE_FIELDS))}"
            )
        mapping[col.strip()] = name.strip()
    return mapping


def read_mapped_csv(
    path: Path, mapping: Mapping[str, str], stats: ReplayStats, *, tz: tzinfo = UTC,
) -> Iterator[Reading]:
    """A CSV whose columns map to wire fields (columns already named like a field map to it).

    ``timestamp`` is ISO-8601 (a naive one is read in ``tz``); ``humidity`` may come from
    ``dewpoint`` and ``temperature`` (Magnus); without a ``sensor_id`` column the file's name is
    the sensor, without ``location`` the location is empty. Rows are replayed in event-time
    order; rows missing timestamp, temperature, humidity or pressure are skipped and counted.
    """
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        columns = reader.fieldnames or []
        cols = {name: col for col, name in mapping.items()}
        for col in columns:
            if col in MAPPABLE_FIELDS and col not in cols and col not in mapping:
                cols[col] = col
        unknown = [c for c in mapping if c not in columns]
        if unknown:
            raise ValueError(f"{path.name} has no column(s) {unknown}; it has {columns}")
        for need in ("timestamp", "temperature", "pressure"):
            if need not in cols:
                raise ValueError(f"no column maps to {need!r} in {path.name} (columns {columns})")
        if "humidity" not in cols and "dewpoint" not in cols:
            raise ValueError(f"no column maps to 'humidity' or 'dewpoint' in {path.name}")
        default_id = path.stem.upper().replace("-", "_").replace(" ", "_")
        out: list[Reading] = []
        for row in reader:
            stats.rows += 1
            reading = _mapped_row(row, cols, default_id, tz, stats)
            if reading is not None:
                out.append(reading)
    out.sort(key=lambda r: (r.event_ms, r.sensor_id))
    stats.readings += len(out)
    return iter(out)


def _mapped_row(
    row: Mapping[str, str], cols: Mapping[str, str], default_id: str, tz: tzinfo,
    stats: ReplayStats,
) -> Reading | None:
    def get(name: str) -> str | None:
        col = cols.get(name)
        return None if col is None else row.get(col)

    temp, pres = _float(get("temperature")), _float(get("pressure"))
    hum = _float(get("humidity"))
    if hum is None and temp is not None and (dew := _float(get("dewpoint"))) is not None:
        hum = round(relative_humidity(temp, dew), 2)
    missing = [n for n, v in (("temperature", temp), ("humidity", hum), ("pressure", pres))
               if v is None]
    if missing:
        stats.skipped[f"missing {'/'.join(missing)}"] += 1
        return None
    try:
        ts = datetime.fromisoformat((get("timestamp") or "").strip().replace("Z", "+00:00"))
    except ValueError:
        stats.skipped["bad timestamp"] += 1
        return None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=tz)
    assert temp is not None and hum is not None and pres is not None
    return Reading((get("sensor_id") or default_id).strip(), (get("location") or "").strip(),
                   _epoch_ms(ts), temp, hum, pres)


# -- to messages -------------------------------------------------------------------------------


def merge_by_time(streams: Iterable[Iterator[Reading]]) -> Iterator[Reading]:
    return heapq.merge(*streams, key=lambda r: (r.event_ms, r.sensor_id))


def replay_messages(readings: Iterable[Reading], limit: int | None = None) -> Iterator[Message]:
    """Readings -> wire messages (key = sensor_id), at most ``limit`` of them."""
    for n, r in enumerate(readings):
        if limit is not None and n >= limit:
            return
        body = {"sensor_id": r.sensor_id, "timestamp": iso(r.event_ms),
                "temperature": r.temperature, "humidity": r.humidity, "pressure": r.pressure,
                "location": r.location}
        yield Message(r.sensor_id.encode(), json.dumps(body, ensure_ascii=False).encode(),
                      r.sensor_id, ms_to_datetime(r.event_ms), None)


def station_registry(readings_sensors: Iterable[tuple[str, str]]) -> list[dict[str, object]]:
    """Registry rows (REGISTRY_SCHEMA columns) for replayed sensors: no building plan."""
    return [{"sensor_id": sid, "location": loc, "building": None, "floor": None, "room": None,
             "zone": loc.split(" - ", 1)[-1] or None}
            for sid, loc in sorted(set(readings_sensors))]


def _epoch_ms(t: datetime) -> int:
    return round(t.timestamp() * 1000)
