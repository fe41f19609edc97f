"""The dashboard's panels: one DuckDB query (or a few) each, through `jobs.serving.Lakehouse`.

Every panel returns a JSON-ready dict with `status`: `ok`, `waiting` (its table does not exist
yet; `missing` names it) or `error`. Time windows are anchored on the newest row of the table
(event time), not on the wall clock, so a replayed or paused fleet still shows its data.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from jobs.serving import Lakehouse, ServingError, _plain, latency_columns
from jobs.tables import VIEWS

logger = logging.getLogger(__name__)

Panel = dict[str, Any]


@dataclass(frozen=True)
class Filters:
    """What the page asks for; `minutes` 0 means the whole table."""

    minutes: int = 60
    alert_type: str | None = None
    severity: str | None = None
    location: str | None = None
    sensor: str | None = None
    alert_limit: int = 200


def ts(value: Any) -> str | None:
    """UTC timestamp as plotly.js reads it (no zone suffix): 'YYYY-MM-DD HH:MM:SS.fff'."""
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.strftime("%Y-%m-%d %H:%M:%S.") + f"{value.microsecond // 1000:03d}"
    return str(value)


def _records(columns: list[str], rows: list[tuple]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        rec = {}
        for c, v in zip(columns, row, strict=True):
            rec[c] = ts(v) if isinstance(v, datetime) else _plain(v)
        out.append(rec)
    return out


def _waiting(*views: str) -> Panel:
    tables = [VIEWS[v] for v in views]
    return {"status": "waiting", "missing": tables,
            "message": f"waiting for data: {', '.join(tables)} not created yet"}


def _since(column: str, table: str, minutes: int, where: str = "") -> str:
    """SQL predicate: `column` within `minutes` of the newest value in `table`."""
    if minutes <= 0:
        return "TRUE"
    return (f"{column} >= (SELECT max({column}) FROM {table} {where}) "
            f"- INTERVAL {int(minutes)} MINUTE")


def pipeline(lake: Lakehouse, f: Filters) -> Panel:
    """Per query over time: rows/s, produce -> commit latency (the oldest record of each batch,
    from its Kafka timestamp) and data age (newest event time -> commit); each query's latest
    batch."""
    if not lake.has("pipeline_metrics"):
        return _waiting("pipeline_metrics")
    res = lake.execute(
        "SELECT query_name, batch_time, batch_id, input_rows,"
        " CAST(input_rows_per_second AS DOUBLE) AS input_rows_per_second,"
        " CAST(processed_rows_per_second AS DOUBLE) AS processed_rows_per_second,"
        " CAST(batch_duration_ms AS DOUBLE) AS batch_duration_ms,"
        f" {latency_columns(lake)}"
        f" FROM pipeline_metrics WHERE {_since('batch_time', 'pipeline_metrics', f.minutes)}"
        " ORDER BY query_name, batch_time, batch_id")
    series: dict[str, dict[str, list]] = {}
    for rec in _records(res.columns, res.rows):
        s = series.setdefault(rec["query_name"], {
            "t": [], "rows_per_second": [], "produce_to_commit_ms": [],
            "produce_to_commit_min_ms": [], "data_age_ms": []})
        s["t"].append(rec["batch_time"])
        s["rows_per_second"].append(rec["input_rows_per_second"])
        for key in ("produce_to_commit_ms", "produce_to_commit_min_ms", "data_age_ms"):
            s[key].append(rec[key])
    latest = latest_batches(lake)
    return {"status": "ok", "series": series, "latest": _records(latest.columns, latest.rows)}


def latest_batches(lake: Lakehouse):  # noqa: ANN201 - jobs.serving.Result
    """The newest micro-batch of each query (shared with /metrics)."""
    return lake.execute(
        "SELECT query_name, batch_id, batch_time, input_rows,"
        " CAST(input_rows_per_second AS DOUBLE) AS input_rows_per_second,"
        " CAST(processed_rows_per_second AS DOUBLE) AS processed_rows_per_second,"
        " CAST(batch_duration_ms AS DOUBLE) AS batch_duration_ms,"
        f" {latency_columns(lake)},"
        " rows_dropped_late, state_rows"
        " FROM pipeline_metrics"
        " QUALIFY row_number() OVER (PARTITION BY query_name"
        "                            ORDER BY batch_time DESC, batch_id DESC) = 1"
        " ORDER BY query_name")


def alerts(lake: Lakehouse, f: Filters) -> Panel:
    """Alerts of the window, newest first, filtered; the filter choices; counts."""
    if not lake.has("alerts"):
        return _waiting("alerts")
    window = _since("event_time", "alerts", f.minutes)
    where, params = [window], []
    for column, value in (("alert_type", f.alert_type), ("severity", f.severity),
                          ("location", f.location)):
        if value:
            where.append(f"{column} = ?")
            params.append(value)
    cond = " AND ".join(where)
    total = lake.execute(f"SELECT count(*) FROM alerts WHERE {cond}", params).rows[0][0]
    period = lake.execute(f"SELECT count(*) FROM alerts WHERE {window}").rows[0][0]
    res = lake.execute(
        "SELECT alert_id, event_time, sensor_id, location, alert_type, severity, metric,"
        f" value, threshold, details FROM alerts WHERE {cond}"
        f" ORDER BY event_time DESC, alert_id LIMIT {int(f.alert_limit)}", params)
    options = {}
    for column in ("alert_type", "severity", "location"):
        opts = lake.execute(f"SELECT DISTINCT {column} FROM alerts WHERE {window} "
                            f"AND {column} IS NOT NULL ORDER BY 1")
        options[column] = [r[0] for r in opts.rows]
    return {"status": "ok", "total": total, "total_period": period,
            "rows": _records(res.columns, res.rows), "options": options}


def sensors(lake: Lakehouse, f: Filters) -> Panel:
    """The sensors to choose from and the chosen one (default: most alerts in the window)."""
    if lake.has("sensor_status"):
        ids = [r[0] for r in lake.execute(
            "SELECT DISTINCT sensor_id FROM sensor_status ORDER BY 1").rows]
    elif lake.has("silver_readings"):
        ids = [r[0] for r in lake.execute(
            "SELECT DISTINCT sensor_id FROM silver_readings ORDER BY 1").rows]
    else:
        return _waiting("sensor_status", "silver_readings")
    chosen = f.sensor if f.sensor in ids else None
    if chosen is None and lake.has("alerts"):
        top = lake.execute(
            "SELECT sensor_id FROM alerts WHERE "
            f"{_since('event_time', 'alerts', f.minutes)} AND metric IS NOT NULL"
            " GROUP BY sensor_id ORDER BY count(*) DESC, sensor_id LIMIT 1").rows
        chosen = top[0][0] if top and top[0][0] in ids else None
    if chosen is None and ids:
        chosen = ids[0]
    return {"status": "ok", "sensors": ids, "selected": chosen}


def sensor_series(lake: Lakehouse, f: Filters, sensor: str | None) -> Panel:
    """Temperature/humidity/pressure of one sensor over the window, with its alerts."""
    if sensor is None:
        return {"status": "waiting", "missing": [], "message": "waiting for data: no sensors"}
    if lake.has("silver_readings"):
        source, table, t = "silver/sensor_readings", "silver_readings", "event_time"
        cols = "temperature, humidity, pressure"
    elif lake.has("sensor_stats_5m"):
        source, table, t = "gold/sensor_stats_5m", "sensor_stats_5m", "window_start"
        cols = "avg_temperature AS temperature, avg_humidity AS humidity, avg_pressure AS pressure"
    else:
        return _waiting("silver_readings", "sensor_stats_5m")
    since = _since(t, table, f.minutes, "WHERE sensor_id = $sensor")
    res = lake.execute(
        f"SELECT * FROM (SELECT {t} AS t, {cols} FROM {table}"
        f" WHERE sensor_id = $sensor AND {since} ORDER BY t DESC LIMIT 5000) ORDER BY t",
        {"sensor": sensor})  # type: ignore[arg-type]
    points = _records(res.columns, res.rows)
    marks: list[dict[str, Any]] = []
    if lake.has("alerts") and res.rows:
        first = min(r[0] for r in res.rows)
        a = lake.execute(
            "SELECT alert_id, event_time, alert_type, severity, metric, value FROM alerts"
            " WHERE sensor_id = ? AND event_time >= ? ORDER BY event_time, alert_id",
            [sensor, first])
        marks = _records(a.columns, a.rows)
    return {"status": "ok", "sensor": sensor, "source": source,
            "t": [p["t"] for p in points],
            **{m: [p[m] for p in points] for m in ("temperature", "humidity", "pressure")},
            "alerts": marks}


def locations(lake: Lakehouse, f: Filters) -> Panel:
    """Min/max/avg of each metric per location in its newest 5-minute window."""
    if not lake.has("location_stats_5m"):
        return _waiting("location_stats_5m")
    res = lake.execute(
        "SELECT location, window_start, window_end, readings, sensors,"
        " min_temperature, max_temperature, avg_temperature, min_humidity, max_humidity,"
        " min_pressure, max_pressure FROM location_stats_5m"
        " QUALIFY row_number() OVER (PARTITION BY location ORDER BY window_start DESC) = 1"
        " ORDER BY location")
    return {"status": "ok", "rows": _records(res.columns, res.rows)}


def alert_counts(lake: Lakehouse, f: Filters) -> Panel:
    """Alerts per type and severity over the windows of the period."""
    if not lake.has("alert_counts_5m"):
        return _waiting("alert_counts_5m")
    res = lake.execute(
        "SELECT alert_type, severity, CAST(sum(alerts) AS BIGINT) AS alerts FROM alert_counts_5m"
        f" WHERE {_since('window_start', 'alert_counts_5m', f.minutes)}"
        " GROUP BY alert_type, severity ORDER BY alert_type, severity")
    by_type = lake.execute(
        "SELECT alert_type, CAST(sum(alerts) AS BIGINT) AS alerts FROM alert_counts_5m"
        f" WHERE {_since('window_start', 'alert_counts_5m', f.minutes)}"
        " GROUP BY alert_type ORDER BY alerts DESC, alert_type")
    return {"status": "ok", "rows": _records(res.columns, res.rows),
            "by_type": _records(by_type.columns, by_type.rows)}


def quarantine(lake: Lakehouse, f: Filters) -> Panel:
    """How often each rejection reason occurs among quarantined records of the period."""
    if not lake.has("quarantine"):
        return _waiting("quarantine")
    window = _since("quarantined_at", "quarantine", f.minutes)
    records = lake.execute(f"SELECT count(*) FROM quarantine WHERE {window}").rows[0][0]
    res = lake.execute(
        "SELECT reason, count(*) AS records FROM"
        f" (SELECT unnest(reasons) AS reason FROM quarantine WHERE {window})"
        " GROUP BY reason ORDER BY records DESC, reason")
    return {"status": "ok", "records": records, "rows": _records(res.columns, res.rows)}


def status(lake: Lakehouse, f: Filters) -> Panel:
    """ONLINE/OFFLINE counts and each sensor's last reading (offline first)."""
    if not lake.has("sensor_status"):
        return _waiting("sensor_status")
    counts = lake.execute(
        "SELECT status, count(*) AS sensors FROM sensor_status GROUP BY status ORDER BY status")
    res = lake.execute(
        "SELECT sensor_id, location, status, last_event_time, last_temperature,"
        " last_humidity, last_pressure, open_alerts FROM sensor_status"
        " ORDER BY status = 'ONLINE', sensor_id")
    return {"status": "ok", "counts": {r[0]: r[1] for r in counts.rows},
            "rows": _records(res.columns, res.rows)}


