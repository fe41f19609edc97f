"""Clean signals of the fleet, vectorised over sensors for one reporting tick.

Temperature: ``21 + bias + amplitude·cos(2π(hour − peak)/24) + U(±noise)``. With the fleet's
parameter bounds (fleet.py) a clean temperature lies in [15.9, 26.1] °C.
Humidity: ``base − slope·(daily swing) + U(±noise)`` — it moves against temperature and lies in
[24, 66] %. Pressure: a slow regional random walk (mean-reverting knots every 3 hours, joined
by cosine interpolation so it has no kinks) around 1013 hPa, plus a per-sensor offset and noise.

Noise is uniform, so it is bounded: a clean reading is never more than about 2.5 trailing
standard deviations from its trailing mean, and never moves 5 °C within a minute.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from generator.fleet import BASE_TEMPERATURE, Sensor

MS_PER_DAY = 86_400_000
MS_PER_HOUR = 3_600_000
PRESSURE_MEAN = 1013.0
PRESSURE_KNOT_MS = 3 * MS_PER_HOUR
PRESSURE_REVERSION = 0.8
PRESSURE_STEP = 1.2


class PressureWalk:
    """The regional pressure anomaly (hPa): knots drawn in order from its own generator."""

    def __init__(self, rng: np.random.Generator, start_ms: int) -> None:
        self._rng = rng
        self._origin = start_ms - start_ms % PRESSURE_KNOT_MS
        self._knots: list[float] = [float(rng.normal(0.0, 2.0))]

    def _knot(self, j: int) -> float:
        while len(self._knots) <= j:
            step = float(self._rng.normal(0, PRESSURE_STEP))
            self._knots.append(PRESSURE_REVERSION * self._knots[-1] + step)
        return self._knots[j]

    def at(self, t_ms: int) -> float:
        j, rem = divmod(t_ms - self._origin, PRESSURE_KNOT_MS)
        j = max(j, 0)
        a, b = self._knot(j), self._knot(j + 1)
        w = (1.0 - math.cos(math.pi * rem / PRESSURE_KNOT_MS)) / 2.0
        return a + (b - a) * w


class FleetSignals:
    """Per-sensor parameters as arrays (in a fixed sensor order) and the tick computation."""

    def __init__(self, sensors: Sequence[Sensor]) -> None:
        def arr(name: str) -> np.ndarray:
            return np.array([getattr(s, name) for s in sensors], dtype=np.float64)

        self.mean_temp = BASE_TEMPERATURE + arr("bias")
        self.amplitude = arr("amplitude")
        self.peak_hour = arr("peak_hour")
        self.temp_noise = arr("temp_noise")
        self.humidity_base = arr("humidity_base")
        self.humidity_slope = arr("humidity_slope")
        self.humidity_noise = arr("humidity_noise")
        self.pressure_offset = arr("pressure_offset") + PRESSURE_MEAN
        self.pressure_noise = arr("pressure_noise")

    def tick(
        self, t_ms: np.ndarray, pressure_anomaly: float, u: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Clean readings at times ``t_ms`` (one per sensor).

        ``u`` holds three rows of uniform [0, 1) draws (temperature, humidity, pressure noise).
        Returns (temperature signal without noise, temperature noise, temperature, humidity,
        pressure).
        """
        hour = (t_ms % MS_PER_DAY) / MS_PER_HOUR
        swing = self.amplitude * np.cos(2.0 * np.pi * (hour - self.peak_hour) / 24.0)
        signal = self.mean_temp + swing
        t_noise = (2.0 * u[0] - 1.0) * self.temp_noise
        temperature = signal + t_noise
        h_noise = (2.0 * u[1] - 1.0) * self.humidity_noise
        humidity = self.humidity_base - self.humidity_slope * swing + h_noise
        p_noise = (2.0 * u[2] - 1.0) * self.pressure_noise
        pressure = self.pressure_offset + pressure_anomaly + p_noise
        return signal, t_noise, temperature, humidity, pressure
