"""DuckDB serving: views, time travel (version and as-of), history, CLI formats, notebook API,
Prometheus /metrics — against real Delta tables written by Spark (tests/serving_samples.py)."""

from __future__ import annotations

import csv
import io
import json
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from serving_samples import ALERTS_V0, ALERTS_V1, METRIC_QUERIES, METRICS_DDL, metrics_rows

from dashboard import metrics
from jobs import serving
from jobs.cli import cli
from jobs.config import Config
from jobs.duck import connect
from jobs.tables import ALERTS, VIEWS

pytestmark = pytest.mark.spark

ALL_IDS = sorted(a[0] for a in ALERTS_V0 + ALERTS_V1)
V0_IDS = sorted(a[0] for a in ALERTS_V0)


def _alert_ids(lake: serving.Lakehouse) -> list[str]:
    return [r[0] for r in lake.execute("SELECT alert_id FROM alerts ORDER BY alert_id").rows]


def _cli(cfg: Config, *args: str) -> str:
    result = CliRunner().invoke(cli, ["--set", f"paths.data_dir={cfg.paths.data_dir}",
                                      "--set", f"paths.lakehouse_root={cfg.paths.lakehouse}",
                                      *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_a_view_per_existing_table_and_missing_ones_named(sample_lake: Config) -> None:
    lake = serving.Lakehouse(sample_lake)
    assert set(lake.missing) == {"bronze_raw", "sensor_registry", "sensor_stats_10m"}
    assert set(lake.available) == set(VIEWS) - set(lake.missing)
    assert _alert_ids(lake) == ALL_IDS
    n = lake.execute("SELECT count(*) FROM silver_readings WHERE sensor_id = 'SENSOR_004'").rows
    assert n == [(29,)]


def test_view_appears_when_its_table_is_created(sample_lake: Config, spark, tmp_path: Path) -> None:
    cfg = sample_lake.with_overrides({"paths.lakehouse_root": str(tmp_path / "lake")})
    lake = serving.Lakehouse(cfg)
    assert "alerts" in lake.missing
    spark.read.format("delta").load(str(sample_lake.paths.table(ALERTS))).write.format(
        "delta").save(str(cfg.paths.table(ALERTS)))
    assert _alert_ids(lake) == ALL_IDS  # the same long-lived connection sees it
    assert "alerts" in lake.available


def test_query_at_an_old_version_returns_the_old_rows(sample_lake: Config) -> None:
    old = serving.open_lakehouse(sample_lake, version=0, tables=["alerts"])
    assert _alert_ids(old) == V0_IDS
    # Only the named table travels; the others stay at their latest version.
    assert old.execute("SELECT count(*) FROM sensor_status").rows == [(4,)]
    assert _alert_ids(serving.open_lakehouse(sample_lake, version=1, tables=["alerts"])) == ALL_IDS
    assert _alert_ids(serving.Lakehouse(sample_lake)) == ALL_IDS


def test_history_matches_spark_describe_history(sample_lake: Config, spark) -> None:
    path = sample_lake.paths.table(ALERTS)
    ours = serving.history(path)
    theirs = sorted(spark.sql(f"DESCRIBE HISTORY delta.`{path}`").collect(),
                    key=lambda r: r["version"])
    assert [c.version for c in ours] == [r["version"] for r in theirs] == [0, 1]
    assert [c.operation for c in ours] == [r["operation"] for r in theirs]
    assert [c.rows_added for c in ours] == [int(r["operationMetrics"]["numOutputRows"])
                                            for r in theirs] == [len(ALERTS_V0), len(ALERTS_V1)]
    assert [c.mode for c in ours] == ["Overwrite", "Append"]
    for c, r in zip(ours, theirs, strict=True):
        # Spark returns the commit time as a session-time-zone (UTC) naive timestamp.
        assert c.timestamp.replace(tzinfo=None) == r["timestamp"]


def test_as_of_resolves_like_spark_timestamp_as_of(sample_lake: Config, spark) -> None:
    path = sample_lake.paths.table(ALERTS)
    v0, v1 = serving.history(path)
    probes = [v0.timestamp, v1.timestamp - timedelta(milliseconds=1), v1.timestamp]
    for ts in probes:
        ours = _alert_ids(serving.open_lakehouse(sample_lake, as_of=ts, tables=["alerts"]))
        theirs = sorted(r[0] for r in spark.read.format("delta")
                        .option("timestampAsOf", ts.strftime("%Y-%m-%d %H:%M:%S.%f"))
                        .load(str(path)).select("alert_id").collect())
        assert ours == theirs, ts
    assert _alert_ids(serving.open_lakehouse(
        sample_lake, as_of=v1.timestamp - timedelta(milliseconds=1), tables=["alerts"])) == V0_IDS
    # Unlike Spark (which refuses it), a time after the latest commit reads the latest version.
    assert _alert_ids(serving.open_lakehouse(
        sample_lake, as_of=v1.timestamp + timedelta(days=1), tables=["alerts"])) == ALL_IDS
    with pytest.raises(serving.ServingError, match="no version at or before"):
        serving.open_lakehouse(sample_lake, as_of=v0.timestamp - timedelta(seconds=1),
                               tables=["alerts"])


def test_cli_query_formats_agree_with_duckdb(sample_lake: Config) -> None:
    sql = ("SELECT alert_id, sensor_id, severity, event_time, value FROM alerts "
           "ORDER BY alert_id")
    path = sample_lake.paths.table(ALERTS)
    con = connect()
    con.execute("SET TimeZone = 'UTC'")
    expected = con.execute(sql.replace("FROM alerts", f"FROM delta_scan('{path}')")).fetchall()

    rows = list(csv.reader(io.StringIO(_cli(sample_lake, "query", sql, "--format", "csv"))))
    assert rows[0] == ["alert_id", "sensor_id", "severity", "event_time", "value"]
    assert [r[0] for r in rows[1:]] == [e[0] for e in expected]
    assert [r[3] for r in rows[1:]] == [e[3].strftime("%Y-%m-%dT%H:%M:%SZ") for e in expected]
    assert [float(r[4]) if r[4] else None for r in rows[1:]] == [e[4] for e in expected]

    records = json.loads(_cli(sample_lake, "query", sql, "--format", "json"))
    assert [(r["alert_id"], r["value"]) for r in records] == [(e[0], e[4]) for e in expected]

    table = _cli(sample_lake, "query", sql).splitlines()
    header, rule, *body, footer = table
    assert header.split(" | ")[0].strip() == "alert_id" and set(rule) <= {"-", "+"}
    assert footer == f"({len(expected)} rows)"
    assert len(body) == len(expected)
    # Fixed width: every column boundary sits at the same offset on every line.
    bars = {tuple(i for i, ch in enumerate(line) if ch == "|") for line in [header, *body]}
    assert len(bars) == 1
    assert [line.split("|")[0].strip() for line in body] == [e[0] for e in expected]
    assert "2024-01-10 14:39:00" in body[-1] and "NULL" in body[-1]


def test_cli_time_travel_and_history(sample_lake: Config) -> None:
    out = _cli(sample_lake, "query", "SELECT count(*) AS n FROM alerts", "--version", "0",
               "--table", "alerts", "--format", "json")
    assert json.loads(out) == [{"n": len(ALERTS_V0)}]
    v1 = serving.history(sample_lake.paths.table(ALERTS))[1].timestamp
    before_v1 = (v1 - timedelta(milliseconds=1)).isoformat()
    out = _cli(sample_lake, "query", "SELECT count(*) AS n FROM alerts", "--as-of", before_v1,
               "--format", "csv")
    assert out.splitlines() == ["n", str(len(ALERTS_V0))]

    hist = list(csv.DictReader(io.StringIO(_cli(sample_lake, "history", "alerts",
                                                "--format", "csv"))))
    assert [(h["version"], h["operation"], h["rows_added"]) for h in hist] == [
        ("0", "WRITE", str(len(ALERTS_V0))), ("1", "WRITE", str(len(ALERTS_V1)))]

    bad = CliRunner().invoke(cli, ["--set", f"paths.data_dir={sample_lake.paths.data_dir}",
                                   "--set", f"paths.lakehouse_root={sample_lake.paths.lakehouse}",
                                   "query", "SELECT 1", "--table", "nope", "--version", "0"])
    assert bad.exit_code != 0 and "unknown table 'nope'" in bad.output


def test_notebook_api_returns_dataframes(sample_lake: Config) -> None:
    gold = serving.gold.using(sample_lake)
    alerts = gold.alerts()
    assert sorted(alerts["alert_id"]) == ALL_IDS
    assert list(alerts["event_time"]) == sorted(alerts["event_time"], reverse=True)
    assert sorted(gold.table("alerts", version=0)["alert_id"]) == V0_IDS
    v1 = gold.history("alerts")["timestamp"].iloc[1]
    assert sorted(gold.table("alerts", as_of=v1 - timedelta(milliseconds=1))["alert_id"]) == V0_IDS
    stats = gold.table("sensor_stats_5m")
    assert {"sensor_id", "window_start", "readings", "p95_temperature"} <= set(stats.columns)
    assert int(stats["readings"].sum()) == 4 * 30 - 1
    with pytest.raises(serving.ServingError, match="does not exist yet"):
        gold.table("sensor_stats_10m")


def _prometheus(text: str) -> dict[tuple[str, str], float]:
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_labels, value = line.rsplit(" ", 1)
        name, _, labels = name_labels.partition("{")
        query = labels.removeprefix('query="').removesuffix('"}')
        out[(name, query)] = float(value)
    return out


def test_metrics_page_reports_latest_batch_per_query(sample_lake: Config) -> None:
    page = metrics.render(serving.Lakehouse(sample_lake))
    assert "# TYPE lakehouse_input_rows_total counter" in page
    got = _prometheus(page)
    assert got[("lakehouse_metrics_table_up", "")] == 1
    assert not any(name == "lakehouse_event_to_commit_latency_seconds" for name, _ in got)
    rows = metrics_rows()
    for query in METRIC_QUERIES:
        mine = [r for r in rows if r["query_name"] == query]
        last = max(mine, key=lambda r: r["batch_time"])
        assert got[("lakehouse_last_batch_id", query)] == last["batch_id"]
        assert got[("lakehouse_batch_input_rows", query)] == last["input_rows"]
        assert got[("lakehouse_input_rows_per_second", query)] == last["input_rows_per_second"]
        assert got[("lakehouse_processed_rows_per_second", query)] == \
            last["processed_rows_per_second"]
        assert got[("lakehouse_batch_duration_seconds", query)] == pytest.approx(
            last["batch_duration_ms"] / 1000)
        assert got[("lakehouse_produce_to_commit_seconds", query)] == pytest.approx(
            last["produce_to_commit_ms"] / 1000)
        assert got[("lakehouse_data_age_seconds", query)] == pytest.approx(
            last["data_age_ms"] / 1000)
        assert got[("lakehouse_batch_rows_dropped_late", query)] == last["rows_dropped_late"]
        assert got[("lakehouse_state_rows", query)] == last["state_rows"]
        assert got[("lakehouse_last_batch_timestamp_seconds", query)] == \
            last["batch_time"].timestamp()
        assert got[("lakehouse_input_rows_total", query)] == sum(r["input_rows"] for r in mine)
        assert got[("lakehouse_rows_dropped_late_total", query)] == sum(
            r["rows_dropped_late"] for r in mine)
        assert got[("lakehouse_batches_total", query)] == len(mine)


def test_metrics_table_read_across_its_layouts(sample_lake: Config) -> None:
    """The sample table was written in the first layout, then evolved by an append in the
    current one: every row reads, old rows' data age from the column that held it."""
    lake = serving.Lakehouse(sample_lake)
    assert {"event_to_commit_latency_ms", "produce_to_commit_ms", "data_age_ms"} <= set(
        lake.columns("pipeline_metrics"))
    got = lake.execute(f"SELECT query_name, batch_id, {serving.latency_columns(lake)}"
                       " FROM pipeline_metrics ORDER BY 1, 2").rows
    assert got == sorted((r["query_name"], r["batch_id"], r["produce_to_commit_ms"],
                          r["produce_to_commit_min_ms"], r["data_age_ms"])
                         for r in metrics_rows())


def test_metrics_sample_layout_is_the_recorders() -> None:
    from jobs.metrics import METRICS_SCHEMA

    assert [f"{f.name} {f.dataType.simpleString()}" for f in METRICS_SCHEMA.fields] == [
        c.strip().replace("LONG", "bigint").replace("STRING", "string")
        .replace("TIMESTAMP", "timestamp").replace("DOUBLE", "double")
        for c in METRICS_DDL.split(",")]


def test_metrics_page_before_the_table_exists(base_cfg: Config, tmp_path: Path) -> None:
    cfg = base_cfg.with_overrides({"paths.lakehouse_root": str(tmp_path / "empty")})
    assert _prometheus(metrics.render(serving.Lakehouse(cfg))) == {
        ("lakehouse_metrics_table_up", ""): 0.0}
