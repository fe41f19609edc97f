"""Checks `lakehouse run` makes before Spark starts.

A bad setup (an unwritable data folder, missing jars, no broker, a damaged or deleted
checkpoint) should end in one message that names the fix, within a second or two, instead of
a JVM stack trace after Spark has started, or worse, a run that silently reads data twice.

What a damaged or deleted checkpoint means for each layer (README "Checkpoint recovery"):

- bronze: its rows carry their Kafka coordinates, so with no checkpoint it resumes after the
  highest offset per partition the table holds (nothing read twice, nothing skipped);
- silver: readings are MERGEd by key, but quarantine rows are appended under the checkpoint's
  query id; with no checkpoint and a non-empty quarantine it refuses until the quarantine is
  removed (it is then rebuilt from bronze);
- gold: every sink is keyed (MERGE, or a whole-table overwrite), so with no checkpoint a query
  re-reads silver from the start and writes the same rows again.

A checkpoint whose files are damaged is never repaired here: the message says which file, and
how to start that query afresh under the rules above.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import duckdb

from jobs import broker, kafka_client
from jobs.config import Config
from jobs.tables import BRONZE_RAW, QUARANTINE

logger = logging.getLogger(__name__)

RECOVERY_DOC = 'README.md, "Checkpoint recovery"'
_VERSION_LINE = re.compile(r"v\d+")


class PreflightError(RuntimeError):
    """The pipeline must not start as configured; the message names the fix."""


def check(cfg: Config, layers: Sequence[str], *, broker_later: bool = False) -> Config:
    """Run every check for ``layers``; return the config to run with (bronze may resume).

    ``broker_later``: leave the broker and bronze's resume point to `await_broker`, so Spark
    can start while the broker does.
    """
    from jobs.spark import connector_jars  # raises SparkSetupError naming scripts/setup.sh

    check_writable(cfg)
    connector_jars(cfg)
    if not broker_later:
        check_broker(cfg, layers)
    check_checkpoints(cfg, layers)
    if "gold" in layers:
        check_alerts_layout(cfg)
    if "silver" in layers and "bronze" not in layers:  # silver's own query (jobs.runner)
        check_silver_restart(cfg)
    if "bronze" in layers and not broker_later:
        cfg = bronze_resume(cfg)
    return cfg


def await_broker(cfg: Config, layers: Sequence[str], wait_s: float) -> Config:
    """The broker and topic checks `check(broker_later=True)` left out, retried for ``wait_s``.

    Ready when the broker answers and the topics the layers use exist (the broker does not
    create topics on demand). Returns the config with bronze's resume point.
    """
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    topics = {t for t, need in ((cfg.kafka.topic_in, "bronze" in layers
                                 and cfg.streaming.source == "kafka"),
                                (cfg.kafka.topic_alerts, "gold" in layers)) if need}
    deadline = time.monotonic() + wait_s
    while True:
        try:
            check_broker(cfg, layers, timeout_s=2.0)
            admin = KafkaAdminClient(**kafka_client.settings(cfg).python_kwargs(KafkaAdminClient),
                                     request_timeout_ms=5_000)
            try:
                missing = sorted(topics - set(admin.list_topics()))
            finally:
                admin.close()
            problem = f"topics {', '.join(missing)} do not exist" if missing else None
        except (PreflightError, KafkaError, OSError) as exc:
            problem = str(exc)
        if problem is None:
            break
        if time.monotonic() >= deadline:
            raise PreflightError(f"Kafka not ready after waiting {wait_s:.0f} s: {problem}. "
                                 "Fix: `lakehouse kafka start` and `lakehouse topics create`.")
        time.sleep(1.0)
    logger.info("Kafka ready at %s", cfg.kafka.bootstrap)
    return bronze_resume(cfg) if "bronze" in layers else cfg


# --- folders -------------------------------------------------------------------------------


def check_writable(cfg: Config) -> None:
    """Create the data, lakehouse and checkpoint folders and write a probe file in each.

    A real write, not ``os.access``: it is also right for root, read-only mounts and
    immutable folders.
    """
    folders = (
        ("data folder", cfg.paths.data_dir, "paths.data_dir=DIR (or LAKEHOUSE_DATA)"),
        ("lakehouse folder", cfg.paths.lakehouse, "paths.lakehouse_root=DIR (or LAKEHOUSE_ROOT)"),
        ("checkpoint folder", cfg.paths.checkpoints,
         "paths.checkpoint_root=DIR (or LAKEHOUSE_CHECKPOINTS)"),
    )
    for what, folder, setting in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=folder, prefix=".lakehouse-probe-"):
                pass
        except OSError as exc:
            failed = Path(exc.filename) if exc.filename else folder
            where = "" if folder in (failed, failed.parent) else f" ({failed})"
            raise PreflightError(
                f"cannot write to the {what} {folder}{where}: {exc.strerror or exc}. Fix: make "
                f"it writable by this user, or choose another one with --set {setting}."
            ) from exc


# --- broker --------------------------------------------------------------------------------


def broker_needs(cfg: Config, layers: Sequence[str]) -> list[str]:
    """What the chosen layers do with Kafka (empty: they do not need the broker)."""
    needs = []
    if "bronze" in layers and cfg.streaming.source == "kafka":
        needs.append(f"bronze reads topic {cfg.kafka.topic_in}")
    if "gold" in layers:
        needs.append(f"gold publishes alerts to {cfg.kafka.topic_alerts}")
    return needs


def check_broker(cfg: Config, layers: Sequence[str], timeout_s: float = 5.0) -> None:
    needs = broker_needs(cfg, layers)
    if not needs:
        return
    k = cfg.kafka
    try:
        if broker.port_open(k.host, k.port, timeout=min(2.0, timeout_s)) and \
                broker.broker_answers(kafka_client.settings(cfg), timeout_s):
            return
    except broker.BrokerAuthError as exc:
        raise PreflightError(str(exc)) from exc
    raise PreflightError(
        f"Kafka broker not reachable at {k.bootstrap} ({'; '.join(needs)}). Fix: start it with "
        "`lakehouse kafka start`, or point the pipeline at a running broker with "
        "--set kafka.bootstrap=HOST:PORT (or KAFKA_BOOTSTRAP)."
    )


# --- checkpoints ---------------------------------------------------------------------------


def _batches(folder: Path) -> list[int]:
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _log_entry_problem(file: Path, *, min_lines: int) -> str | None:
    """Why a Spark metadata-log entry cannot be read, or None.

    An entry is a version line (``v1``) then JSON lines (an offsets entry: batch metadata,
    then one line per source, ``-`` for a source with no offset yet). Spark writes entries
    atomically (temp file + rename), so a crash never leaves a partial one: damage comes from
    outside (a full or failing disk, a hand edit, a bad copy).
    """
    name = f"{file.parent.name}/{file.name}"
    try:
        # The Kafka source's initial-offsets entry starts with a NUL byte (a Spark 2.1 quirk).
        text = file.read_bytes().decode("utf-8").lstrip("\x00")
    except UnicodeDecodeError:
        return f"{name} is not text"
    except OSError as exc:
        return f"{name} cannot be read: {exc.strerror or exc}"
    lines = [ln.strip() for ln in text.splitlines()]
    if not lines or not _VERSION_LINE.fullmatch(lines[0]):
        return f"{name} is empty or does not start with a version line such as v1"
    body = [ln for ln in lines[1:] if ln]
    if len(body) < min_lines:
        return f"{name} is truncated"
    for ln in body:
        if ln == "-":
            continue
        try:
            json.loads(ln)
        except ValueError:
            return f"{name} holds a line that is not JSON (truncated or overwritten)"
    return None


def checkpoint_problem(checkpoint: Path) -> str | None:
    """What is damaged in a streaming query's checkpoint folder, or None if Spark can use it.

    Accepts every state a crash (SIGKILL) can leave: no folder, metadata only, offsets of a
    batch whose commit is missing (batch 0 included: see reset_if_first_batch_uncommitted).
    """
    if not checkpoint.exists():
        return None
    if not checkpoint.is_dir():
        return "it is a file, not a folder"
    offsets, commits = _batches(checkpoint / "offsets"), _batches(checkpoint / "commits")
    meta = checkpoint / "metadata"
    if meta.exists():
        try:
            first = meta.read_text().splitlines()[0]
            if not json.loads(first).get("id"):
                raise ValueError(first)
        except (OSError, ValueError, IndexError, AttributeError, UnicodeDecodeError):
            return "metadata (the query id) is empty or not valid JSON"
    elif offsets or commits:
        return "metadata (the query id) is missing"
    if commits and not offsets:
        return f"offsets/ is missing or empty but commits/ reaches batch {commits[-1]}"
    if offsets:
        last = offsets[-1]
        if not commits and last > 0:
            return f"commits/ is missing or empty but offsets/ reaches batch {last}"
        if commits and commits[-1] > last:
            return f"commits/ reaches batch {commits[-1]}, beyond the last offsets ({last})"
        if commits and commits[-1] < last - 1:
            return (f"commits/ ends at batch {commits[-1]} but offsets/ reaches batch {last}: "
                    "commit files were lost")
        if last > 0 and last - 1 not in offsets:
            return f"offsets/{last - 1} is missing (offsets/{last} needs it)"
        # Spark reads the newest two offsets entries and the newest commit.
        for batch in offsets[-2:]:
            if problem := _log_entry_problem(checkpoint / "offsets" / str(batch), min_lines=2):
                return problem
        if commits and (problem := _log_entry_problem(
                checkpoint / "commits" / str(commits[-1]), min_lines=1)):
            return problem
    else:
        for entry in sorted((checkpoint / "sources").glob("*/*")):
            if entry.name.isdigit() and (problem := _log_entry_problem(entry, min_lines=1)):
                return problem
    return None


def layer_of(query: str) -> str:
    """Checkpoint folders are named after their query: bronze, silver, then gold's."""
    return query if query in ("bronze", "silver") else "gold"


