"""Helpers every streaming job shares: tables, checkpoints, idempotent Delta writes."""

from __future__ import annotations

import functools
import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

from delta.tables import DeltaTable
from py4j.protocol import Py4JJavaError
from pyspark import inheritable_thread_target
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQueryListener
from pyspark.sql.streaming.listener import JStreamingQueryListener
from pyspark.sql.types import StructType

from jobs.spark import TABLE_DEFAULTS

logger = logging.getLogger(__name__)

# The observation `observe_produce_time` adds to a query: the Kafka record timestamps (produce
# times) of the rows each micro-batch read, as they appear in the progress JSON under
# observedMetrics[PRODUCE_OBSERVATION] (jobs/metrics.py reads them by these names).
PRODUCE_OBSERVATION = "produce_time"
PRODUCE_MIN_MS = "min_produce_ms"
PRODUCE_MAX_MS = "max_produce_ms"
PRODUCE_ROWS = "produce_rows"
PRODUCE_TIME_COLUMN = "kafka_timestamp"


def observe_produce_time(df: DataFrame) -> DataFrame:
    """``df`` unchanged, with the oldest and newest produce time and the row count of each
    micro-batch reported in the query's progress (``observedMetrics``).

    Call it on a query's input while ``kafka_timestamp`` is still a column, before any
    aggregation, de-duplication or stateful operator: what is counted is what the batch read.
    A query may hold the observation once only (Spark refuses two of the same name in a plan).
    """
    produced = F.unix_millis(F.col(PRODUCE_TIME_COLUMN))
    return df.observe(
        PRODUCE_OBSERVATION,
        F.min(produced).alias(PRODUCE_MIN_MS),
        F.max(produced).alias(PRODUCE_MAX_MS),
        F.count(F.lit(1)).alias(PRODUCE_ROWS),
    )


def in_few_tasks(df: DataFrame, tasks: int) -> DataFrame:
    """``df`` in ``tasks`` tasks (spark.shuffle_partitions), not one per Kafka partition or
    bronze file: every task pays a fixed cost in code generation (Delta's per-file statistics
    tracker, the projections outside whole-stage code), which a JFR profile of the demo found
    to be most of a small micro-batch's work. Fewer, larger files too."""
    return df.coalesce(tasks)


def ensure_table(
    spark: SparkSession, path: Path, schema: StructType, partition_by: tuple[str, ...] = ()
) -> DeltaTable:
    """Create the Delta table empty with its declared schema unless it exists.

    A process killed while creating a table can leave a ``_delta_log`` folder with no commit
    in it; Delta then reports the table as missing and refuses to create it. Such a log holds
    nothing (no commit means no table), so it is removed and the table created. Only the job
    that owns a table calls this while nothing else writes it (the runner starts jobs one
    after another), so no concurrent creation can be mistaken for a crashed one.
    """
    log = path / "_delta_log"
    if log.is_dir() and not any(log.glob("*.json")) and not any(log.glob("*.checkpoint*")):
        logger.warning("removing the log of a table whose creation never committed: %s", path)
        shutil.rmtree(log)
    builder = DeltaTable.createIfNotExists(spark).location(str(path)).addColumns(schema)
    if partition_by:
        builder = builder.partitionedBy(*partition_by)
    table = builder.execute()
    keep_table_properties(spark, path)
    return table


def keep_table_properties(spark: SparkSession, path: Path) -> dict[str, str]:
    """Give an existing table the session's table-property defaults it lacks or holds other
    values of (``spark.databricks.delta.properties.defaults.*``, which Delta applies only to
    tables it creates); one metadata commit, none when it holds them. Returns what changed."""
    wanted = {"delta." + key[len(TABLE_DEFAULTS):]: value
              for key, value in spark.conf.getAll.items() if key.startswith(TABLE_DEFAULTS)}
    held = {row["key"]: row["value"]
            for row in spark.sql(f"SHOW TBLPROPERTIES delta.`{path}`").collect()}
    changed = {key: value for key, value in wanted.items() if held.get(key) != value}
    if changed:
        settings = ", ".join(f"'{key}' = '{value}'" for key, value in sorted(changed.items()))
        spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ({settings})")
        logger.info("%s: table properties set: %s", path.name, settings)
    return changed


