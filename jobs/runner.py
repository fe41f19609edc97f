"""Runs the pipeline's streaming queries: in order once (availableNow), or continuously with
supervision (a failed query is logged with its cause and restarted with back-off).
"""

from __future__ import annotations

import importlib
import logging
import signal
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from py4j.protocol import Py4JJavaError
from pyspark.errors import PySparkException
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQuery

from jobs import metrics
from jobs.config import Config

logger = logging.getLogger(__name__)

Starter = Callable[..., StreamingQuery]

LAYERS: tuple[str, ...] = ("bronze", "silver", "gold")
# layer -> "module:function" of each query starter, in dependency order. Imported lazily so a
# layer's modules load only when it runs.
STARTERS: dict[str, tuple[str, ...]] = {
    "bronze": ("jobs.bronze_job:start",),
    "silver": ("jobs.silver_job:start",),
    "gold": (
        # the alert path first: both read Kafka themselves, one hop from the reading
        "jobs.realtime_alerts_job:start",
        "jobs.alerts_job:start_alerts",
        "jobs.gold_job:start_aggregates",
        "jobs.gold_job:start_alert_dependents",  # reads gold/alerts: after the alert query
    ),
}
# With both bronze and silver chosen, one query writes both: this starter stands in for the
# two layers' own.
WITH_BRONZE = "jobs.silver_job:start_with_bronze"
# Each starter's key in streaming.triggers (its micro-batch interval).
TRIGGER_KEYS: dict[str, str] = {
    "jobs.bronze_job:start": "bronze",
    WITH_BRONZE: "bronze",
    "jobs.silver_job:start": "silver",
    "jobs.realtime_alerts_job:start": "alerts_realtime",
    "jobs.alerts_job:start_alerts": "alerts",
    "jobs.gold_job:start_aggregates": "gold_aggregates",
    "jobs.gold_job:start_alert_dependents": "gold_dependents",
}
REALTIME = "jobs.realtime_alerts_job:start"


def continuous_trigger(ref: str, cfg: Config) -> dict[str, Any]:
    """The trigger of a starter's queries in a continuous run, from the config."""
    if ref == REALTIME:
        return {"realTime": cfg.streaming.realtime_batch}
    return {"processingTime": cfg.streaming.trigger_for(TRIGGER_KEYS.get(ref, ref))}


class RunnerError(RuntimeError):
    """A query failed beyond recovery; the message names the query and its cause."""