def recovery_hint(cfg: Config, query: str) -> str:
    """How to start ``query`` afresh without reading anything twice or skipping anything."""
    ckpt = cfg.paths.checkpoint(query)
    move = f"mv {ckpt} {ckpt}.broken"
    layer = layer_of(query)
    if layer == "bronze":
        return (f"{move}; bronze then resumes after the last Kafka offsets "
                f"{BRONZE_RAW} holds (nothing is read twice or skipped)")
    if layer == "silver":
        return (f"{move} and delete {cfg.paths.table(QUARANTINE)}; silver then re-reads "
                "bronze from the start, keeps each reading once (insert-only MERGE) and "
                "rebuilds the quarantine")
    return (f"{move}; the query then re-reads silver from the start and its keyed writer "
            "(MERGE or overwrite) writes the same rows again")


# Gold queries that gold_aggregates replaced (README "Checkpoint recovery"): their checkpoints
# may remain in a data folder; no query reads them, and they are not checked.
RETIRED_QUERIES: frozenset[str] = frozenset({
    "gold_sensor_stats_5m", "gold_sensor_stats_10m", "gold_location_stats_5m",
    "gold_sensor_status",
})


def check_checkpoints(cfg: Config, layers: Sequence[str]) -> None:
    """Refuse to start while a checkpoint of a chosen layer is damaged; name the recovery."""
    root = cfg.paths.checkpoints
    if not root.is_dir():
        return
    damaged = []
    for folder in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if folder.suffix or layer_of(folder.name) not in layers:
            continue  # e.g. bronze.broken: set aside by a user
        if folder.name in RETIRED_QUERIES:
            logger.info("checkpoint %s: its query was replaced by gold_aggregates; nothing "
                        "reads it any more (delete it at will)", folder)
            continue
        if problem := checkpoint_problem(folder):
            damaged.append(
                f"checkpoint of query '{folder.name}' is damaged: {problem}.\n"
                f"  checkpoint: {folder.resolve()}\n"
                f"  to recover: {recovery_hint(cfg, folder.name)}; or restore the folder "
                "from a backup."
            )
    if damaged:
        raise PreflightError("\n".join(damaged) + f"\nSee {RECOVERY_DOC}.")