def reset_if_first_batch_uncommitted(checkpoint: Path) -> bool:
    """Drop a stateful query's checkpoint that was killed before its first batch committed.

    Spark 4 refuses to restart such a checkpoint (STATE_STORE_CHECKPOINT_LOCATION_NOT_EMPTY:
    offsets exist for batch 0 but its state was never committed). Nothing of it was committed,
    so starting afresh re-reads the same input; callers use it only for queries whose sink is
    keyed (MERGE by key or alert_id), where re-running batch 0 writes the same rows.
    """
    offsets, commits = checkpoint / "offsets", checkpoint / "commits"
    started = offsets.is_dir() and any(p.name.isdigit() for p in offsets.iterdir())
    committed = commits.is_dir() and any(p.name.isdigit() for p in commits.iterdir())
    if started and not committed and (checkpoint / "state").exists():
        logger.warning("checkpoint %s was killed before its first commit: starting it afresh",
                       checkpoint)
        shutil.rmtree(checkpoint)
        return True
    return False


def table_exists(spark: SparkSession, path: Path) -> bool:
    return (path / "_delta_log").is_dir() and DeltaTable.isDeltaTable(spark, str(path))


def holds_no_files(spark: SparkSession, path: Path) -> bool:
    """Does the Delta table's current version hold no data files (a table just created)?

    Read from the version checksum file Delta writes after each commit (`numFiles`, a field
    of the protocol's `.crc` file), which costs a file read; DESCRIBE DETAIL would
    reconstruct the table state (four Spark jobs, about 1.5 s here). A version without a
    checksum file (a writer killed between its commit and the checksum) is asked that way.
    """
    log = path / "_delta_log"
    version = _latest_version(log)
    checksum = log / f"{version:020d}.crc" if version is not None else None
    if checksum is not None and checksum.is_file():
        try:
            return int(json.loads(checksum.read_text())["numFiles"]) == 0
        except (ValueError, KeyError, TypeError):
            logger.warning("unreadable checksum file %s: asking Delta", checksum)
    detail = DeltaTable.forPath(spark, str(path)).detail().select("numFiles").first()
    return detail is not None and detail["numFiles"] == 0


def _latest_version(log: Path) -> int | None:
    """The newest commit version in a Delta log, found from its last checkpoint onwards by
    file name (a few stat calls: listing a log of months of commits would grow with it)."""
    version = -1
    try:
        version = int(json.loads((log / "_last_checkpoint").read_text())["version"])
    except (OSError, ValueError, KeyError, TypeError):
        pass  # no checkpoint yet: from the first commit
    while (log / f"{version + 1:020d}.json").is_file():
        version += 1
    return version if version >= 0 else None


def last_commit_rows(spark: SparkSession, path: Path) -> int:
    """Rows written by the table's latest commit (its operationMetrics.numOutputRows)."""
    last = DeltaTable.forPath(spark, str(path)).history(1).select("operationMetrics").first()
    return int((last["operationMetrics"] or {}).get("numOutputRows", 0)) if last else 0


def checkpoint_query_id(checkpoint: Path) -> str:
    """The id Spark stored in the checkpoint when the query first started.

    It is stable across restarts of the same checkpoint and new for a new checkpoint, which
    is what an idempotent writer's transaction app id needs: a reset checkpoint restarts batch
    ids at 0 and must not be mistaken for a replay of already-committed batches.
    """
    meta = checkpoint / "metadata"
    return json.loads(meta.read_text().splitlines()[0])["id"]