def failure_message(query: str, exc: object, cfg: Config | None = None) -> str:
    """The first line of a query's error, and where to look next.

    A Spark error's text can run to hundreds of lines (plan, offsets, a JVM stack trace);
    those are logged, and the command's own message stays short.
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    first = lines[0] if lines else type(exc).__name__
    if len(first) > 500:
        first = first[:500] + " ..."
    out = f"query {query} failed: {first}"
    if cfg is not None:
        out += (f"\n  checkpoint: {cfg.paths.checkpoint(query)}\n  the full error is in the "
                f"log ({cfg.paths.logs / 'lakehouse.log'}); if the checkpoint is damaged, see "
                'README.md, "Checkpoint recovery"')
    return out


def parse_layers(text: str) -> list[str]:
    layers = [x.strip() for x in text.split(",") if x.strip()]
    unknown = [x for x in layers if x not in LAYERS]
    if unknown or not layers:
        raise ValueError(f"--layers takes a subset of {','.join(LAYERS)}, got {text!r}")
    return [x for x in LAYERS if x in layers]  # always upstream first


# FAIR scheduler pool of each starter's queries (conf/fairscheduler.xml): the alert path
# (bronze -> silver -> alerts) is served before the gold aggregates.
POOLS: dict[str, str] = {
    "jobs.bronze_job:start": "ingest",
    "jobs.silver_job:start": "ingest",
    WITH_BRONZE: "ingest",
    "jobs.realtime_alerts_job:start": "alerts",
    "jobs.alerts_job:start_alerts": "alerts",
}


# Started by run_continuous only once the alert path (bronze -> silver -> alerts) has
# processed its first data, or streaming.deferred_start_s after the others: on two cores a
# cold start of all nine queries at once held the first alert back by minutes.
# Start order of a continuous run: the alerts query before silver, so that its empty first
# batch (cold Python workers, state store) runs beside bronze's first batch instead of beside
# silver's first data batch, which the first alert waits for. (A run --once keeps the layer
# order: each layer there reads what the one before it wrote.)
COLD_START_RANK: dict[str, int] = {
    "jobs.realtime_alerts_job:start": 0, "jobs.alerts_job:start_alerts": 1,
    "jobs.bronze_job:start": 2, WITH_BRONZE: 2,
    "jobs.silver_job:start": 3,
}

DEFERRED: frozenset[str] = frozenset({
    "jobs.gold_job:start_aggregates", "jobs.gold_job:start_alert_dependents",
})


def _resolve(ref: str) -> Starter:
    module, func = ref.split(":")
    start = getattr(importlib.import_module(module), func)
    pool = POOLS.get(ref, "gold")

    def start_in_pool(spark: SparkSession, cfg: Config, *, trigger: dict[str, Any]) -> Any:
        # A query's thread inherits the starting thread's local properties, and every job
        # it runs (foreachBatch included) is scheduled in that pool.
        spark.sparkContext.setLocalProperty("spark.scheduler.pool", pool)
        try:
            return start(spark, cfg, trigger=trigger)
        finally:
            spark.sparkContext.setLocalProperty("spark.scheduler.pool", None)

    return start_in_pool


def starter_refs(layers: Sequence[str]) -> list[tuple[str, str]]:
    """(layer, starter) of each query the layers run, in dependency order."""
    refs = [(layer, ref) for layer in layers for ref in STARTERS[layer]]
    if "bronze" in layers and "silver" in layers:
        rest = [(layer, ref) for layer, ref in refs if layer not in ("bronze", "silver")]
        refs = [("bronze", WITH_BRONZE), *rest]
    return refs


def _starters(layers: Sequence[str]) -> list[tuple[str, Starter]]:
    out = []
    for layer, ref in starter_refs(layers):
        try:
            out.append((ref, _resolve(ref)))
        except (ImportError, AttributeError) as exc:
            raise RunnerError(f"layer {layer}: cannot load {ref}: {exc}") from exc
    return out


def _as_list(result: StreamingQuery | Sequence[StreamingQuery]) -> list[StreamingQuery]:
    return list(result) if isinstance(result, list | tuple) else [result]


def run_once(spark: SparkSession, cfg: Config, layers: Sequence[str]) -> dict[str, int]:
    """Process everything available, layer by layer, then return rows read per query."""
    rows: dict[str, int] = {}
    recorder = metrics.start_recording(spark, cfg)
    try:
        for ref, start in _starters(layers):
            try:
                queries = _as_list(start(spark, cfg, trigger={"availableNow": True}))
            except (PySparkException, Py4JJavaError) as exc:
                logger.error("%s could not start: %s", ref, exc)
                raise RunnerError(failure_message(ref, exc)) from exc
            for query in queries:
                try:
                    query.awaitTermination()  # raises the query's exception if it failed
                except (PySparkException, Py4JJavaError) as exc:
                    logger.error("query %s failed: %s", query.name, exc)
                    raise RunnerError(failure_message(query.name, exc, cfg)) from exc
                rows[query.name] = sum(p["numInputRows"] for p in query.recentProgress)
                logger.info("%s: done, %d rows read", query.name, rows[query.name])
    finally:
        recorder.stop()
    return rows


@dataclass
class _Supervised:
    ref: str
    start: Starter
    queries: list[StreamingQuery] = field(default_factory=list)
    restarts: int = 0
    next_restart_at: float = 0.0
    started_at: float = field(default_factory=time.monotonic)


def run_continuous(
    spark: SparkSession,
    cfg: Config,
    layers: Sequence[str],
    *,
    console: bool = False,
    stop_event: threading.Event | None = None,
    progress_every_s: float = 10.0,
) -> None:
    """Start every query and supervise until Ctrl-C/SIGTERM (or ``stop_event``)."""
    stop_event = stop_event or threading.Event()
    units = [_Supervised(ref, start) for ref, start in _starters(layers)]
    deferred = [u for u in units if u.ref in DEFERRED]
    units = [u for u in units if u.ref not in DEFERRED]
    recorder = metrics.start_recording(spark, cfg)
    for unit in sorted(units, key=lambda u: COLD_START_RANK.get(u.ref, len(COLD_START_RANK))):
        unit.queries = _as_list(unit.start(spark, cfg, trigger=continuous_trigger(unit.ref, cfg)))
    # the query whose first data lets the deferred ones start: the stateful alerts query
    path_end = next((u for u in units if u.ref == "jobs.alerts_job:start_alerts"),
                    units[-1] if units else None)
    if console:
        units.append(_console_unit(spark, cfg, layers))
    _install_signal_handlers(stop_event)
    started = last_progress = time.monotonic()
    try:
        while not stop_event.wait(1.0):
            if deferred and (_has_processed_data(path_end)
                             or time.monotonic() - started >= cfg.streaming.deferred_start_s):
                logger.info("alert path warm after %.0f s: starting %s",
                            time.monotonic() - started, ", ".join(u.ref for u in deferred))
                for unit in deferred:
                    unit.queries = _as_list(unit.start(spark, cfg,
                                                       trigger=continuous_trigger(unit.ref, cfg)))
                units, deferred = units + deferred, []
            for unit in units:
                _supervise(unit, spark, cfg)
            if time.monotonic() - last_progress >= progress_every_s:
                last_progress = time.monotonic()
                _log_progress(units)
    finally:
        for unit in units:
            for q in unit.queries:
                if q.isActive:
                    q.stop()
        recorder.stop()
        logger.info("all queries stopped")


def _has_processed_data(unit: _Supervised | None) -> bool:
    """Has the unit's query finished a micro-batch with input rows since it started?"""
    return unit is not None and any(
        p.get("numInputRows", 0) > 0 for q in unit.queries for p in q.recentProgress)


