"""Reliability harness: run the real pipeline, SIGKILL it at random moments, restart, verify.

``crash_loop`` produces a known set of messages into its own broker, runs ``lakehouse run``
as a child process group, kills the whole group (Python driver and Spark JVM together, as a
power cut would) several times at random moments, restarts it each time, finishes with
``--once`` and then checks the exactly-once invariants on the tables and the alert topic.
It never touches the user's data: everything lives in the folder it is given.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO

from pyspark.sql import DataFrame, SparkSession

from gold import aggregates as agg
from jobs import kafka_client
from jobs.config import Config
from jobs.tables import (
    ALERT_COUNTS_5M,
    ALERTS,
    BRONZE_RAW,
    LOCATION_5M,
    QUARANTINE,
    SILVER_READINGS,
    STATS_5M,
    STATS_10M,
)

logger = logging.getLogger(__name__)

# Faults whose effect does not depend on where micro-batch boundaries fall. Readings later than
# the watermark are dropped or kept depending on batch timing, so they would make "gold equals
# a batch recomputation" a matter of luck; they have their own tests.
CHAOS_FAULTS: dict[str, float] = {
    "malformed_json": 0.01, "missing_field": 0.01, "wrong_type": 0.01, "out_of_range": 0.01,
    "bad_timestamp": 0.01, "duplicate": 0.01, "extra_fields": 0.01,
}
CHAOS_EVENTS: dict[str, float] = {"heat_spike": 0.002, "humidity_surge": 0.002, "rapid_jump": 0.002}


@dataclass
class ChaosReport:
    produced: int = 0
    kills: list[float] = field(default_factory=list)
    runs: int = 0
    seconds: float = 0.0
    failures: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def describe(self) -> str:
        kills = ", ".join(f"{s:.1f}s" for s in self.kills)
        lines = [
            f"produced {self.produced} messages; {len(self.kills)} SIGKILLs after [{kills}] of "
            f"running; {self.runs} pipeline starts; {self.seconds:.0f} s in all",
            "counts: " + ", ".join(f"{k}={v}" for k, v in self.counts.items()),
            *self.notes,
        ]
        lines += [f"FAILED: {f}" for f in self.failures] or ["all invariants hold"]
        return "\n".join(lines)


def _lakehouse(cfg: Config, *args: str) -> list[str]:
    sets = [
        f"paths.data_dir={cfg.paths.data_dir}",
        f"kafka.bootstrap={cfg.kafka.bootstrap}",
        f"kafka.topic_in={cfg.kafka.topic_in}",
        f"kafka.topic_alerts={cfg.kafka.topic_alerts}",
        f"spark.master={cfg.spark.master}",
        f"spark.shuffle_partitions={cfg.spark.shuffle_partitions}",
        f"spark.driver_memory={cfg.spark.driver_memory}",
        f"spark.ui_enabled={str(cfg.spark.ui_enabled).lower()}",
        f"streaming.trigger_interval={cfg.streaming.trigger_interval}",
        f"streaming.max_offsets_per_trigger={cfg.streaming.max_offsets_per_trigger}",
    ]
    return [sys.executable, "-m", "jobs.cli", *[a for s in sets for a in ("--set", s)], *args]


def chaos_messages(*, messages: int, sensors: int, seed: int) -> list:
    """A seeded fleet stream with faults and events, its event time ending about now.

    A reading a minute per sensor, so the stream spans hours of event time and the injected
    events (heat spikes, humidity surges: static thresholds) fit in it: the alerts must come
    from real conditions, not from noise (the production profile raises none on a healthy
    fleet). Produced at once, only its last ten minutes of readings are fresh (produced within
    the watermark of their event time); the alerts of older readings are published by the
    stateful query.
    """
    from generator.fleet import make_fleet
    from generator.stream import GeneratorSpec, generate_messages

    interval_s = 60.0
    span = timedelta(seconds=messages / sensors * interval_s)
    start = (datetime.now(UTC) - span).replace(microsecond=0)
    spec = GeneratorSpec(sensors=tuple(make_fleet(sensors, seed=seed)), seed=seed,
                         interval_s=interval_s, count=messages, faults=CHAOS_FAULTS,
                         events=CHAOS_EVENTS, start=start)
    return list(generate_messages(spec))


def produce(cfg: Config, *, messages: int, sensors: int, seed: int) -> list:
    """Send ``chaos_messages`` to the input topic; return the messages sent."""
    from generator.sinks import KafkaSink

    sent = chaos_messages(messages=messages, sensors=sensors, seed=seed)
    sink = KafkaSink(cfg.kafka.bootstrap, cfg.kafka.topic_in, client=kafka_client.settings(cfg))
    try:
        for m in sent:
            sink.send(m)
        sink.flush()
    finally:
        sink.close()
    return sent


def crash_loop(cfg: Config, *, kills: int, seed: int, min_s: float, max_s: float,
               report: ChaosReport) -> None:
    """Start the pipeline, kill it ``kills`` times at random moments, then finish with --once."""
    rng = random.Random(seed)
    cfg.paths.logs.mkdir(parents=True, exist_ok=True)
    log = (cfg.paths.logs / "chaos-pipeline.log").open("ab")
    try:
        for i in range(kills):
            proc = subprocess.Popen(  # noqa: S603 - fixed argv
                _lakehouse(cfg, "run"), stdout=log, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
            report.runs += 1
            wait = rng.uniform(min_s, max_s)
            time.sleep(wait)
            if proc.poll() is not None:
                report.failures.append(f"pipeline exited by itself (code {proc.returncode})")
                return
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            report.kills.append(wait)
            logger.info("kill %d of %d after %.1f s", i + 1, kills, wait)
        finish_once(cfg, log, report)
    finally:
        log.close()


def finish_once(cfg: Config, log: IO[bytes], report: ChaosReport) -> None:
    """``lakehouse run --once``: process whatever is left, then exit."""
    report.runs += 1
    done = subprocess.run(_lakehouse(cfg, "run", "--once"), stdout=log,  # noqa: S603
                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, check=False)
    if done.returncode != 0:
        path = cfg.paths.logs / "chaos-pipeline.log"
        report.failures.append(f"final --once run failed (code {done.returncode}); see "
                               f"{path}; its last errors:\n{last_errors(path)}")


def last_errors(log: Path, lines: int = 8) -> str:
    """The last error lines of a pipeline log, so a failure report carries its cause."""
    marks = ("Error", "Exception", "ERROR", "FAILED")
    text = log.read_text(errors="replace").splitlines() if log.exists() else []
    hits = [line[:400] for line in text if any(m in line for m in marks)]
    return "\n".join(hits[-lines:]) or "(no error lines)"


def verify(spark: SparkSession, cfg: Config, sent: list, report: ChaosReport) -> None:
    """Check every invariant of DESIGN.md "Guarantees" on the tables and the alert topic."""
    from pyspark.errors import AnalysisException

    try:
        _verify(spark, cfg, sent, report)
    except AnalysisException as exc:
        report.failures.append(f"a table could not be read: {str(exc).splitlines()[0]}")


def _verify(spark: SparkSession, cfg: Config, sent: list, report: ChaosReport) -> None:
    from generator.faults import VALID_FAULTS

    def table(name: str) -> DataFrame:
        return spark.read.format("delta").load(str(cfg.paths.table(name)))

    bronze = table(BRONZE_RAW).select("partition", "offset", "value").collect()
    positions = Counter((r.partition, r.offset) for r in bronze)
    report.counts["produced"] = len(sent)
    report.counts["bronze"] = len(bronze)
    if len(positions) != len(bronze) or any(n > 1 for n in positions.values()):
        report.failures.append("bronze holds some Kafka offset more than once")
    if Counter(r.value for r in bronze) != Counter(m.value.decode() for m in sent):
        report.failures.append("bronze values differ from the messages produced")

    valid = [m for m in sent if m.fault is None or m.fault in VALID_FAULTS]
    distinct = len({(m.sensor_id, m.event_time) for m in valid})
    silver_n, quarantine_n = table(SILVER_READINGS).count(), table(QUARANTINE).count()
    report.counts.update(silver=silver_n, quarantine=quarantine_n,
                         duplicates=len(valid) - distinct)
    if silver_n != distinct:
        report.failures.append(f"silver has {silver_n} readings, expected {distinct}")
    if quarantine_n != len(sent) - len(valid):
        report.failures.append(f"quarantine has {quarantine_n}, expected {len(sent) - len(valid)}")

    silver, g = table(SILVER_READINGS), cfg.gold
    acc = g.percentile_accuracy
    for name, expected, keys in (
        (STATS_5M, agg.sensor_stats(silver, window=g.tumbling, percentile_accuracy=acc),
         agg.SENSOR_STATS_KEYS),
        (STATS_10M, agg.sensor_stats(silver, window=g.sliding, slide=g.slide,
                                     percentile_accuracy=acc), agg.SENSOR_STATS_KEYS),
        (LOCATION_5M, agg.location_stats(silver, window=g.tumbling), agg.LOCATION_STATS_KEYS),
        (ALERT_COUNTS_5M, agg.alert_counts(table(ALERTS), window=g.tumbling),
         agg.ALERT_COUNTS_KEYS),
    ):
        diff = _compare(table(name), expected, keys)
        if diff:
            report.failures.append(f"{name} differs from a batch recomputation: {diff}")

    alerts = table(ALERTS).select("alert_id").collect()
    ids = Counter(r.alert_id for r in alerts)
    report.counts["alerts"] = len(ids)
    if any(n > 1 for n in ids.values()):
        report.failures.append("gold/alerts holds an alert_id more than once")
    on_kafka = _alert_ids_on_kafka(cfg)
    report.counts["alert_messages"] = sum(on_kafka.values())
    if set(ids) - set(on_kafka):
        report.failures.append(f"{len(set(ids) - set(on_kafka))} alerts never reached Kafka")
    if set(on_kafka) - set(ids):
        report.failures.append(f"{len(set(on_kafka) - set(ids))} alert ids on Kafka not in gold")


def _compare(got: DataFrame, want: DataFrame, keys: tuple[str, ...]) -> str:
    g = {tuple(r[k] for k in keys): r.asDict() for r in got.collect()}
    w = {tuple(r[k] for k in keys): r.asDict() for r in want.collect()}
    if g.keys() != w.keys():
        return f"{len(g.keys() ^ w.keys())} keys only on one side"
    for key, row in w.items():
        for col, value in row.items():
            other = g[key][col]
            same = (math.isclose(other, value, rel_tol=1e-9, abs_tol=1e-9)
                    if isinstance(value, float) and isinstance(other, float) else other == value)
            if not same:
                return f"{key} {col}: {other!r} != {value!r}"
    return ""


def _alert_ids_on_kafka(cfg: Config) -> Counter:
    import json

    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**kafka_client.settings(cfg).python_kwargs(KafkaConsumer),
                             enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    parts = consumer.partitions_for_topic(cfg.kafka.topic_alerts) or set()
    tps = [TopicPartition(cfg.kafka.topic_alerts, p) for p in parts]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    ids = Counter(json.loads(m.value)["alert_id"] for m in consumer)
    consumer.close()
    return ids


def run_chaos(cfg: Config, *, messages: int, sensors: int, kills: int, seed: int,
              min_s: float, max_s: float, spark: SparkSession | None = None) -> ChaosReport:
    """The whole crash-loop on the broker ``cfg`` points at (which must be running)."""
    from jobs.topics import create_topics

    report = ChaosReport()
    start = time.monotonic()
    create_topics(cfg)
    sent = produce(cfg, messages=messages, sensors=sensors, seed=seed)
    report.produced = len(sent)
    logger.info("produced %d messages; starting the crash loop", len(sent))
    crash_loop(cfg, kills=kills, seed=seed, min_s=min_s, max_s=max_s, report=report)
    if spark is None:
        from jobs.spark import build_spark

        spark = build_spark(cfg)
    verify(spark, cfg, sent, report)
    report.seconds = time.monotonic() - start
    return report


def run_broker_loss(cfg: Config, *, messages: int, sensors: int, seed: int, rate: float,
                    lead_s: float, outage_s: float, hard: bool = False, warm_share: float = 0.1,
                    settle_s: float = 600.0, spark: SparkSession | None = None) -> ChaosReport:
    """Take the broker away mid-stream while the generator and the pipeline both run.

    The first ``warm_share`` of the messages is produced up front and the pipeline started;
    once bronze holds data (the pipeline is streaming), the generator sends the rest at
    ``rate`` per second, and ``lead_s`` later the broker is stopped (SIGKILLed if ``hard``)
    for ``outage_s`` and started again. Nobody is restarted by hand: the generator must
    deliver every message it was given and the pipeline must catch up on its own (its
    supervisor restarts failed queries). Then it is stopped with SIGTERM, finished with
    ``--once`` and checked like the crash loop. ``cfg`` must point at a broker of its own
    (``scratch_config``) that is running.
    """
    import threading

    from generator.driver import Pacing, RunResult, drive
    from generator.sinks import KafkaSink
    from jobs import broker
    from jobs.topics import create_topics

    report = ChaosReport()
    start = time.monotonic()
    create_topics(cfg)
    sent = chaos_messages(messages=messages, sensors=sensors, seed=seed)
    report.produced = len(sent)
    warm = max(1, int(len(sent) * warm_share))
    cfg.paths.logs.mkdir(parents=True, exist_ok=True)
    log_path = cfg.paths.logs / "chaos-pipeline.log"
    outcome: dict[str, RunResult] = {}

    def generate(batch: list, pacing: Pacing) -> None:
        sink = KafkaSink(cfg.kafka.bootstrap, cfg.kafka.topic_in,
                         client=kafka_client.settings(cfg))
        outcome["result"] = drive(iter(batch), sink, pacing, label="generator")

    generate(sent[:warm], Pacing())
    if spark is None:
        from jobs.spark import build_spark

        spark = build_spark(cfg)
    with log_path.open("ab") as log:
        pipeline = subprocess.Popen(  # noqa: S603 - fixed argv
            _lakehouse(cfg, "run"), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        report.runs += 1
        waited = _wait_for_rows(spark, cfg.paths.table(BRONZE_RAW), 1, settle_s, pipeline)
        report.notes.append(f"bronze streaming {waited:.0f} s after the pipeline started")
        generator = threading.Thread(target=generate, args=(sent[warm:], Pacing(rate=rate)),
                                     name="generator", daemon=True)
        generator.start()
        time.sleep(lead_s)
        broker.stop(cfg, hard=hard)
        time.sleep(outage_s)
        broker.start(cfg)
        report.notes.append(f"broker {'SIGKILLed' if hard else 'stopped'} {lead_s:.0f} s "
                            f"into the generator's run, back after {outage_s:.0f} s")
        generator.join(timeout=settle_s)
        result = outcome.get("result")
        if generator.is_alive() or result is None:
            report.failures.append(f"the generator did not finish within {settle_s:.0f} s")
        else:
            report.notes.append(f"generator (after the first {warm}): {result.describe()}")
            if result.errors or result.delivered != len(sent) - warm:
                report.failures.append(f"the generator lost messages: {result.describe()}")
        waited = _wait_for_rows(spark, cfg.paths.table(BRONZE_RAW), len(sent), settle_s,
                                pipeline)
        report.notes.append(f"bronze caught up {waited:.0f} s after the generator finished; "
                            f"the supervisor restarted queries {_count(log_path, 'restarting ')}"
                            " times")
        if pipeline.poll() is not None:
            report.failures.append(f"the pipeline stopped by itself (code {pipeline.returncode})"
                                   f"; its last errors:\n{last_errors(log_path)}")
        else:
            os.killpg(pipeline.pid, signal.SIGTERM)
            try:
                pipeline.wait(timeout=180)
            except subprocess.TimeoutExpired:
                report.failures.append("the pipeline did not stop within 180 s of SIGTERM")
                os.killpg(pipeline.pid, signal.SIGKILL)
                pipeline.wait()
        finish_once(cfg, log, report)
    verify(spark, cfg, sent, report)
    report.seconds = time.monotonic() - start
    return report


def _wait_for_rows(spark: SparkSession, path: Path, rows: int, timeout_s: float,
                   pipeline: subprocess.Popen) -> float:
    """Seconds until the Delta table at ``path`` holds ``rows`` (or the pipeline died)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s and pipeline.poll() is None:
        try:
            if spark.read.format("delta").load(str(path)).count() >= rows:
                break
        except Exception:  # noqa: BLE001 - the table may not exist yet
            logger.debug("table %s not readable yet", path)
        time.sleep(5.0)
    return time.monotonic() - t0


def _count(log: Path, marker: str) -> int:
    return sum(marker in line for line in log.read_text(errors="replace").splitlines())


def scratch_config(cfg: Config, folder: Path, port: int) -> Config:
    """A copy of ``cfg`` whose data, broker and topics are all private to ``folder``."""
    return cfg.with_overrides({
        "paths.data_dir": str(folder), "paths.lakehouse_root": None,
        "paths.checkpoint_root": None, "kafka.bootstrap": f"127.0.0.1:{port}",
        "spark.ui_enabled": False, "spark.shuffle_partitions": 2,
        "streaming.trigger_interval": "2 seconds",
        "streaming.max_offsets_per_trigger": 5000,
    })