# A writer's micro-batch commit names itself in the commit's userMetadata, {"app": app_id,
# "batch": batch_id}, so that a replayed batch can be recognised from the table's history.
# Delta's own transaction ids (txnAppId/txnVersion) do the same, but Delta 4.4 answers
# their lookup by reconstructing the whole table state (three Spark jobs, about 0.7 s here,
# on every write), while reading the latest commits' userMetadata costs one small job.
_MARKER_RECENT = 20


def _marker(text: str | None) -> tuple[str, int] | None:
    try:
        m = json.loads(text) if text else None
    except ValueError:
        return None
    if isinstance(m, dict) and isinstance(m.get("app"), str) and isinstance(m.get("batch"), int):
        return m["app"], m["batch"]
    return None


# (table, app_id) -> (the latest batch that writer committed, the table version then), as
# this process last saw it: a writer's own successful commit, or the markers' answer. While
# the table is still at that version nobody has committed since, so a running query reads
# the history only for its first batch (the one a restart may replay) or after another
# writer's commit; reading the markers is a Spark job (about 0.8 CPU-s here), as much as the
# append it guards. A write that raises drops the entry: its commit may have landed.
_COMMITTED: dict[tuple[str, str], tuple[int, int | None]] = {}
_COMMITTED_LOCK = threading.Lock()


def committed_batch(spark: SparkSession, path: Path, app_id: str) -> int | None:
    """The latest batch id ``app_id`` committed to the table, from the commits' markers
    (newest first: the latest commit of a single writer holds its highest batch id); None
    when no commit in the table's history carries one of this writer's markers (or there is
    no table yet). Answered from `_COMMITTED` while the table is at the version it knew."""
    key = (str(path), app_id)
    version = _latest_version(path / "_delta_log")
    with _COMMITTED_LOCK:
        known = _COMMITTED.get(key)
    if known is not None and known[1] == version:
        return known[0]
    found = _marker_in_history(spark, path, app_id)
    if found is not None:
        with _COMMITTED_LOCK:
            _COMMITTED[key] = (found, version)
    return found


def _never_written(spark: SparkSession, path: Path) -> bool:
    """No commit but the creation (an empty version 0), or no table at all."""
    version = _latest_version(path / "_delta_log")
    return version is None or (version == 0 and holds_no_files(spark, path))


def _marker_in_history(spark: SparkSession, path: Path, app_id: str) -> int | None:
    if not table_exists(spark, path):
        return None
    table = DeltaTable.forPath(spark, str(path))
    for limit in (_MARKER_RECENT, None):  # the recent commits first, the whole history if need be
        history = table.history(limit) if limit else table.history()
        for row in history.select("userMetadata").collect():
            marker = _marker(row["userMetadata"])
            if marker and marker[0] == app_id:
                return marker[1]
    return None


def idempotent_write(
    df: DataFrame, path: Path, *, app_id: str, batch_id: int, mode: str = "append",
    partition_by: tuple[str, ...] = (), merge_schema: bool = False,
) -> bool:
    """Write once per (app_id, batch_id); False when that batch was committed already.

    One writer per app_id, batch ids increasing (a streaming query's foreachBatch).
    """
    committed = committed_batch(df.sparkSession, path, app_id)
    if committed is not None and committed >= batch_id:
        logger.info("%s: batch %d already committed by %s, skipped", path.name, batch_id, app_id)
        return False
    marked_write(df, path, app_id=app_id, batch_id=batch_id, committed=committed, mode=mode,
                 partition_by=partition_by, merge_schema=merge_schema)
    return True


