"""The dashboard in a real browser: `lakehouse dashboard` against real Delta tables, loaded by
Debian's headless Chromium; the rendered panels must show what DuckDB returns for the same
tables. A screenshot is saved under the test's tmp dir."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from jobs.config import REPO_ROOT, Config
from jobs.duck import connect
from jobs.tables import ALERTS, PIPELINE_METRICS, VIEWS

pytestmark = pytest.mark.spark

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]
PANELS = ("panel-pipeline", "panel-alerts", "panel-sensor", "panel-locations",
          "panel-alert-counts", "panel-quarantine", "panel-status")
PLOTS = ("plot-rate", "plot-latency", "plot-data-age", "plot-sensor", "plot-locations",
         "plot-alert-counts", "plot-quarantine", "plot-status")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dashboard:
    def __init__(self, cfg: Config, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._log = log.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs.cli", "--set", f"paths.data_dir={cfg.paths.data_dir}",
             "--set", f"paths.lakehouse_root={cfg.paths.lakehouse}",
             "dashboard", "--port", str(self.port), "--refresh", "2"],
            cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        self.log = log
        for _ in range(240):  # the server answers within a second or two; allow a slow box
            if self.proc.poll() is not None:
                raise RuntimeError(f"dashboard exited: {log.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "healthz", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        raise RuntimeError(f"dashboard did not answer on {self.url}: {log.read_text()}")

    def get(self, path: str) -> str:
        with urllib.request.urlopen(self.url + path.lstrip("/"), timeout=30) as r:
            return r.read().decode()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        self._log.close()


@pytest.fixture()
def dashboard(sample_lake: Config, tmp_path: Path) -> Iterator[Dashboard]:
    d = Dashboard(sample_lake, tmp_path / "dashboard.log")
    try:
        yield d
    finally:
        d.stop()


def _chromium(url: str, tmp: Path, *extra: str) -> str:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is missing: run scripts/setup.sh (apt-get install chromium)")
    profile = tmp / f"chromium-profile-{len(list(tmp.glob('chromium-profile-*')))}"
    out = subprocess.run(
        [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
         "--window-size=1400,2600", "--virtual-time-budget=8000", *extra, url],
        capture_output=True, text=True, timeout=120, check=True)
    return out.stdout


class Dom(HTMLParser):
    """The parts of the rendered page the test reads: tables, test ids, plots, panel states."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.tables: dict[str, list[dict[str, str]]] = {}
        self.keys: dict[str, list[str]] = {}
        self.testids: dict[str, str] = {}
        self.elements: dict[str, dict[str, str]] = {}
        self.svg_in: dict[str, int] = {}
        self.titles: dict[str, str] = {}  # plot id -> the title plotly drew in its SVG
        self._title: str | None = None
        self._table: str | None = None
        self._cell: str | None = None
        self._testid: str | None = None
        self._open: list[str | None] = []  # ids of enclosing plot divs
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if "id" in a:
            self.elements[a["id"]] = a
        if tag == "body":
            self.elements["<body>"] = a
        if tag == "div":
            self._open.append(a["id"] if a.get("id", "").startswith("plot-") else None)
        if tag == "text" and "gtitle" in a.get("class", "").split():
            plots = [p for p in self._open if p]
            self._title = plots[-1] if plots else None
            if self._title:
                self.titles[self._title] = ""
        if tag == "svg" and "main-svg" in a.get("class", ""):
            for pid in filter(None, self._open):
                self.svg_in[pid] = self.svg_in.get(pid, 0) + 1
        if tag == "table" and "data-table" in a:
            self._table = a["data-table"]
            self.tables[self._table] = []
            self.keys[self._table] = []
        elif tag == "tr" and self._table and "data-key" in a:
            self.tables[self._table].append({})
            self.keys[self._table].append(a["data-key"])
        elif tag == "td" and self._table and "data-col" in a:
            self._cell = a["data-col"]
            self.tables[self._table][-1][self._cell] = ""
        if "data-testid" in a:
            self._testid = a["data-testid"]
            self.testids[self._testid] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._open:
            self._open.pop()
        if tag == "table":
            self._table = None
        if tag == "td":
            self._cell = None
        if tag == "text":
            self._title = None
        self._testid = None

    def handle_data(self, data: str) -> None:
        if self._title:
            self.titles[self._title] += data
        if self._cell and self._table:
            self.tables[self._table][-1][self._cell] += data
        if self._testid:
            self.testids[self._testid] += data