def check_alerts_layout(cfg: Config) -> None:
    """Refuse an alerts checkpoint whose state another layout or key_buckets wrote."""
    from jobs.alerts_job import QUERY_NAME, layout_problem

    if problem := layout_problem(cfg):
        raise PreflightError(
            f"the checkpoint of query '{QUERY_NAME}' does not fit: {problem}.\n"
            f"  checkpoint: {cfg.paths.checkpoint(QUERY_NAME).resolve()}\n"
            f"  to start it afresh: {recovery_hint(cfg, QUERY_NAME)}; alerts already in "
            f"gold/alerts are not published again. See {RECOVERY_DOC}.")


def _fresh(checkpoint: Path) -> bool:
    """No batch was ever planned in this checkpoint (missing, or killed right after start)."""
    return not _batches(checkpoint / "offsets")


def _sql_text(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _has_table(path: Path) -> bool:
    log = path / "_delta_log"
    return log.is_dir() and any(log.glob("*.json"))


def check_silver_restart(cfg: Config) -> None:
    """Refuse to re-read bronze from the start while the quarantine holds rows already."""
    from jobs.duck import connect

    ckpt, quarantine = cfg.paths.checkpoint("silver"), cfg.paths.table(QUARANTINE)
    if not _fresh(ckpt) or not _has_table(quarantine):
        return
    try:
        rows = connect().execute(
            f"SELECT count(*) FROM delta_scan({_sql_text(quarantine)})").fetchone()[0]
    except duckdb.Error as exc:
        raise PreflightError(f"cannot read {quarantine} to check silver's restart: {exc}") \
            from exc
    if rows:
        raise PreflightError(
            f"query 'silver' has no checkpoint ({ckpt}) but {QUARANTINE} already holds {rows} "
            "rows: started afresh, silver would re-read all of bronze and append them a second "
            f"time. Fix: restore the checkpoint from a backup, or delete {quarantine} so that "
            "silver rebuilds it from bronze (readings are kept once by their MERGE). "
            f"See {RECOVERY_DOC}."
        )
    logger.warning("silver has no checkpoint: re-reading bronze from the start (readings "
                   "already in silver are kept once by the insert-only MERGE)")


def bronze_resume(cfg: Config) -> Config:
    """With no bronze checkpoint but rows in the table, resume after the offsets it holds.

    Starting afresh would read the topic from ``streaming.starting_offsets`` again and append
    every record a second time (bronze's idempotent append is per query id, and a new
    checkpoint is a new query id). The table knows the highest offset per partition, so the
    returned config starts each partition right after it (other partitions as configured).
    """
    ckpt, table = cfg.paths.checkpoint("bronze"), cfg.paths.table(BRONZE_RAW)
    if not _fresh(ckpt) or not _has_table(table) or cfg.streaming.source == "socket":
        return cfg
    if cfg.streaming.source == "files":
        folder = cfg.streaming.files_dir or cfg.paths.data_dir / "incoming"
        source = f"files:{folder.name}"
    else:
        source = cfg.kafka.topic_in
    held = _offsets_held(table, source)
    if not held:
        return cfg
    if cfg.streaming.source == "files":
        raise PreflightError(
            f"query 'bronze' has no checkpoint ({ckpt}) but {BRONZE_RAW} already holds records "
            f"of {source}: started afresh it would ingest every file there again. Fix: restore "
            f"the checkpoint from a backup, or move the files already ingested out of {folder}. "
            f"See {RECOVERY_DOC}."
        )
    if cfg.streaming.starting_offsets.lstrip().startswith("{"):
        logger.warning("bronze has no checkpoint; using the explicit streaming.starting_offsets")
        return cfg
    starting = _resume_offsets(cfg, held)
    if ckpt.exists():
        # Metadata only (killed before its first batch): its query id and the Kafka source's
        # initial offsets (sources/0/0, which would override startingOffsets) must not be reused.
        shutil.rmtree(ckpt)
    logger.warning(
        "bronze has no checkpoint but %s holds %s up to offsets %s: resuming after them "
        "(startingOffsets=%s)", BRONZE_RAW, source, held, starting)
    return cfg.with_overrides({"streaming.starting_offsets": starting})


def _offsets_held(table: Path, source: str) -> dict[int, int]:
    """partition -> highest offset of ``source`` in the bronze table."""
    from jobs.duck import connect

    try:
        rows = connect().execute(
            f'SELECT "partition", max("offset") FROM delta_scan({_sql_text(table)}) '
            "WHERE topic = ? GROUP BY 1", [source]).fetchall()
    except duckdb.Error as exc:
        raise PreflightError(
            f"cannot read {table} to find where bronze should resume: {exc}") from exc
    return {int(p if p is not None else -1): int(o if o is not None else -1) for p, o in rows}


def _resume_offsets(cfg: Config, held: dict[int, int]) -> str:
    """Spark's startingOffsets JSON: every partition of the topic, as Spark requires."""
    from kafka.errors import KafkaError

    from jobs.status import end_offsets

    topic = cfg.kafka.topic_in
    try:
        ends = end_offsets(cfg, topic)
    except (KafkaError, LookupError, OSError) as exc:
        raise PreflightError(
            f"bronze has no checkpoint and must resume after the offsets {BRONZE_RAW} holds, "
            f"but the partitions of {topic} on {cfg.kafka.bootstrap} are unknown: {exc}. Fix: "
            "`lakehouse topics create` if the topic is missing."
        ) from exc
    ahead = {p: o for p, o in held.items() if o >= ends.get(p, 0)}
    if ahead:
        raise PreflightError(
            f"{BRONZE_RAW} holds offsets of {topic} that the topic does not (partition: "
            f"offset held {ahead}, topic ends {ends}): the topic was deleted and created again. "
            "Bronze cannot tell old records from new ones: move the table and the checkpoints "
            f"aside to start over. See {RECOVERY_DOC}."
        )
    default = -1 if cfg.streaming.starting_offsets == "latest" else -2  # Spark's codes
    per_partition = {str(p): held[p] + 1 if p in held else default for p in sorted(ends)}
    return json.dumps({topic: per_partition}, separators=(",", ":"))
