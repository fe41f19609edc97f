"""The simulated sensor fleet: a Faker-made site plan and each sensor's signal character.

``make_fleet(n, seed)`` is deterministic: the same (n, seed) gives the same sensors, the same
registry and the same signal parameters. The registry CSV has exactly the columns of
``silver.schema.REGISTRY_SCHEMA``; silver loads it as a static dimension.
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from faker import Faker

logger = logging.getLogger(__name__)

# Column order of REGISTRY_SCHEMA (silver/schema.py). Kept here as plain names so the generator
# process need not import pyspark; tests/test_generator.py asserts they stay equal.
REGISTRY_FIELDS: tuple[str, ...] = ("sensor_id", "location", "building", "floor", "room", "zone")

# Clean-signal envelope (°C, %). Every clean reading stays well inside the static alert
# thresholds (10..30 °C, humidity <= 80 %) — see generator/signals.py for the bound.
BASE_TEMPERATURE = 21.0
MAX_BIAS = 1.5
MAX_DAILY_AMPLITUDE = 3.0
MAX_TEMP_NOISE = 0.6
ZONES: tuple[str, ...] = (
    "Office", "Open Space", "Meeting Room", "Laboratory", "Server Room", "Storage",
    "Lobby", "Kitchen", "Workshop", "Archive",
)
SENSORS_PER_ROOM = 2
ROOMS_PER_FLOOR = 12


@dataclass(frozen=True, slots=True)
class Sensor:
    """One sensor: its registry row and the parameters of its clean signal."""

    sensor_id: str
    location: str
    building: str
    floor: int
    room: str
    zone: str
    # signal character
    bias: float  # °C added to the fleet's base temperature
    amplitude: float  # °C, half peak-to-peak of the daily cycle
    peak_hour: float  # UTC hour of the daily maximum
    temp_noise: float  # half-width of the uniform temperature noise, °C
    humidity_base: float  # % at the sensor's mean temperature
    humidity_slope: float  # % per °C, humidity falls when temperature rises
    humidity_noise: float  # half-width of the uniform humidity noise, %
    pressure_offset: float  # hPa, altitude/calibration offset from the regional pressure
    pressure_noise: float  # half-width of the uniform pressure noise, hPa
    phase: float  # 0..1, where in each reporting interval this sensor's reading falls

    def registry_row(self) -> dict[str, object]:
        return {f: getattr(self, f) for f in REGISTRY_FIELDS}


def building_label(index: int) -> str:
    """0 -> A, 25 -> Z, 26 -> AA … (spreadsheet columns), so any fleet size has names."""
    label = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        label = chr(ord("A") + rem) + label
    return label


def sensor_id_width(n: int) -> int:
    return max(3, len(str(n)))


def make_fleet(n: int, seed: int) -> list[Sensor]:
    """N sensors over a site plan of buildings, floors and rooms, deterministic from ``seed``."""
    if n < 1:
        raise ValueError(f"a fleet needs at least one sensor, got {n}")
    fake = Faker()
    fake.seed_instance(seed)
    rng = random.Random(seed)
    width = sensor_id_width(n)
    sensors: list[Sensor] = []
    building = 0
    while len(sensors) < n:
        floors = fake.random_int(2, 8)
        label = building_label(building)
        for floor in range(1, floors + 1):
            for room_no in range(1, ROOMS_PER_FLOOR + 1):
                zone = fake.random_element(ZONES)
                room = f"{label}{floor}.{room_no:02d} {zone}"
                for _ in range(SENSORS_PER_ROOM):
                    if len(sensors) == n:
                        break
                    sensors.append(_sensor(len(sensors) + 1, width, label, floor, room, zone, rng))
        building += 1
    logger.info("fleet of %d sensors in %d buildings (seed %d)", n, building, seed)
    return sensors


def _sensor(
    number: int, width: int, label: str, floor: int, room: str, zone: str, rng: random.Random
) -> Sensor:
    return Sensor(
        sensor_id=f"SENSOR_{number:0{width}d}",
        location=f"Building {label} - Floor {floor}",
        building=f"Building {label}",
        floor=floor,
        room=room,
        zone=zone,
        bias=round(rng.uniform(-MAX_BIAS, MAX_BIAS), 3),
        amplitude=round(rng.uniform(1.0, MAX_DAILY_AMPLITUDE), 3),
        peak_hour=round(rng.uniform(13.0, 17.0), 3),
        temp_noise=round(rng.uniform(0.3, MAX_TEMP_NOISE), 3),
        humidity_base=round(rng.uniform(35.0, 55.0), 3),
        humidity_slope=round(rng.uniform(1.5, 2.5), 3),
        humidity_noise=round(rng.uniform(0.5, 1.5), 3),
        pressure_offset=round(rng.uniform(-3.0, 3.0), 3),
        pressure_noise=round(rng.uniform(0.1, 0.2), 3),
        phase=rng.random(),
    )


def write_registry_csv(sensors: Iterable[Sensor], path: Path | str) -> Path:
    """Write the registry (REGISTRY_SCHEMA columns, header first) atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(REGISTRY_FIELDS))
        writer.writeheader()
        for sensor in sensors:
            writer.writerow(sensor.registry_row())
    tmp.replace(path)
    return path


def read_registry_csv(path: Path | str) -> list[dict[str, object]]:
    """The registry rows back (floor as int); used by tests and tools."""
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return [{**row, "floor": int(row["floor"])} for row in csv.DictReader(fh)]


def json_string(text: str) -> str:
    """A JSON string literal (quotes included), for pre-serialised message templates."""
    return json.dumps(text, ensure_ascii=False)


def by_phase(sensors: Sequence[Sensor]) -> list[int]:
    """Indices of ``sensors`` in the order their readings fall within an interval."""
    return sorted(range(len(sensors)), key=lambda i: (sensors[i].phase, i))
