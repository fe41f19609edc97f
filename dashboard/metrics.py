"""Prometheus text exposition (format 0.0.4) of gold/pipeline_metrics and the active alerts
of gold/alerts, read through DuckDB.

Gauges describe each query's newest micro-batch; `_total` counters add up every batch the
table holds. Durations are in seconds, as Prometheus names them.
"""

from __future__ import annotations

import math
from typing import Any

from dashboard.panels import OPEN_EPISODES, active_alerts, latest_batches
from jobs.serving import Lakehouse

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# name, type, help, column of the latest batch, scale
GAUGES: tuple[tuple[str, str, str, str, float], ...] = (
    ("lakehouse_batch_input_rows", "gauge",
     "Rows read by the query's latest micro-batch.", "input_rows", 1.0),
    ("lakehouse_input_rows_per_second", "gauge",
     "Input rate of the latest micro-batch (rows/s).", "input_rows_per_second", 1.0),
    ("lakehouse_processed_rows_per_second", "gauge",
     "Processing rate of the latest micro-batch (rows/s).", "processed_rows_per_second", 1.0),
    ("lakehouse_batch_duration_seconds", "gauge",
     "Wall time of the latest micro-batch.", "batch_duration_ms", 0.001),
    ("lakehouse_produce_to_commit_seconds", "gauge",
     "Produce time (Kafka record timestamp) of the oldest record of the latest micro-batch "
     "to the batch's commit.", "produce_to_commit_ms", 0.001),
    ("lakehouse_data_age_seconds", "gauge",
     "Newest event time of the latest micro-batch to the batch's commit (event-time lag, "
     "not pipeline latency).", "data_age_ms", 0.001),
    ("lakehouse_batch_rows_dropped_late", "gauge",
     "Rows the latest micro-batch dropped as later than the watermark.", "rows_dropped_late",
     1.0),
    ("lakehouse_state_rows", "gauge",
     "Rows in the query's state store after the latest micro-batch.", "state_rows", 1.0),
    ("lakehouse_last_batch_id", "gauge", "Id of the latest micro-batch.", "batch_id", 1.0),
)
COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("lakehouse_input_rows_total", "Rows read by all recorded micro-batches.", "input_rows"),
    ("lakehouse_rows_dropped_late_total", "Rows dropped late by all recorded micro-batches.",
     "rows_dropped_late"),
    ("lakehouse_batches_total", "Micro-batches recorded in gold/pipeline_metrics.", "1"),
)


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: Any) -> str | None:
    if value is None:
        return None
    v = float(value)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(int(v)) if v.is_integer() and abs(v) < 2**53 else repr(v)


ACTIVE = "lakehouse_active_alerts"


def _active_lines(lake: Lakehouse) -> list[str]:
    """`lakehouse_active_alerts{alert_type}`: `dashboard.panels.active_alerts`, a series for
    every type the profile raises (0 when none is active); none before gold/alerts exists."""
    found = active_alerts(lake)
    if found is None:
        return []
    meaning, by_type = found
    what = ("open alert episodes (alerts whose resolved_at is null, one per sensor, type and "
            "metric)" if meaning == OPEN_EPISODES else
            f"alerts within gold.open_alert_window_s ({lake.cfg.gold.open_alert_window_s} s) "
            "of the fleet's newest reading (the seed profile has no lifecycle)")
    lines = [f"# HELP {ACTIVE} Active alerts by type: {what}.", f"# TYPE {ACTIVE} gauge"]
    for kind in sorted(set(lake.cfg.alerts.enabled) | set(by_type)):
        lines.append(f'{ACTIVE}{{alert_type="{_label(kind)}"}} {by_type.get(kind, 0)}')
    return lines


def render(lake: Lakehouse) -> str:
    """The /metrics page; `lakehouse_metrics_table_up` is 0 until the table exists. Active
    alerts (`lakehouse_active_alerts`) come from gold/alerts, whether or not it does."""
    lines = ["# HELP lakehouse_metrics_table_up 1 when gold/pipeline_metrics can be read.",
             "# TYPE lakehouse_metrics_table_up gauge"]
    lake.refresh()
    active = _active_lines(lake)
    if not lake.has("pipeline_metrics"):
        lines.append("lakehouse_metrics_table_up 0")
        return "\n".join(lines + active) + "\n"
    lines.append("lakehouse_metrics_table_up 1")
    latest = latest_batches(lake)
    records = [dict(zip(latest.columns, row, strict=True)) for row in latest.rows]
    for name, kind, help_text, column, scale in GAUGES:
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
        for rec in records:
            raw = rec.get(column)
            value = _number(None if raw is None else float(raw) * scale)
            if value is not None:
                lines.append(f'{name}{{query="{_label(rec["query_name"])}"}} {value}')
    name = "lakehouse_last_batch_timestamp_seconds"
    lines += [f"# HELP {name} Time of the latest micro-batch (Unix seconds).",
              f"# TYPE {name} gauge"]
    for rec in records:
        if rec.get("batch_time") is not None:
            lines.append(f'{name}{{query="{_label(rec["query_name"])}"}} '
                         f"{rec['batch_time'].timestamp()!r}")
    sums = ", ".join(f"CAST(sum({col}) AS DOUBLE)" for _, _, col in COUNTERS)
    totals = lake.execute(
        f"SELECT query_name, {sums} FROM pipeline_metrics GROUP BY query_name ORDER BY 1")
    for i, (name, help_text, _) in enumerate(COUNTERS, start=1):
        lines += [f"# HELP {name} {help_text}", f"# TYPE {name} counter"]
        for row in totals.rows:
            value = _number(row[i] if row[i] is not None else 0)
            lines.append(f'{name}{{query="{_label(row[0])}"}} {value}')
    return "\n".join(lines + active) + "\n"
