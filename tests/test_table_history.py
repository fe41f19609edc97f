"""A table's history costs its writers little as it grows: the log is listed from its last
checkpoint by name, log entries older than the configured retention are removed, and a live
writer compacts the small files of the partitions it writes.

Real Delta tables in a temporary folder, written through the session `build_spark` makes.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest
from delta.tables import DeltaTable
from pyspark.sql import functions as F

from jobs import streaming
from jobs.spark import LOCAL_LOG_STORE, table_properties
from jobs.streaming import compact_partitions, ensure_table, idempotent_write, keep_table_properties

RETENTION = "delta.logRetentionDuration"


def _names(iterator) -> list[str]:  # noqa: ANN001 - a py4j java.util.Iterator
    names = []
    while iterator.hasNext():
        names.append(iterator.next().getPath().getName())
    return names


def _version(spark, path: Path) -> int:  # noqa: ANN001
    return DeltaTable.forPath(spark, str(path)).history(1).first()["version"]


def _properties(spark, path: Path) -> dict[str, str]:  # noqa: ANN001
    rows = spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()
    return {r["key"]: r["value"] for r in rows}


def test_the_local_log_store_lists_what_hadoops_listing_does(spark, table_dir: Path) -> None:  # noqa: ANN001
    path = table_dir / "t"
    for i in range(13):  # a checkpoint at version 10, and commits on either side of it
        spark.range(i, i + 1).write.format("delta").mode("append").save(str(path))
    log = path / "_delta_log"
    (log / "00000000000000000004.json.junk").touch()  # a name Delta ignores, listed all the same
    jvm = spark._jvm  # noqa: SLF001
    conf = spark._jsc.hadoopConfiguration()  # noqa: SLF001
    ours = jvm.lakehouse.storage.LocalListingLogStore(conf)
    hadoops = jvm.io.delta.storage.HDFSLogStore(conf)
    for start in ("00000000000000000000", "00000000000000000004", "00000000000000000010.",
                  "00000000000000000012.json", "00000000000000000099"):
        prefix = jvm.org.apache.hadoop.fs.Path(str(log / start))
        expected = _names(hadoops.listFrom(prefix, conf))
        assert _names(ours.listFrom(prefix, conf)) == expected
        assert expected == sorted(n for n in os.listdir(log) if n >= start)
    assert spark.conf.get("spark.delta.logStore.file.impl") == LOCAL_LOG_STORE


def test_a_new_table_holds_the_configured_log_retention(spark, base_cfg, table_dir: Path  # noqa: ANN001
                                                        ) -> None:
    path = table_dir / "t"
    ensure_table(spark, path, spark.range(1).schema)
    wanted = table_properties(base_cfg)["logRetentionDuration"]
    assert wanted == f"interval {round(base_cfg.maintenance.log_retention_hours * 60)} minutes"
    assert _properties(spark, path)[RETENTION] == wanted
    assert _version(spark, path) == 0  # created with it: no commit to set it


def test_an_older_table_gains_the_log_retention_once(spark, base_cfg, table_dir: Path  # noqa: ANN001
                                                     ) -> None:
    path = table_dir / "t"
    spark.sql(f"CREATE TABLE delta.`{path}` (id BIGINT) USING delta "
              f"TBLPROPERTIES ('{RETENTION}' = 'interval 30 days')")
    spark.range(3).write.format("delta").mode("append").save(str(path))
    ensure_table(spark, path, spark.range(1).schema)
    wanted = table_properties(base_cfg)["logRetentionDuration"]
    assert _properties(spark, path)[RETENTION] == wanted
    version = _version(spark, path)
    assert keep_table_properties(spark, path) == {}  # holds it now: nothing to commit
    assert _version(spark, path) == version
    assert spark.read.format("delta").load(str(path)).count() == 3


def test_log_entries_past_the_retention_are_removed_at_a_checkpoint(
    spark, base_cfg, table_dir: Path  # noqa: ANN001
) -> None:
    path = table_dir / "t"
    jvm = spark._jvm  # noqa: SLF001
    # The table's log on a clock of its own (Delta's tests do the same), so that days pass.
    clock = jvm.org.apache.spark.util.ManualClock(int(time.time() * 1000))
    jvm.org.apache.spark.sql.delta.DeltaLog.forTable(
        spark._jsparkSession, jvm.org.apache.hadoop.fs.Path(str(path)), clock)  # noqa: SLF001
    ensure_table(spark, path, spark.range(1).schema)
    for i in range(13):  # versions 1..13, a checkpoint at 10: within the retention, kept
        spark.range(i, i + 1).write.format("delta").mode("append").save(str(path))
    log = path / "_delta_log"
    assert min(int(f.name[:20]) for f in log.glob("*.json")) == 0
    # Past the retention (168 h here; Delta cleans by whole days of commit time).
    clock.advance(int((base_cfg.maintenance.log_retention_hours / 24 + 2) * 86400 * 1000))
    for i in range(13, 21):  # versions 14..21: the checkpoint at 20 cleans the log up
        spark.range(i, i + 1).write.format("delta").mode("append").save(str(path))
    assert sorted(int(f.name[:20]) for f in log.glob("*.json")) == list(range(20, 22))
    table = spark.read.format("delta")
    assert sorted(r.id for r in table.load(str(path)).collect()) == list(range(21))
    assert DeltaTable.forPath(spark, str(path)).history().count() == 2  # history: 20, 21
    with pytest.raises(Exception, match="(?i)time travel|version"):  # older versions are gone
        table.option("versionAsOf", 12).load(str(path)).count()


def _files(spark, path: Path, day: dt.date) -> int:  # noqa: ANN001
    """The data files the table's current version holds in the partition ``day``."""
    table = spark.read.format("delta").load(str(path)).where(F.col("day") == F.lit(day))
    return table.select(F.input_file_name()).distinct().count()


