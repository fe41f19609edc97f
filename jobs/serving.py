"""Serving: DuckDB views over the Delta tables, time travel, history, and a notebook API.

Every table of `jobs.tables.VIEWS` that exists becomes a DuckDB view over `delta_scan`; the
view is re-bound on every query, so a long-lived `Lakehouse` (the dashboard's) always sees
the newest committed version. Time travel uses `delta_scan(path, version => N)`; an as-of
timestamp is resolved to a version from the table's own `_delta_log` commit files (Delta's
commit-time rule: in-commit timestamp, else the commit file's time), since DuckDB's delta
extension cannot list history. Nothing here needs Spark.

    from jobs.serving import gold
    gold.alerts()                                   # pandas DataFrame
    gold.table("sensor_stats_5m", version=3)
    gold.sql("SELECT alert_type, count(*) FROM alerts GROUP BY 1")
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import logging
import math
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs import duck
from jobs.config import Config, load_config
from jobs.tables import VIEWS

if TYPE_CHECKING:
    import duckdb
    import pandas as pd

logger = logging.getLogger(__name__)

_COMMIT_FILE = re.compile(r"^(\d{20})\.json$")


class ServingError(ValueError):
    """A query, table name or time-travel request that cannot be served; says why."""


# --- Delta log -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Commit:
    """One version of a Delta table, read from its `_delta_log/<version>.json`."""

    version: int
    timestamp: datetime
    operation: str
    mode: str | None
    rows_added: int | None
    rows_updated: int | None
    rows_deleted: int | None
    files_added: int
    files_removed: int


def is_delta_table(path: Path) -> bool:
    log = path / "_delta_log"
    return log.is_dir() and any(_COMMIT_FILE.match(p.name) for p in log.iterdir())


def _metric(metrics: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        if name in metrics:
            try:
                return int(metrics[name])
            except (TypeError, ValueError):
                return None
    return None


def _read_commit(version: int, file: Path) -> Commit:
    info: dict[str, Any] = {}
    added = removed = 0
    added_records = 0
    for line in file.read_text().splitlines():
        if not line.strip():
            continue
        action = json.loads(line)
        if "commitInfo" in action:
            info = action["commitInfo"]
        elif "add" in action:
            added += 1
            if action["add"].get("dataChange", True) and action["add"].get("stats"):
                added_records += json.loads(action["add"]["stats"]).get("numRecords", 0)
        elif "remove" in action:
            removed += 1
    # Delta's own rule (what Spark's DESCRIBE HISTORY and timestampAsOf use): the in-commit
    # timestamp when the table has that feature, else the commit file's modification time;
    # commitInfo.timestamp is only the writer's clock before the commit.
    millis = info.get("inCommitTimestamp")
    if millis is None:
        millis = file.stat().st_mtime_ns // 1_000_000
    metrics = info.get("operationMetrics") or {}
    rows_added = _metric(metrics, "numTargetRowsInserted", "numOutputRows")
    if info.get("operation") in {"OPTIMIZE", "VACUUM START", "VACUUM END"}:
        rows_added = 0  # rewrites files, adds no data
    elif rows_added is None and added:
        rows_added = added_records
    return Commit(
        version=version,
        timestamp=datetime.fromtimestamp(millis / 1000, tz=UTC),
        operation=str(info.get("operation", "UNKNOWN")),
        mode=(info.get("operationParameters") or {}).get("mode"),
        rows_added=rows_added,
        rows_updated=_metric(metrics, "numTargetRowsUpdated", "numUpdatedRows"),
        rows_deleted=_metric(metrics, "numTargetRowsDeleted", "numDeletedRows"),
        files_added=added,
        files_removed=removed,
    )


def history(path: Path) -> list[Commit]:
    """Every version whose commit file is still in the log, oldest first, with Delta's
    commit times (as Spark's DESCRIBE HISTORY gives them).

    Versions whose JSON was cleaned up after a checkpoint (log retention) are not listed.
    """
    log = path / "_delta_log"
    if not log.is_dir():
        raise ServingError(f"no Delta table at {path} (no _delta_log)")
    commits = []
    for file in log.iterdir():
        m = _COMMIT_FILE.match(file.name)
        if m:
            commits.append(_read_commit(int(m.group(1)), file))
    commits.sort(key=lambda c: c.version)
    # As Delta does, make times strictly increasing (file times can tie or go backwards).
    for i in range(1, len(commits)):
        floor = commits[i - 1].timestamp + timedelta(milliseconds=1)
        if commits[i].timestamp < floor:
            commits[i] = dataclasses.replace(commits[i], timestamp=floor)
    return commits


def parse_timestamp(text: str) -> datetime:
    """ISO-8601; a timestamp without a zone is UTC."""
    try:
        ts = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ServingError(f"not an ISO-8601 timestamp: {text!r}") from exc
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def version_as_of(path: Path, ts: datetime) -> int:
    """The latest version committed at or before `ts` (Delta's `timestampAsOf` rule; a time
    after the latest commit reads the latest version, where Spark would refuse it)."""
    commits = history(path)
    eligible = [c for c in commits if c.timestamp <= ts]
    if not eligible:
        first = commits[0].timestamp.isoformat() if commits else "never"
        raise ServingError(f"{path.name}: no version at or before {ts.isoformat()} "
                           f"(earliest commit {first})")
    return eligible[-1].version


# --- DuckDB ----------------------------------------------------------------------------------


def _sql_str(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


@dataclass(frozen=True)
class Result:
    columns: list[str]
    rows: list[tuple]


class Lakehouse:
    """One DuckDB connection with a view per existing Delta table.

    `versions` pins views to a table version (time travel); every other view reads the latest
    version each time it is queried. Safe to share between threads (queries are serialised).
    """

    def __init__(self, cfg: Config, *, versions: Mapping[str, int] | None = None,
                 hidden: Iterable[str] = ()) -> None:
        self.cfg = cfg
        self.versions = dict(versions or {})
        self.hidden = set(hidden)  # tables that did not exist at the requested time
        unknown = sorted(set(self.versions) - set(VIEWS))
        if unknown:
            raise ServingError(f"unknown table(s) {unknown}; known: {sorted(VIEWS)}")
        self._con: duckdb.DuckDBPyConnection = duck.connect()
        self._con.execute("SET TimeZone = 'UTC'")
        self._lock = threading.Lock()
        self.available: list[str] = []
        self.missing: list[str] = list(VIEWS)
        self.refresh()

    def path(self, view: str) -> Path:
        if view not in VIEWS:
            raise ServingError(f"unknown table {view!r}; known: {', '.join(sorted(VIEWS))}")
        return self.cfg.paths.table(VIEWS[view])

    def refresh(self) -> list[str]:
        """Create views for tables that appeared since the last call; returns the new ones."""
        created = []
        with self._lock:
            for view in list(self.missing):
                path = self.path(view)
                if view in self.hidden or not is_delta_table(path):
                    continue
                args = _sql_str(str(path.resolve()))
                if view in self.versions:
                    args += f", version => {int(self.versions[view])}"
                self._con.execute(
                    f'CREATE OR REPLACE VIEW "{view}" AS SELECT * FROM delta_scan({args})')
                self.missing.remove(view)
                self.available.append(view)
                created.append(view)
        pinned = sorted(set(self.versions) & set(self.missing))
        if pinned:
            raise ServingError(f"cannot time-travel {pinned}: table(s) do not exist yet")
        return created

    def describe_missing(self) -> str:
        """Which tables have no view, and why."""
        young = [v for v in self.missing if v in self.hidden]
        absent = [v for v in self.missing if v not in self.hidden]
        parts = [f"{', '.join(absent)} (not created yet)"] if absent else []
        if young:
            parts.append(f"{', '.join(young)} (no such version / not yet at that time)")
        return "; ".join(parts)

    def has(self, *views: str) -> bool:
        return all(v in self.available for v in views)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Result:
        self.refresh()
        import duckdb

        with self._lock:
            try:
                cur = self._con.execute(sql, params or [])
                columns = [d[0] for d in cur.description or []]
                rows = cur.fetchall() if cur.description else []
            except duckdb.Error as exc:
                hint = ""
                if self.missing and any(v in sql for v in self.missing):
                    hint = f" (no view for: {self.describe_missing()})"
                raise ServingError(f"{exc}{hint}") from exc
        return Result(columns, rows)

    def columns(self, view: str) -> list[str]:
        """The view's column names (reads the table's log, no data)."""
        return self.execute(f'SELECT * FROM "{view}" LIMIT 0').columns

    def df(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        self.refresh()
        with self._lock:
            return self._con.execute(sql, params or []).df()

    def close(self) -> None:
        with self._lock:
            self._con.close()


def open_lakehouse(
    cfg: Config,
    *,
    version: int | None = None,
    as_of: str | datetime | None = None,
    tables: Iterable[str] = (),
) -> Lakehouse:
    """A `Lakehouse` with `tables` (default: every existing table) at a version or as of a time."""
    if version is not None and as_of is not None:
        raise ServingError("give --version or --as-of, not both")
    names = list(tables)
    for name in names:
        if name not in VIEWS:
            raise ServingError(f"unknown table {name!r}; known: {', '.join(sorted(VIEWS))}")
    pins: dict[str, int] = {}
    hidden: list[str] = []
    if version is not None or as_of is not None:
        targets = names or [v for v in VIEWS if is_delta_table(cfg.paths.table(VIEWS[v]))]
        ts = parse_timestamp(as_of) if isinstance(as_of, str) else as_of
        for name in targets:
            path = cfg.paths.table(VIEWS[name])
            if not is_delta_table(path):
                raise ServingError(f"table {name!r} does not exist yet at {path}")
            try:
                if version is not None:
                    latest = history(path)[-1].version
                    if version > latest:
                        raise ServingError(f"{name}: no version {version} (latest {latest})")
                    pins[name] = version
                else:
                    pins[name] = version_as_of(path, ts)
            except ServingError:
                if names:
                    raise
                hidden.append(name)  # "all tables": one younger than the request is left out
        if hidden:
            logger.info("no view for tables without that version: %s", ", ".join(hidden))
        logger.info("time travel: %s", ", ".join(f"{k}@v{v}" for k, v in pins.items()))
    return Lakehouse(cfg, versions=pins, hidden=hidden)


# --- gold/pipeline_metrics across its layouts --------------------------------------------------

# Each latency figure of gold/pipeline_metrics (jobs/metrics.py), with the older column names
# that held it: a table written before a column existed gains it on the next append, and its
# old rows keep their figure under the old name.
LATENCY_COLUMNS: dict[str, tuple[str, ...]] = {
    "produce_to_commit_ms": (),
    "produce_to_commit_min_ms": (),
    "data_age_ms": ("event_to_commit_latency_ms",),
}


def latency_columns(lake: Lakehouse, view: str = "pipeline_metrics") -> str:
    """SELECT items giving every figure of LATENCY_COLUMNS as a DOUBLE under its current name,
    whichever layout the table has: from its old column in old rows, NULL where no column
    holds it."""
    have = set(lake.columns(view))
    items = []
    for name, older in LATENCY_COLUMNS.items():
        present = [c for c in (name, *older) if c in have]
        expr = (f"coalesce({', '.join(present)})" if len(present) > 1
                else present[0] if present else "NULL")
        items.append(f"CAST({expr} AS DOUBLE) AS {name}")
    return ", ".join(items)


# --- Output formats --------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    """A JSON-friendly value: timestamps ISO-8601 UTC, decimals float, NaN null."""
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
            return value.isoformat().replace("+00:00", "Z")
        return value.isoformat()
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        return None
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, bytes | bytearray):
        return value.hex()
    return value


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else format(value, ".6g")
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        text = value.strftime("%Y-%m-%d %H:%M:%S")
        return text + f".{value.microsecond // 1000:03d}" if value.microsecond else text
    if isinstance(value, list | tuple | dict):
        return json.dumps(_plain(value))
    return str(_plain(value))


def format_table(result: Result, *, max_width: int = 40) -> str:
    """Fixed-width columns, numbers right-aligned, timestamps in UTC, long cells cut."""
    cells = [[_cell(v) for v in row] for row in result.rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row]
             for row in cells]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(result.columns)]
    numeric = [bool(result.rows) and all(
        isinstance(r[i], int | float | Decimal) and not isinstance(r[i], bool)
        for r in result.rows if r[i] is not None) for i in range(len(result.columns))]

    def line(values: list[str]) -> str:
        return " | ".join(v.rjust(w) if num else v.ljust(w)
                          for v, w, num in zip(values, widths, numeric, strict=True)).rstrip()

    out = [line(list(result.columns)), "-+-".join("-" * w for w in widths)]
    out += [line(r) for r in cells]
    n = len(result.rows)
    out.append(f"({n} row{'s' if n != 1 else ''})")
    return "\n".join(out)


def format_csv(result: Result) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(result.columns)
    for row in result.rows:
        writer.writerow(["" if v is None else
                         json.dumps(_plain(v)) if isinstance(v, list | tuple | dict) else
                         _plain(v) for v in row])
    return buf.getvalue().rstrip("\n")


def format_json(result: Result) -> str:
    records = [dict(zip(result.columns, map(_plain, row), strict=True)) for row in result.rows]
    return json.dumps(records, indent=1, allow_nan=False)


FORMATS = {"table": format_table, "csv": format_csv, "json": format_json}


def history_result(path: Path) -> Result:
    commits = history(path)
    columns = ["version", "timestamp", "operation", "mode", "rows_added", "rows_updated",
               "rows_deleted", "files_added", "files_removed"]
    return Result(columns, [(c.version, c.timestamp, c.operation, c.mode, c.rows_added,
                             c.rows_updated, c.rows_deleted, c.files_added, c.files_removed)
                            for c in commits])


# --- Notebook API ----------------------------------------------------------------------------


class Gold:
    """DataFrames of the lakehouse views for notebooks: `gold.alerts()`, `gold.table(...)`.

    Uses `conf/pipeline.yaml` and the environment unless given a Config (`gold.using(cfg)`).
    """

    def __init__(self, cfg: Config | None = None) -> None:
        self._cfg = cfg
        self._lake: Lakehouse | None = None

    def using(self, cfg: Config) -> Gold:
        return Gold(cfg)

    @property
    def lakehouse(self) -> Lakehouse:
        if self._lake is None:
            self._lake = Lakehouse(self._cfg or load_config())
        return self._lake

    def sql(self, query: str) -> pd.DataFrame:
        """Any SQL over the views (latest versions)."""
        return self.lakehouse.df(query)

    def table(self, name: str, *, version: int | None = None,
              as_of: str | datetime | None = None) -> pd.DataFrame:
        """A whole table, optionally as it was at a version or a time."""
        lake = self.lakehouse
        path = lake.path(name)
        if not is_delta_table(path):
            raise ServingError(f"table {name!r} does not exist yet at {path}")
        if version is None and as_of is None:
            return lake.df(f'SELECT * FROM "{name}"')
        if as_of is not None:
            ts = parse_timestamp(as_of) if isinstance(as_of, str) else as_of
            version = version_as_of(path, ts)
        return lake.df(f"SELECT * FROM delta_scan({_sql_str(str(path.resolve()))}, "
                       f"version => {int(version)})")

    def history(self, name: str) -> pd.DataFrame:
        import pandas as pd

        res = history_result(self.lakehouse.path(name))
        return pd.DataFrame(res.rows, columns=res.columns)

    def alerts(self) -> pd.DataFrame:
        return self.sql('SELECT * FROM "alerts" ORDER BY event_time DESC')

    def sensor_stats_5m(self) -> pd.DataFrame:
        return self.table("sensor_stats_5m")

    def sensor_stats_10m(self) -> pd.DataFrame:
        return self.table("sensor_stats_10m")

    def location_stats_5m(self) -> pd.DataFrame:
        return self.table("location_stats_5m")

    def alert_counts_5m(self) -> pd.DataFrame:
        return self.table("alert_counts_5m")

    def sensor_status(self) -> pd.DataFrame:
        return self.table("sensor_status")

    def pipeline_metrics(self) -> pd.DataFrame:
        return self.table("pipeline_metrics")


gold = Gold()