def marked_write(
    df: DataFrame, path: Path, *, app_id: str, batch_id: int, committed: int | None,
    mode: str = "append", partition_by: tuple[str, ...] = (), merge_schema: bool = False,
) -> None:
    """Write ``df`` as batch ``batch_id`` of ``app_id``, which `committed_batch` found not yet
    committed (``committed`` is what it returned). When the table holds no marker of this
    writer yet (a new writer, or one whose earlier commits used Delta transaction ids only),
    Delta's transaction id decides as well, and the commit carries both; not into a table no
    writer has written yet (only its creation commit, or none), where no transaction id can
    be, and whose first write would pay for Delta's lookup of one (a reconstruction of the
    table state: most of the first alert's write on a cold JVM).
    """
    writer = (df.write.format("delta").mode(mode)
              .option("userMetadata", json.dumps({"app": app_id, "batch": batch_id})))
    if committed is None and not _never_written(df.sparkSession, path):
        writer = writer.option("txnAppId", app_id).option("txnVersion", batch_id)
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    if merge_schema:
        writer = writer.option("mergeSchema", "true")
    key = (str(path), app_id)
    try:
        writer.save(str(path))
    except BaseException:
        with _COMMITTED_LOCK:
            _COMMITTED.pop(key, None)
        raise
    version = _latest_version(path / "_delta_log")
    with _COMMITTED_LOCK:
        _COMMITTED[key] = (batch_id, version)


def is_write_conflict(exc: BaseException) -> bool:
    """Whether ``exc`` is Delta's optimistic-concurrency conflict (another commit touched the
    files this one read), which a retry or a skip resolves."""
    return "Concurrent" in type(exc).__name__ + str(exc)[:300]


def compact_partitions(spark: SparkSession, path: Path, column: str | None,
                       dates: Iterable[date] = (), *, batch_id: int, every: int,
                       below_mb: float) -> int:
    """A live writer's own compaction, on every ``every``-th batch (0: never): OPTIMIZE the
    partitions ``dates`` of ``column`` it writes (``column`` None: the whole of an
    unpartitioned table), bin-packing only the files smaller than ``below_mb``. Returns how
    many files it replaced.

    A table written every trigger gains a file per task and batch (17,000 a day at 5 s), and
    a MERGE or a reader of a partition pays for each file's entry. Files already compacted
    past ``below_mb`` are left alone, so one compaction rewrites at most that much plus the
    new small files, however large the partition has grown. The commit has dataChange=false:
    stream readers of the table skip it, and the writer's batch markers stay in the history.
    Run by the writer after its own commit, so it never conflicts with it.
    """
    wanted = sorted(set(dates))
    if every <= 0 or (batch_id + 1) % every or (column is not None and not wanted):
        return 0
    # Delta's session setting (the files OPTIMIZE takes); a micro-batch's session is the
    # query's own clone, so `lakehouse maintain` keeps Delta's default.
    spark.conf.set("spark.databricks.delta.optimize.minFileSize", str(int(below_mb * 2**20)))
    log = path / "_delta_log"
    before = _latest_version(log)
    in_dates = ", ".join(f"DATE'{d.isoformat()}'" for d in wanted)
    optimize = DeltaTable.forPath(spark, str(path)).optimize()
    if column is not None:
        optimize = optimize.where(f"{column} IN ({in_dates})")
    try:
        metrics = optimize.executeCompaction().first()
    except Exception as exc:
        if not is_write_conflict(exc):
            raise
        # `lakehouse maintain` compacted the same files first: nothing is lost by skipping.
        logger.warning("%s: compaction skipped, a concurrent OPTIMIZE won", path.name)
        return 0
    removed = int(metrics["metrics"]["numFilesRemoved"]) if metrics is not None else 0
    if removed:
        after = _latest_version(log)
        # The writers' markers are unchanged by this commit: the cache stays valid across it.
        with _COMMITTED_LOCK:
            for key, (batch, version) in list(_COMMITTED.items()):
                if key[0] == str(path) and version == before:
                    _COMMITTED[key] = (batch, after)
        logger.info("%s: compacted %d small files of %s into %d", path.name, removed,
                    in_dates or "the table", int(metrics["metrics"]["numFilesAdded"]))
    return removed