def test_a_live_writer_compacts_the_partitions_it_writes(spark, table_dir: Path) -> None:  # noqa: ANN001
    session = spark.newSession()  # the setting compact_partitions makes stays in this one
    path = table_dir / "t"
    today, other = dt.date(2026, 12, 3), dt.date(2026, 12, 1)

    def batch(i: int):  # noqa: ANN202 - two files per batch: one per partition
        return session.createDataFrame([(i, today), (100 + i, other)], "id INT, day DATE")

    replaced = []
    for i in range(6):
        assert idempotent_write(batch(i), path, app_id="w", batch_id=i, partition_by=("day",))
        replaced.append(compact_partitions(session, path, "day", [today], batch_id=i, every=3,
                                           below_mb=16))
    assert replaced == [0, 0, 3, 0, 0, 4]  # batches 2 and 5: three new files, then 3 + 1
    assert _files(session, path, today) == 1
    assert _files(session, path, other) == 6  # a partition not named is left alone
    rows = sorted(r.id for r in session.read.format("delta").load(str(path)).collect())
    assert rows == list(range(6)) + list(range(100, 106))
    # A stream reader of the table sees every row once: the compactions change no data.
    seen = (session.readStream.format("delta").load(str(path)).writeStream
            .format("memory").queryName("compacted_table_stream").trigger(availableNow=True)
            .start())
    seen.awaitTermination(120)
    assert sorted(r.id for r in session.table("compacted_table_stream").collect()) == rows
    # A replay of the last batch is still recognised, from this process's memory and from
    # the table's history (a restarted process), across the compaction commit.
    assert not idempotent_write(batch(5), path, app_id="w", batch_id=5, partition_by=("day",))
    streaming._COMMITTED.clear()  # noqa: SLF001
    assert not idempotent_write(batch(5), path, app_id="w", batch_id=5, partition_by=("day",))
    version = _version(session, path)
    # Files above the size bound are not rewritten; every=0 never compacts.
    assert compact_partitions(session, path, "day", [other], batch_id=8, every=3,
                              below_mb=1e-6) == 0
    assert compact_partitions(session, path, "day", [other], batch_id=8, every=0,
                              below_mb=16) == 0
    assert _version(session, path) == version