def _same(shown: str, value: float | int | None) -> bool:
    """The page rounds to 2 decimals; integers exactly."""
    if value is None:
        return shown == "–"
    return abs(float(shown) - float(value)) <= 0.005 + 1e-9


class Duck:
    """DuckDB over the same tables, without the serving module's views."""

    def __init__(self, cfg: Config) -> None:
        self.con = connect()
        self.con.execute("SET TimeZone = 'UTC'")
        self.cfg = cfg

    def q(self, sql: str, *params: object) -> list[tuple]:
        for view, rel in VIEWS.items():
            sql = sql.replace(f"{{{view}}}", f"delta_scan('{self.cfg.paths.table(rel)}')")
        return self.con.execute(sql, list(params)).fetchall()


def _check_page(dom: Dom, duck: Duck) -> None:
    for panel in PANELS:
        assert dom.elements[panel].get("data-status") == "ok", (panel, dom.elements[panel])
    for pid in PLOTS:
        assert "js-plotly-plot" in dom.elements[pid].get("class", ""), f"{pid} not drawn"
        assert dom.svg_in.get(pid, 0) >= 1, f"{pid} has no plot SVG"

    status = dict(duck.q("SELECT status, count(*) FROM {sensor_status} GROUP BY 1"))
    assert dom.testids["kpi-online"] == str(status.get("ONLINE", 0))
    assert dom.testids["kpi-offline"] == str(status.get("OFFLINE", 0))
    assert [r["status"] for r in dom.tables["status"]] == [r[1] for r in duck.q(
        "SELECT sensor_id, status FROM {sensor_status} ORDER BY status = 'ONLINE', sensor_id")]

    # Active alerts (production profile): the open episodes; the sample's one is SENSOR_004's
    # SENSOR_OFFLINE.
    (active,), = duck.q("SELECT count(DISTINCT (sensor_id, alert_type, coalesce(metric, ''))) "
                        "FROM {alerts} WHERE resolved_at IS NULL")
    assert active == 1 and dom.testids["kpi-active"] == str(active)

    window = "event_time >= (SELECT max(event_time) FROM {alerts}) - INTERVAL 60 MINUTE"
    (in_period,), = duck.q(f"SELECT count(*) FROM {{alerts}} WHERE {window}")
    assert dom.testids["kpi-alerts"] == str(in_period)
    newest_first = duck.q(f"SELECT alert_id, severity, value FROM {{alerts}} WHERE {window} "
                          "ORDER BY event_time DESC, alert_id")
    assert dom.keys["alerts"] == [r[0] for r in newest_first]
    assert [r["severity"] for r in dom.tables["alerts"]] == [r[1] for r in newest_first]
    assert all(_same(row["value"], r[2]) for row, r in zip(dom.tables["alerts"], newest_first,
                                                           strict=True))

    latest = duck.q("SELECT location, min_temperature, max_temperature, readings "
                    "FROM {location_stats_5m} QUALIFY row_number() OVER "
                    "(PARTITION BY location ORDER BY window_start DESC) = 1 ORDER BY location")
    assert dom.keys["locations"] == [r[0] for r in latest]
    for row, r in zip(dom.tables["locations"], latest, strict=True):
        assert _same(row["min_temperature"], r[1]) and _same(row["max_temperature"], r[2]), row
        assert row["readings"] == str(r[3])

    counts = duck.q("SELECT alert_type, sum(alerts) FROM {alert_counts_5m} WHERE window_start >= "
                    "(SELECT max(window_start) FROM {alert_counts_5m}) - INTERVAL 60 MINUTE "
                    "GROUP BY 1 ORDER BY 2 DESC, 1")
    assert [(r["alert_type"], int(r["alerts"])) for r in dom.tables["alert_counts"]] == [
        (t, int(n)) for t, n in counts]

    reasons = duck.q("SELECT reason, count(*) FROM (SELECT unnest(reasons) AS reason "
                     "FROM {quarantine}) GROUP BY 1 ORDER BY 2 DESC, 1")
    assert [(r["reason"], int(r["records"])) for r in dom.tables["quarantine"]] == reasons
    (quarantined,), = duck.q("SELECT count(*) FROM {quarantine}")
    assert dom.testids["kpi-quarantine"] == str(quarantined)

    # The sample table holds rows of both layouts (tests/serving_samples.py): the data age of
    # old rows is under its first name.
    rates = duck.q("SELECT query_name, input_rows_per_second, produce_to_commit_ms, "
                   "produce_to_commit_min_ms, coalesce(data_age_ms, event_to_commit_latency_ms) "
                   "FROM {pipeline_metrics} QUALIFY row_number() OVER "
                   "(PARTITION BY query_name ORDER BY batch_time DESC) = 1 ORDER BY 1")
    assert dom.keys["pipeline"] == [r[0] for r in rates]
    for row, r in zip(dom.tables["pipeline"], rates, strict=True):
        assert _same(row["input_rows_per_second"], r[1])
        assert _same(row["produce_to_commit_ms"], r[2])
        assert _same(row["produce_to_commit_min_ms"], r[3])
        assert _same(row["data_age_ms"], r[4])
    for pid in ("plot-rate", "plot-latency", "plot-data-age"):
        assert dom.elements[pid]["data-queries"] == str(len(rates)), pid
    # Latency is from produce time, labelled so; event-time lag is its own, labelled plot.
    assert dom.titles["plot-latency"] == "produce → commit latency per query (s)"
    assert dom.titles["plot-data-age"] == "data age: newest event time → commit (s)"