# What "active alerts" counts (`active_alerts`), by profile.
OPEN_EPISODES = "open episodes"
RECENT_ALERTS = "recent alerts"


def active_alerts(lake: Lakehouse) -> tuple[str, dict[str, int]] | None:
    """Active alerts by alert type, and what they are; None before gold/alerts exists.

    With the lifecycle (every profile but `seed`): the open episodes, one per (sensor_id,
    alert_type, metric) that has an alert whose ``resolved_at`` is null (a static threshold's
    episode holds an alert per breaching reading; SENSOR_RECOVERED is born resolved). The seed
    profile has no lifecycle (``resolved_at`` is always null), so it keeps the seed's open
    alerts (`gold/sensor_status.open_alerts`): alerts whose event time is within
    gold.open_alert_window_s of the fleet's newest reading (of the newest alert while
    gold/sensor_status does not exist yet). So does a gold/alerts without the column (an older
    table the alerts query has not migrated yet).
    """
    if not lake.has("alerts"):
        return None
    columns = lake.execute("SELECT * FROM alerts LIMIT 0").columns
    if lake.cfg.alerts.adaptive and "resolved_at" in columns:
        res = lake.execute(
            "SELECT alert_type, count(DISTINCT (sensor_id, coalesce(metric, ''))) FROM alerts"
            " WHERE resolved_at IS NULL GROUP BY alert_type ORDER BY alert_type")
        return OPEN_EPISODES, {r[0]: int(r[1]) for r in res.rows}
    newest = ("(SELECT max(last_event_time) FROM sensor_status)" if lake.has("sensor_status")
              else "(SELECT max(event_time) FROM alerts)")
    window = int(lake.cfg.gold.open_alert_window_s)
    res = lake.execute(
        f"SELECT alert_type, count(*) FROM alerts WHERE event_time >= {newest}"
        f" - INTERVAL {window} SECOND GROUP BY alert_type ORDER BY alert_type")
    return RECENT_ALERTS, {r[0]: int(r[1]) for r in res.rows}


