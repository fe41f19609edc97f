"""Writes that name their micro-batch: a replayed batch is recognised from the table's history.

Real Delta tables in a temporary folder: the marker each commit carries, Delta's own
transaction ids for tables written before markers, and other writers' commits in between.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from delta.tables import DeltaTable

from jobs import streaming
from jobs.streaming import committed_batch, ensure_table, holds_no_files, idempotent_write


def _rows(spark, path: Path) -> list[int]:  # noqa: ANN001
    return sorted(r.id for r in spark.read.format("delta").load(str(path)).collect())


def test_a_batch_is_written_once_and_its_replay_skipped(
    spark, table_dir: Path, monkeypatch: pytest.MonkeyPatch  # noqa: ANN001
) -> None:
    monkeypatch.setattr(streaming, "_MARKER_RECENT", 3)  # the recent commits looked at first
    path = table_dir / "t"
    assert idempotent_write(spark.range(0, 2), path, app_id="a", batch_id=0)
    assert committed_batch(spark, path, "a") == 0
    assert not idempotent_write(spark.range(0, 2), path, app_id="a", batch_id=0)
    assert idempotent_write(spark.range(2, 3), path, app_id="a", batch_id=1)
    # Another writer's commits in between, more than the recent ones looked at first.
    for i in range(streaming._MARKER_RECENT + 2):  # noqa: SLF001
        assert idempotent_write(spark.range(100 + i, 101 + i), path, app_id="b", batch_id=i)
    spark.range(500, 501).write.format("delta").mode("append").save(str(path))  # unmarked
    assert committed_batch(spark, path, "a") == 1
    assert not idempotent_write(spark.range(2, 3), path, app_id="a", batch_id=1)
    assert committed_batch(spark, path, "c") is None
    assert _rows(spark, path) == [0, 1, 2, *range(100, 100 + streaming._MARKER_RECENT + 2),  # noqa: SLF001
                                  500]


def test_a_writer_knows_its_own_commits_and_forgets_one_that_failed(
    spark, table_dir: Path  # noqa: ANN001
) -> None:
    path = table_dir / "t"
    assert idempotent_write(spark.range(0, 2), path, app_id="a", batch_id=0)
    # Its own commit is known without reading the history, while nobody commits after it.
    known = streaming._COMMITTED[(str(path), "a")]  # noqa: SLF001
    assert known[0] == 0
    assert committed_batch(spark, path, "a") == 0
    bad = spark.range(2, 3).selectExpr("cast(id AS string) AS id")  # a schema Delta refuses
    with pytest.raises(Exception, match="(?i)schema|merge"):
        idempotent_write(bad, path, app_id="a", batch_id=1)
    # A write that raised may have committed: the next lookup reads the markers again.
    assert (str(path), "a") not in streaming._COMMITTED  # noqa: SLF001
    assert committed_batch(spark, path, "a") == 0
    assert idempotent_write(spark.range(2, 3), path, app_id="a", batch_id=1)
    assert _rows(spark, path) == [0, 1, 2]


def test_a_table_written_with_transaction_ids_only_is_not_written_twice(
    spark, table_dir: Path  # noqa: ANN001
) -> None:
    path = table_dir / "t"
    (spark.range(0, 2).write.format("delta").mode("append")
     .option("txnAppId", "a").option("txnVersion", 5).save(str(path)))
    assert committed_batch(spark, path, "a") is None
    # No marker: Delta's transaction id decides, and skips the replay of batch 5.
    idempotent_write(spark.range(0, 2), path, app_id="a", batch_id=5)
    assert _rows(spark, path) == [0, 1]
    assert idempotent_write(spark.range(2, 3), path, app_id="a", batch_id=6)
    assert committed_batch(spark, path, "a") == 6
    assert _rows(spark, path) == [0, 1, 2]
    last = DeltaTable.forPath(spark, str(path)).history(1).first()
    assert last["userMetadata"] == '{"app": "a", "batch": 6}'


def test_an_overwrite_is_skipped_on_replay_too(spark, table_dir: Path) -> None:  # noqa: ANN001
    path = table_dir / "t"
    assert idempotent_write(spark.range(0, 3), path, app_id="s", batch_id=0, mode="overwrite")
    assert idempotent_write(spark.range(3, 4), path, app_id="s", batch_id=1, mode="overwrite")
    assert not idempotent_write(spark.range(9, 10), path, app_id="s", batch_id=1,
                                mode="overwrite")
    assert _rows(spark, path) == [3]


def test_holds_no_files_from_the_checksum_and_without_it(spark, table_dir: Path) -> None:  # noqa: ANN001
    path = table_dir / "t"
    ensure_table(spark, path, spark.range(1).schema)
    assert holds_no_files(spark, path)
    spark.range(0, 2).write.format("delta").mode("append").save(str(path))
    assert not holds_no_files(spark, path)
    DeltaTable.forPath(spark, str(path)).delete()
    assert holds_no_files(spark, path)
    spark.range(0, 2).write.format("delta").mode("append").save(str(path))
    for crc in (path / "_delta_log").glob("*.crc"):
        crc.unlink()  # a writer killed before its checksum: Delta is asked instead
    assert not holds_no_files(spark, path)


def test_holds_no_files_past_a_log_checkpoint(spark, table_dir: Path) -> None:  # noqa: ANN001
    path = table_dir / "t"
    ensure_table(spark, path, spark.range(1).schema)
    for i in range(11):  # Delta checkpoints every 10 commits: the newest is found past it
        spark.range(i, i + 1).write.format("delta").mode("append").save(str(path))
    assert (path / "_delta_log" / "_last_checkpoint").is_file()
    assert not holds_no_files(spark, path)
    DeltaTable.forPath(spark, str(path)).delete()
    assert holds_no_files(spark, path)


def _actions(path: Path, version: int) -> set[str]:
    lines = (path / "_delta_log" / f"{version:020d}.json").read_text().splitlines()
    return {next(iter(json.loads(line))) for line in lines}


def test_a_new_tables_first_write_carries_no_transaction_id_an_older_tables_does(
    spark, table_dir: Path  # noqa: ANN001
) -> None:
    new = table_dir / "new"
    ensure_table(spark, new, spark.range(1).schema)
    assert idempotent_write(spark.range(0, 2), new, app_id="a", batch_id=0)
    assert "txn" not in _actions(new, 1)  # nothing written before: no id to look up
    old = table_dir / "old"
    spark.range(0, 1).write.format("delta").save(str(old))  # written before markers existed
    assert idempotent_write(spark.range(1, 2), old, app_id="a", batch_id=0)
    assert "txn" in _actions(old, 1)
    assert idempotent_write(spark.range(2, 3), old, app_id="a", batch_id=1)
    assert "txn" not in _actions(old, 2)  # its marker decides from now on
