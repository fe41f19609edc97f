"""`lakehouse maintain`: OPTIMIZE (compact small files) then VACUUM every existing table.

Safe next to running streams: OPTIMIZE commits with ``dataChange=false`` so Delta stream readers
skip it, and a write conflict with a concurrent MERGE fails only the OPTIMIZE of that table
(retried, then reported). VACUUM deletes only files that no version younger than the retention
references, so time travel back to the retention and any stream's unread snapshots still work;
Delta's own retention check stays on and a retention below its 168 h floor is refused here.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from pyspark.sql import SparkSession

from jobs.config import Config, MaintenanceConfig
from jobs.streaming import is_write_conflict
from jobs.tables import VIEWS

logger = logging.getLogger(__name__)

# Delta's default delta.deletedFileRetentionDuration; VACUUM below it fails its safety check.
MIN_RETENTION_HOURS = 168.0
OPTIMIZE_ATTEMPTS = 3


class MaintenanceError(RuntimeError):
    """Maintenance cannot run as configured; the message says what to change."""


@dataclass(frozen=True)
class TableReport:
    table: str
    version_before: int
    version_after: int
    files_before: int       # data files of the current version
    files_after: int
    disk_files_before: int  # data files on disk (all versions within retention)
    disk_files_after: int
    rows_before: int
    rows_after: int
    error: str | None = None

    def describe(self) -> str:
        text = (f"{self.table:<26} files {self.files_before:>5} -> {self.files_after:<5} "
                f"on disk {self.disk_files_before:>5} -> {self.disk_files_after:<5} "
                f"rows {self.rows_after}  version {self.version_before} -> {self.version_after}")
        return text + (f"  FAILED: {self.error}" if self.error else "")


def disk_files(path: Path) -> int:
    return sum(1 for p in path.rglob("*.parquet") if "_delta_log" not in p.parts)


def _detail(spark: SparkSession, path: Path) -> tuple[int, int, int]:
    """(version, data files of the current version, rows)."""
    from delta.tables import DeltaTable

    table = DeltaTable.forPath(spark, str(path))
    version = table.history(1).select("version").first()[0]
    files = table.detail().select("numFiles").first()[0]
    rows = spark.read.format("delta").option("versionAsOf", version).load(str(path)).count()
    return int(version), int(files), int(rows)


def maintain_table(spark: SparkSession, path: Path, mcfg: MaintenanceConfig) -> TableReport:
    """OPTIMIZE then VACUUM one table; a failure is reported, not raised."""
    from delta.tables import DeltaTable

    check_retention(mcfg)
    v0, f0, r0 = _detail(spark, path)
    d0 = disk_files(path)
    error = None
    table = DeltaTable.forPath(spark, str(path))
    try:
        if mcfg.optimize:
            for attempt in range(1, OPTIMIZE_ATTEMPTS + 1):
                try:
                    table.optimize().executeCompaction()
                    break
                except Exception as exc:  # concurrent MERGE touched the same files
                    if not is_write_conflict(exc) or attempt == OPTIMIZE_ATTEMPTS:
                        raise
                    logger.warning("OPTIMIZE %s conflicted with a writer; retry %d", path.name,
                                   attempt)
                    time.sleep(2.0 * attempt)
        if mcfg.vacuum:
            table.vacuum(float(mcfg.retention_hours))
    except Exception as exc:  # noqa: BLE001 - one table's failure must not stop the others
        error = str(exc).splitlines()[0][:300]
        logger.error("maintenance of %s failed: %s", path, error)
    v1, f1, r1 = _detail(spark, path)
    return TableReport(str(path), v0, v1, f0, f1, d0, disk_files(path), r0, r1, error)


def check_retention(mcfg: MaintenanceConfig) -> None:
    if mcfg.retention_hours < MIN_RETENTION_HOURS:
        raise MaintenanceError(
            f"maintenance.retention_hours = {mcfg.retention_hours} is below Delta's safety "
            f"floor of {MIN_RETENTION_HOURS:.0f} h: VACUUM could delete files that time travel "
            "or a running stream still needs. Use 168 or more.")


def existing_tables(cfg: Config, views: Iterable[str] = ()) -> list[tuple[str, Path]]:
    names = list(views) or list(VIEWS)
    unknown = [v for v in names if v not in VIEWS]
    if unknown:
        raise MaintenanceError(f"unknown table(s) {unknown}; known: {', '.join(sorted(VIEWS))}")
    out = []
    for view in names:
        path = cfg.paths.table(VIEWS[view])
        if (path / "_delta_log").is_dir():
            out.append((VIEWS[view], path))
    return out


def maintain(spark: SparkSession, cfg: Config, views: Iterable[str] = ()) -> list[TableReport]:
    """Maintain every existing table (or the given views); one report per table."""
    check_retention(cfg.maintenance)
    reports = []
    for name, path in existing_tables(cfg, views):
        started = time.monotonic()
        report = maintain_table(spark, path, cfg.maintenance)
        reports.append(dataclasses.replace(report, table=name))
        logger.info("maintained %s in %.1f s: %s", name, time.monotonic() - started,
                    reports[-1].describe())
    return reports