def active(lake: Lakehouse, f: Filters) -> Panel:
    """Active alerts (`active_alerts`): the total, by type, and what is counted."""
    found = active_alerts(lake)
    if found is None:
        return _waiting("alerts")
    meaning, by_type = found
    return {"status": "ok", "total": sum(by_type.values()), "meaning": meaning,
            "by_type": [{"alert_type": k, "active": v} for k, v in by_type.items()]}


PANELS: dict[str, Callable[[Lakehouse, Filters], Panel]] = {
    "active": active,
    "pipeline": pipeline,
    "alerts": alerts,
    "locations": locations,
    "alert_counts": alert_counts,
    "quarantine": quarantine,
    "status": status,
}


def _safe(fn: Callable[[], Panel], name: str) -> Panel:
    try:
        return fn()
    except ServingError as exc:
        # A table being rewritten or a schema not yet as expected must not blank the page.
        # The error's text (SQL, paths) is for the log only, never for the client.
        logger.warning("panel %s failed: %s", name, exc)
        return {"status": "error", "message": "this panel's query failed (see the dashboard log)"}


def all_panels(lake: Lakehouse, f: Filters) -> dict[str, Any]:
    """Every panel, each computed on its own so one failing table spares the others."""
    lake.refresh()  # tables created since the last refresh get their views
    out: dict[str, Any] = {name: _safe(lambda fn=fn: fn(lake, f), name)
                           for name, fn in PANELS.items()}
    choice = _safe(lambda: sensors(lake, f), "sensors")
    out["sensors"] = choice
    selected = choice.get("selected") if choice.get("status") == "ok" else None
    out["sensor"] = (_safe(lambda: sensor_series(lake, f, selected), "sensor")
                     if choice.get("status") == "ok" else choice)
    out["generated_at"] = ts(datetime.now(tz=UTC))
    out["tables"] = {"available": sorted(lake.available), "missing": sorted(lake.missing)}
    return out
