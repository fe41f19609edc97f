"""Active alerts on the dashboard and in /metrics: the open episodes of gold/alerts (real Delta
tables read through DuckDB), and in the seed profile, which has no lifecycle, the seed's open
alerts."""

from __future__ import annotations

from datetime import UTC, timedelta
from pathlib import Path

import pytest
from serving_samples import T0

from dashboard import metrics, panels
from gold.schema import ALERT_SCHEMA
from jobs import tables
from jobs.alerts_job import merge_resolutions
from jobs.config import Config
from jobs.serving import Lakehouse

pytestmark = [pytest.mark.spark]


def _gauge(page: str, alert_type: str) -> int | None:
    prefix = f'{metrics.ACTIVE}{{alert_type="{alert_type}"}} '
    found = [line[len(prefix):] for line in page.splitlines() if line.startswith(prefix)]
    return int(found[0]) if found else None


def test_active_alerts_are_the_open_episodes_of_the_sample_lake(sample_lake: Config) -> None:
    """The sample's HIGH_TEMP episode (three alerts), CONSECUTIVE_ALERTS and HIGH_HUMIDITY are
    resolved; SENSOR_004's SENSOR_OFFLINE is open: one active alert."""
    lake = Lakehouse(sample_lake)
    assert panels.active_alerts(lake) == (panels.OPEN_EPISODES, {"SENSOR_OFFLINE": 1})
    panel = panels.active(lake, panels.Filters())
    assert (panel["status"], panel["total"], panel["meaning"]) == ("ok", 1, "open episodes")
    page = metrics.render(lake)
    assert _gauge(page, "SENSOR_OFFLINE") == 1
    assert _gauge(page, "HIGH_TEMP") == 0, "a resolved episode is not active"
    assert _gauge(page, "ANOMALY") == 0, "every type the profile raises has a series"
    assert f"# TYPE {metrics.ACTIVE} gauge" in page


def test_seed_profile_keeps_the_seeds_open_alerts(sample_lake: Config) -> None:
    """No lifecycle in the seed profile: alerts within gold.open_alert_window_s (15 min) of the
    fleet's newest reading (14:29, gold/sensor_status), whatever their resolved_at."""
    lake = Lakehouse(sample_lake.with_overrides({"alerts.profile": "seed"}))
    assert panels.active_alerts(lake) == (panels.RECENT_ALERTS,
                                          {"HIGH_HUMIDITY": 1, "SENSOR_OFFLINE": 1})
    page = metrics.render(lake)
    assert _gauge(page, "HIGH_HUMIDITY") == 1 and _gauge(page, "RISING_TREND") == 0
    assert "seed profile has no lifecycle" in page


def test_an_episode_stops_counting_once_its_resolution_is_merged(
        spark, base_cfg: Config, tmp_path: Path) -> None:  # noqa: ANN001
    """A HIGH_TEMP episode of two alerts and an OFFLINE, all open: two active alerts; the
    delivery's MERGE of the HIGH_TEMP resolution closes both its alerts: one left."""
    cfg = base_cfg.with_overrides({"paths.lakehouse_root": str(tmp_path / "lake")})
    path = cfg.paths.table(tables.ALERTS)

    def alert(aid: str, kind: str, minute: int, metric: str | None) -> tuple:
        t = T0 + timedelta(minutes=minute)
        return (aid, "S1" if kind == "HIGH_TEMP" else "S2", "loc", kind, "WARNING", t, t,
                metric, 31.0, 30.0, None, None)

    rows = [alert("h1", "HIGH_TEMP", 1, "temperature"), alert("h2", "HIGH_TEMP", 2, "temperature"),
            alert("o1", "SENSOR_OFFLINE", 1, None)]
    spark.createDataFrame(rows, ALERT_SCHEMA).write.format("delta").save(str(path))
    lake = Lakehouse(cfg)
    assert panels.active_alerts(lake)[1] == {"HIGH_TEMP": 1, "SENSOR_OFFLINE": 1}

    end = T0 + timedelta(minutes=3)
    merge_resolutions(spark, path, [{
        "sensor_id": "S1", "alert_type": "HIGH_TEMP", "metric": "temperature",
        "event_time": T0 + timedelta(minutes=1), "since": T0 + timedelta(minutes=1),
        "resolved_at": end}])
    assert panels.active_alerts(lake)[1] == {"SENSOR_OFFLINE": 1}
    page = metrics.render(lake)
    assert _gauge(page, "HIGH_TEMP") == 0 and _gauge(page, "SENSOR_OFFLINE") == 1
    resolved = dict(lake.execute("SELECT alert_id, resolved_at FROM alerts").rows)
    assert resolved["o1"] is None
    # (DuckDB's timestamps: in UTC, the suite's zone, whether or not they carry it)
    assert {resolved["h1"].astimezone(UTC), resolved["h2"].astimezone(UTC)} == {end}


def test_sensor_status_open_alerts_are_the_sensors_open_episodes(spark) -> None:  # noqa: ANN001
    """gold/sensor_status.open_alerts per profile: S1's two HIGH_TEMP alerts are one open
    episode, its resolved RAPID_CHANGE none; the seed counts S1's alerts of the last 15 min."""
    from gold.aggregates import with_status

    now = T0 + timedelta(minutes=30)
    status = spark.createDataFrame([("S1", now), ("S2", now)],
                                   "sensor_id string, last_event_time timestamp")
    rows = [(f"a{i}", "S1", "loc", kind, "WARNING", T0 + timedelta(minutes=m),
             T0 + timedelta(minutes=m), metric, 31.0, 30.0, None, resolved)
            for i, (kind, m, metric, resolved) in enumerate([
                ("HIGH_TEMP", 20, "temperature", None), ("HIGH_TEMP", 21, "temperature", None),
                ("RAPID_CHANGE", 5, "temperature", T0 + timedelta(minutes=6))])]
    alerts = spark.createDataFrame(rows, ALERT_SCHEMA)

    def open_alerts(lifecycle: bool) -> dict[str, int]:
        out = with_status(status, alerts, offline_after_s=600, open_alert_window_s=900,
                          lifecycle=lifecycle)
        return {r.sensor_id: r.open_alerts for r in out.collect()}

    assert open_alerts(True) == {"S1": 1, "S2": 0}
    assert open_alerts(False) == {"S1": 2, "S2": 0}