# What a JVM call inside a micro-batch raises when query.stop() interrupts it.
_INTERRUPTIONS = ("java.lang.InterruptedException", "java.io.InterruptedIOException",
                  "java.nio.channels.ClosedByInterruptException")


class BatchInterrupted(RuntimeError):
    """A foreachBatch function cut short by its query's stop, in words Spark recognises."""


BatchFunction = Callable[[DataFrame, int], None]


def side_by_side(spark: SparkSession, *writes: Callable[[], None]) -> None:
    """Run independent writes of one micro-batch at once; return when all are done (the first
    failure is raised). One write's driver-side planning and commit overlaps another's
    tasks; their jobs keep the stream thread's job group and scheduler pool."""
    with ThreadPoolExecutor(max_workers=len(writes), thread_name_prefix="batch-write") as pool:
        futures = [pool.submit(inheritable_thread_target(spark)(w)) for w in writes]
        for f in futures:
            f.result()


def stoppable(fn: BatchFunction) -> BatchFunction:
    """``fn`` for foreachBatch, handing a stop's interruption back to Spark in two lines.

    Spark tells a stop from a failure by a regex over the Python traceback py4j sends back
    (``StreamExecution.PROXY_ERROR``), which repeats an alternation group over all the text
    after "An error occurred while calling". Over a whole traceback with the Java stack (tens of
    kB) that recursion overflowed the stream thread's stack: a java.lang.StackOverflowError in
    java.util.regex at nearly every stop. The first two lines are all the regex needs.
    """
    @functools.wraps(fn)
    def run(batch: DataFrame, batch_id: int) -> None:
        try:
            fn(batch, batch_id)
        except Py4JJavaError as exc:
            head = "\n".join(str(exc).strip().splitlines()[:2])
            if not any(name in head for name in _INTERRUPTIONS):
                raise
            logger.debug("batch %d interrupted by the query's stop", batch_id, exc_info=True)
            raise BatchInterrupted(f"py4j.protocol.Py4JJavaError: {head}") from None

    return run


class ProgressJsonListener(StreamingQueryListener):
    """A StreamingQueryListener that gets each progress event as its JSON object.

    PySpark's own bridge turns a progress event into Python objects by iterating each of its
    Java maps through py4j, and py4j ends every such iteration on a Java
    NoSuchElementException. PySpark's error conversion then asks the JVM about twelve times
    whether the exception is of some class, and each question looks up class names that do
    not exist, which scans every jar on the class path. That made the listener thread the
    third-busiest of the driver in a cold start (JFR: 9 % of its samples, three quarters of
    them in jar lookups). Here the JVM serialises the progress to JSON in one call instead.
    Subclasses implement ``on_progress``; started, idle and terminated events are PySpark's.
    """

    def on_progress(self, progress: dict[str, Any]) -> None:
        """One progress event, as ``StreamingQueryProgress.json`` parsed."""

    def onQueryProgress(self, event: Any) -> None:  # noqa: N802 - Spark's API
        # Abstract in the base class; reached only through PySpark's own bridge, which
        # _jlistener below replaces.
        self.on_progress(json.loads(event.progress.json))

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802
        pass

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        pass

    @property
    def _jlistener(self) -> Any:
        # PySpark's StreamingQueryListener._jlistener with the bridge below in place of its own.
        from pyspark import SparkContext

        if not hasattr(self, "_jlistenerobj"):
            jvm: Any = SparkContext._jvm  # noqa: SLF001
            self._jlistenerobj = jvm.PythonStreamingQueryListenerWrapper(_JsonBridge(self))
        return self._jlistenerobj


class _JsonBridge(JStreamingQueryListener):
    """The py4j callback object: progress events go over as one JSON string."""

    pylistener: ProgressJsonListener

    def onQueryProgress(self, jevent: Any) -> None:  # noqa: N802
        self.pylistener.on_progress(json.loads(jevent.progress().json()))