def _supervise(unit: _Supervised, spark: SparkSession, cfg: Config) -> None:
    failed = [q for q in unit.queries if not q.isActive]
    now = time.monotonic()
    if not failed:
        # A pipeline runs for months: transient faults (a broker restart, a full disk freed)
        # must not use up a budget meant for a failure that keeps coming back at once.
        if unit.restarts and now - unit.started_at >= cfg.streaming.healthy_reset_s:
            logger.info("%s healthy for %.0f s since restart %d: restart count reset",
                        unit.ref, now - unit.started_at, unit.restarts)
            unit.restarts = 0
        return
    if unit.next_restart_at == 0.0:
        for q in failed:
            logger.error("query %s stopped: %s", q.name, q.exception() or "no exception")
        if unit.restarts >= cfg.streaming.max_restarts:
            raise RunnerError(
                f"{unit.ref}: failed {unit.restarts + 1} times; last error: "
                f"{failure_message(failed[0].name, failed[0].exception(), cfg)}\n"
                "Fix the cause (see the log) and run again."
            )
        backoff = min(60.0, cfg.streaming.restart_backoff_s * 2**unit.restarts)
        unit.next_restart_at = now + backoff
        logger.warning("restarting %s in %.0f s (restart %d of %d)", unit.ref, backoff,
                       unit.restarts + 1, cfg.streaming.max_restarts)
        return
    if now < unit.next_restart_at:
        return
    for q in unit.queries:
        if q.isActive:
            q.stop()
    unit.restarts += 1
    unit.next_restart_at = 0.0
    unit.started_at = time.monotonic()
    unit.queries = _as_list(unit.start(spark, cfg, trigger=continuous_trigger(unit.ref, cfg)))


def _console_unit(spark: SparkSession, cfg: Config, layers: Sequence[str]) -> _Supervised:
    """The seed's console sink: print each micro-batch of the most downstream row table."""
    from jobs.tables import BRONZE_RAW, SILVER_READINGS

    table = SILVER_READINGS if "silver" in layers or "gold" in layers else BRONZE_RAW

    def start(spark: SparkSession, cfg: Config, *, trigger: dict) -> StreamingQuery:
        return (
            spark.readStream.format("delta").load(str(cfg.paths.table(table)))
            .writeStream.format("console").queryName("console")
            .option("truncate", "false").option("numRows", 20)
            .option("checkpointLocation", tempfile.mkdtemp(prefix="lakehouse-console-"))
            .trigger(**trigger).start()
        )

    unit = _Supervised("console", start)
    unit.queries = [start(spark, cfg, trigger={"processingTime": cfg.streaming.trigger_interval})]
    return unit


def _log_progress(units: list[_Supervised]) -> None:
    parts = []
    for unit in units:
        for q in unit.queries:
            p = q.lastProgress
            if p:
                parts.append(
                    f"{q.name}: batch {p['batchId']} {p['numInputRows']} rows "
                    f"{p.get('processedRowsPerSecond') or 0:.0f}/s"
                )
    if parts:
        logger.info("progress | %s", " | ".join(parts))


def _install_signal_handlers(stop_event: threading.Event) -> None:
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum: int, _frame: object) -> None:
        logger.info("signal %d: stopping queries cleanly", signum)
        stop_event.set()

    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)