def test_dashboard_in_headless_chromium_shows_what_duckdb_returns(
    sample_lake: Config, dashboard: Dashboard, tmp_path: Path
) -> None:
    duck = Duck(sample_lake)
    dom = Dom(_chromium(dashboard.url, tmp_path, "--dump-dom"))
    # Rendered, and refreshed by itself (every 2 s of the 8 s virtual time budget).
    assert int(dom.elements["<body>"].get("data-rendered", "0")) >= 2, "page did not refresh"
    _check_page(dom, duck)

    # The sensor with the most valued alerts is chosen; its readings and alert marks plotted.
    (top,), = duck.q("SELECT sensor_id FROM {alerts} WHERE metric IS NOT NULL "
                     "GROUP BY 1 ORDER BY count(*) DESC, 1 LIMIT 1")
    plot = dom.elements["plot-sensor"]
    assert plot["data-sensor"] == top
    (points,), = duck.q("SELECT count(*) FROM {silver_readings} WHERE sensor_id = ? AND "
                        "event_time >= (SELECT max(event_time) FROM {silver_readings} "
                        "WHERE sensor_id = ?) - INTERVAL 60 MINUTE", top, top)
    (marks,), = duck.q("SELECT count(*) FROM {alerts} WHERE sensor_id = ? AND value IS NOT NULL",
                       top)
    assert (int(plot["data-points"]), int(plot["data-alert-markers"])) == (points, marks)

    # Filters and sensor choice come from the URL, as the page's controls write them.
    filtered = Dom(_chromium(dashboard.url + "?severity=CRITICAL&sensor=SENSOR_003",
                             tmp_path, "--dump-dom"))
    critical = duck.q("SELECT alert_id FROM {alerts} WHERE severity = 'CRITICAL' "
                      "ORDER BY event_time DESC, alert_id")
    assert filtered.keys["alerts"] == [r[0] for r in critical]
    assert filtered.testids["alerts-total"].startswith(f"{len(critical)} alerts")
    assert filtered.elements["plot-sensor"]["data-sensor"] == "SENSOR_003"

    shot = tmp_path / "dashboard.png"
    _chromium(dashboard.url, tmp_path, f"--screenshot={shot}")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    print(f"dashboard screenshot: {shot}")


def test_panels_wait_for_tables_then_show_them(sample_lake: Config, tmp_path: Path) -> None:
    cfg = sample_lake.with_overrides({"paths.lakehouse_root": str(tmp_path / "lake")})
    d = Dashboard(cfg, tmp_path / "dashboard.log")
    try:
        dom = Dom(_chromium(d.url, tmp_path, "--dump-dom"))
        for panel in PANELS:
            assert dom.elements[panel].get("data-status") == "waiting", panel
            assert dom.testids[f"waiting-{panel}"].startswith("waiting for data"), panel
        assert "lakehouse_metrics_table_up 0" in d.get("/metrics")
        # A table created while the dashboard runs shows up on the next refresh.
        for table in (ALERTS, PIPELINE_METRICS):
            shutil.copytree(sample_lake.paths.table(table), cfg.paths.table(table))
        assert "lakehouse_metrics_table_up 1" in d.get("/metrics")
        dom = Dom(_chromium(d.url, tmp_path, "--dump-dom"))
        assert dom.elements["panel-pipeline"]["data-status"] == "ok"
        assert dom.elements["panel-alerts"]["data-status"] == "ok"
        assert dom.elements["panel-status"]["data-status"] == "waiting"
        assert len(dom.keys["alerts"]) == len(Duck(cfg).q("SELECT * FROM {alerts}"))
    finally:
        d.stop()
