"""`lakehouse bench`: throughput, latency and cost of the pipeline against this machine's ceiling.

Everything runs in the bench's own data folder with its own broker on free ports; the user's
tables and broker are never touched. One run measures, in order:

1. a backlog of N messages from S sensors produced to Kafka (librdkafka producer);
2. the ceiling: Kafka's ``ConsumerPerformance`` on that topic (msgs/s) and a no-op Spark Kafka
   batch read (rows/s);
3. throughput: ``run_once`` (availableNow) of bronze, then silver, then gold on fresh tables,
   each layer timed; events/s per layer chain as a ratio to the ceiling;
4. latency at steady producer rates: the pipeline runs continuously (``run_continuous`` in a
   thread) while the generator produces; produce time (Kafka record timestamp, silver
   ``kafka_timestamp``) to silver ``processed_at``, and to the Kafka timestamp of the HIGH_TEMP
   alert on ``iot-alerts`` that a probe reading triggered (one reading in ``probe_every`` is
   rewritten to a temperature above the threshold); lag and batch durations over time;
5. cost: peak RSS (VmHWM) of the JVM, the Python driver, the Python workers and the broker,
   CPU, files written per minute under the tables;

then writes ``report.md``, ``results.json`` and PNG plots into the bench folder.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from generator.driver import Pacing, SinkSpec, drive, run_generator
from generator.fleet import make_fleet, write_registry_csv
from generator.stream import GeneratorSpec, Message, generate_messages
from jobs import broker, kafka_client, tables
from jobs.config import Config
from jobs.kafka_client import ClientSettings
from jobs.registry import registry_csv

logger = logging.getLogger(__name__)

CONSUMER_PERF = "org.apache.kafka.tools.ConsumerPerformance"
LOG_APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}
PROBE_TEMPERATURE = 35.0  # above alerts.high_temp.threshold (30): one HIGH_TEMP alert each


@dataclass(frozen=True)
class BenchOptions:
    messages: int = 1_000_000
    sensors: int = 10_000
    rates: tuple[float, ...] = (1_000.0, 5_000.0, 20_000.0)
    rate_duration_s: float = 120.0
    latency_layers: tuple[str, ...] = ("bronze", "silver", "gold")
    max_offsets_per_trigger: int = 500_000
    shuffle_partitions: int = 2
    probe_every: int = 100
    producer_workers: int = 1
    seed: int = 7
    keep_data: bool = False
    throughput: bool = True               # backlog, ceiling and per-layer throughput
    sustain_from: float | None = None     # first rate of the sustainable-rate search (None: off)
    sustain_steps: int = 4
    sustain_warmup_s: float = 120.0
    sustain_window_s: float = 300.0
    sustain_path: str = "all"             # whose lag must stay bounded: see SUSTAIN_PATHS
    reference: bool = True                # after each latency run, the plain reference query


QUICK = BenchOptions(messages=30_000, rates=(1_000.0,), rate_duration_s=20.0)


# -- process cost from /proc -------------------------------------------------------------------


def _status_kb(pid: int, key: str) -> int:
    """A ``/proc/<pid>/status`` field in kB (VmRSS, VmHWM), 0 when the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, ValueError):
        pass
    return 0


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (0 when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine from /proc/stat."""
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return float(sum(vals) - idle), float(sum(vals))


def python_workers(jvm_pid: int) -> list[int]:
    """Pids of the PySpark daemon and workers the JVM forked (descendants running python)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], list(children.get(jvm_pid, []))
    while todo:
        pid = todo.pop()
        todo.extend(children.get(pid, []))
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError):
            continue
        if b"python" in cmd:
            out.append(pid)
    return out


def count_files(root: Path) -> int:
    return sum(len(files) for _, _, files in os.walk(root)) if root.exists() else 0


@dataclass
class Cost:
    """Peak memory (MB) and CPU of one phase."""

    seconds: float = 0.0
    jvm_peak_rss_mb: float = 0.0
    driver_py_peak_rss_mb: float = 0.0
    workers_py_peak_rss_mb: float = 0.0   # largest sum of the workers' RSS seen
    broker_peak_rss_mb: float = 0.0
    jvm_cpu_cores: float = 0.0            # CPU seconds / wall seconds
    workers_cpu_cores: float = 0.0
    driver_cpu_cores: float = 0.0         # the Python driver: py4j calls, the bench's sampler
    broker_cpu_cores: float = 0.0
    machine_busy_pct: float = 0.0
    files_written: int = 0
    files_per_min: float = 0.0


class Sampler:
    """A thread sampling memory, CPU, lag and query progress about once a second."""

    def __init__(self, pids: dict[str, int], files_root: Path, spark: Any = None,
                 kafka: ClientSettings | None = None, topic: str | None = None,
                 interval_s: float = 1.0, chain: Sequence[str] = ()) -> None:
        self.pids = pids
        self.chain = tuple(chain)  # queries reading the readings: rows each has read
        self.started_at = time.monotonic()  # reset on __enter__; sample times count from it
        self.files_root = files_root
        self.spark = spark
        self.kafka = kafka
        self.topic = topic
        self.interval_s = interval_s
        self.samples: list[dict[str, Any]] = []
        self.batches: dict[tuple[str, int], dict[str, Any]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._consumer: Any = None
        self._worker_cpu: dict[int, float] = {}
        self.cost = Cost()

    def __enter__(self) -> Sampler:
        self.started_at = time.monotonic()
        self._cpu0 = {k: _cpu_s(p) for k, p in self.pids.items()}
        self._busy0 = _machine_busy()
        self._files0 = count_files(self.files_root)
        self._worker_cpu0 = {p: _cpu_s(p) for p in python_workers(self.pids["jvm"])}
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()
        c = self.cost
        c.seconds = wall = max(time.monotonic() - self.started_at, 1e-9)
        c.jvm_peak_rss_mb = _status_kb(self.pids["jvm"], "VmHWM") / 1024
        c.driver_py_peak_rss_mb = _status_kb(self.pids["driver"], "VmHWM") / 1024
        if "broker" in self.pids:
            c.broker_peak_rss_mb = max(c.broker_peak_rss_mb,
                                       _status_kb(self.pids["broker"], "VmRSS") / 1024)
            c.broker_cpu_cores = (_cpu_s(self.pids["broker"]) - self._cpu0["broker"]) / wall
        c.jvm_cpu_cores = (_cpu_s(self.pids["jvm"]) - self._cpu0["jvm"]) / wall
        c.driver_cpu_cores = (_cpu_s(self.pids["driver"]) - self._cpu0["driver"]) / wall
        c.workers_cpu_cores = sum(
            cpu - self._worker_cpu0.get(pid, 0.0) for pid, cpu in self._worker_cpu.items()
        ) / wall
        busy1 = _machine_busy()
        c.machine_busy_pct = 100 * (busy1[0] - self._busy0[0]) / max(busy1[1] - self._busy0[1], 1)
        c.files_written = count_files(self.files_root) - self._files0
        c.files_per_min = c.files_written / wall * 60
        if self._consumer is not None:
            self._consumer.close()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.sample()
            except Exception:  # a sample may race a query's start or stop; keep sampling
                logger.debug("sample failed", exc_info=True)

    def sample(self) -> None:
        c = self.cost
        workers = python_workers(self.pids["jvm"])
        for pid in workers:
            cpu = _cpu_s(pid)
            if cpu:
                self._worker_cpu[pid] = cpu
        workers_rss = sum(_status_kb(p, "VmRSS") for p in workers) / 1024
        c.workers_py_peak_rss_mb = max(c.workers_py_peak_rss_mb, workers_rss)
        if "broker" in self.pids:
            c.broker_peak_rss_mb = max(c.broker_peak_rss_mb,
                                       _status_kb(self.pids["broker"], "VmRSS") / 1024)
        row: dict[str, Any] = {
            "t": time.monotonic() - self.started_at,
            "jvm_rss_mb": _status_kb(self.pids["jvm"], "VmRSS") / 1024,
            "workers_rss_mb": workers_rss,
        }  # files are counted at the start and the end only: a walk of the lake grows with it
        if self.spark is not None:
            row.update(self._progress())
        self.samples.append(row)

    def _progress(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for q in self.spark.streams.active:
            for p in q.recentProgress:
                key = (p["name"], int(p["batchId"]))
                if key not in self.batches and p["numInputRows"] is not None:
                    self.batches[key] = {
                        "name": p["name"], "batch": int(p["batchId"]),
                        "rows": int(p["numInputRows"]),
                        "ms": int(p["durationMs"].get("triggerExecution", 0)),
                        "t": time.monotonic() - self.started_at,
                        "phases_ms": {k: int(v) for k, v in p["durationMs"].items()},
                        "state_rows": sum(int(op.get("numRowsTotal") or 0)
                                          for op in p.get("stateOperators") or []),
                        "state_bytes": sum(int(op.get("memoryUsedBytes") or 0)
                                           for op in p.get("stateOperators") or []),
                    }
            if q.name == "bronze" and q.lastProgress:
                offsets = q.lastProgress["sources"][0]["endOffset"]
                offsets = json.loads(offsets) if isinstance(offsets, str) else offsets
                out["bronze_offset"] = sum(int(v) for t in offsets.values() for v in t.values())
        if self.kafka and self.topic:
            end = topic_end_offset(self._kafka(), self.topic)
            out["kafka_end"] = end
            if "bronze_offset" in out:
                out["lag"] = end - out["bronze_offset"]
            if self.chain:  # a query not started yet has read nothing
                read = {q: 0 for q in self.chain}
                for b in self.batches.values():
                    if b["name"] in read:
                        read[b["name"]] += b["rows"]
                out["read"] = read
        return out

    def _kafka(self) -> Any:
        if self._consumer is None:
            from kafka import KafkaConsumer

            assert self.kafka is not None
            self._consumer = KafkaConsumer(**self.kafka.python_kwargs(KafkaConsumer))
        return self._consumer


def topic_end_offset(consumer: Any, topic: str) -> int:
    """Sum of the topic's partition end offsets (messages ever written, single-writer topic)."""
    from kafka import TopicPartition

    parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    return sum(consumer.end_offsets(parts).values())


# -- set-up ------------------------------------------------------------------------------------


def bench_config(base: Config, root: Path, opts: BenchOptions) -> Config:
    """The user's config pointed at the bench folder, its own broker port and bench tuning."""
    return base.with_overrides({
        "paths.data_dir": str(root),
        "paths.lakehouse_root": str(root / "lake-throughput"),
        "paths.checkpoint_root": None,
        "kafka.bootstrap": f"127.0.0.1:{broker.free_port_pair()}",
        "kafka.broker.controller_port": None,
        "spark.ui_enabled": False,
        "spark.shuffle_partitions": opts.shuffle_partitions,
        "streaming.max_offsets_per_trigger": opts.max_offsets_per_trigger,
        "streaming.starting_offsets": "earliest",
        "streaming.source": "kafka",
    })


def fleet_spec(opts: BenchOptions, **kw: Any) -> GeneratorSpec:
    return GeneratorSpec(sensors=tuple(make_fleet(opts.sensors, opts.seed)), seed=opts.seed,
                         **kw)


# -- 1. backlog and ceiling --------------------------------------------------------------------


def produce_backlog(cfg: Config, opts: BenchOptions) -> dict[str, float]:
    """N clean readings, event time ending about now, as fast as the producer goes."""
    interval = 5.0
    span = opts.messages / opts.sensors * interval
    start = datetime.fromtimestamp(time.time() - span, UTC).replace(microsecond=0)
    spec = fleet_spec(opts, interval_s=interval, start=start, count=opts.messages)
    write_registry_csv(spec.sensors, registry_csv(cfg))
    sink = SinkSpec(kind="kafka", producer="confluent", bootstrap=cfg.kafka.bootstrap,
                    topic=cfg.kafka.topic_in, client=kafka_client.settings(cfg))
    result = run_generator(spec, sink, Pacing(), workers=opts.producer_workers)
    if result.errors or result.delivered != opts.messages:
        raise RuntimeError(f"backlog: {result.describe()}")
    return {"messages": result.sent, "seconds": result.seconds, "msgs_per_s": result.rate}


def parse_consumer_perf(text: str) -> dict[str, float]:
    """The CSV header and last data line of ConsumerPerformance's output, as numbers."""
    lines = [ln.strip() for ln in text.splitlines() if "," in ln]
    header = next((ln for ln in lines if "nMsg.sec" in ln), None)
    if header is None:
        raise ValueError(f"no ConsumerPerformance result in:\n{text[-2000:]}")
    keys = [k.strip() for k in header.split(",")]
    values = [v.strip() for v in lines[-1].split(",")]
    out: dict[str, float] = {}
    for key, value in zip(keys, values, strict=False):
        try:
            out[key] = float(value)
        except ValueError:
            continue
    return out


def consumer_perf(cfg: Config, messages: int, timeout_s: float = 120.0) -> dict[str, float]:
    """Kafka's own consumer benchmark on the input topic (from the earliest offset)."""
    client = kafka_client.settings(cfg)
    secured = client.java_properties()
    secured.pop("bootstrap.servers")
    with tempfile.TemporaryDirectory() as tmp:
        security: list[str] = []
        if secured:  # the credentials in an owner-only file, not on the command line
            props = Path(tmp) / "client.properties"
            fd = os.open(props, os.O_WRONLY | os.O_CREAT, 0o600)
            with os.fdopen(fd, "w") as f:
                f.writelines(f"{k}={v}\n" for k, v in secured.items())
            security = ["--consumer.config", str(props)]
        cmd = broker.java_command(
            cfg, CONSUMER_PERF,
            "--bootstrap-server", cfg.kafka.bootstrap, "--topic", cfg.kafka.topic_in,
            "--messages", str(messages), "--timeout", "30000",
            "--group", f"bench-perf-{int(time.time())}", *security, heap="512m",
        )
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                              check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ConsumerPerformance failed:\n{done.stdout}{done.stderr}")
    stats = parse_consumer_perf(done.stdout)
    logger.info("ConsumerPerformance: %s", stats)
    return stats


def spark_noop_read(spark: Any, cfg: Config) -> dict[str, float]:
    """Batch-read the whole topic into the no-op sink (every row materialised), timed."""
    def read() -> Any:
        return (spark.read.format("kafka")
                .options(**kafka_client.settings(cfg).spark_options())
                .option("subscribe", cfg.kafka.topic_in)
                .option("startingOffsets", "earliest").option("endingOffsets", "latest")
                .load())

    rows = read().count()
    t0 = time.monotonic()
    read().write.format("noop").mode("overwrite").save()
    seconds = time.monotonic() - t0
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds}


# -- 2. throughput -----------------------------------------------------------------------------


def layer_throughput(spark: Any, cfg: Config, events: int,
                     layers: Sequence[str] = ("bronze", "silver", "gold"),
                     pids: dict[str, int] | None = None) -> list[dict[str, Any]]:
    """``run_once`` of each layer in turn on the config's (fresh) tables; one timing each.

    Rates are ``events`` (the backlog) per second of the layer's run_once. The queries' own
    ``numInputRows`` are kept as reported: silver's foreachBatch counts its source twice.
    """
    from jobs.runner import run_once

    out = []
    for layer in layers:
        sampler = Sampler(pids or _pids(spark, cfg), cfg.paths.lakehouse)
        with sampler:
            t0 = time.monotonic()
            rows = run_once(spark, cfg, [layer])
            seconds = time.monotonic() - t0
        out.append({"layer": layer, "seconds": seconds, "rows_in": events, "queries": rows,
                    "rows_per_s": events / seconds if seconds else 0.0,
                    "cost": asdict(sampler.cost)})
        logger.info("throughput %s: %d events in %.1f s (%.0f/s)", layer, events, seconds,
                    out[-1]["rows_per_s"])
    return out


def chain_rates(layers: list[dict[str, Any]], messages: int) -> dict[str, float]:
    """Events/s of each prefix chain (bronze; bronze+silver; all) run back to back."""
    out, total = {}, 0.0
    for row in layers:
        total += row["seconds"]
        name = "+".join(r["layer"] for r in layers[: layers.index(row) + 1])
        out[name] = messages / total if total else 0.0
    return out


# -- 3. latency --------------------------------------------------------------------------------


def probed(messages: Iterator[Message], every: int) -> Iterator[Message]:
    """Every ``every``-th reading rewritten hot (temperature above HIGH_TEMP's threshold)."""
    for i, msg in enumerate(messages, 1):
        if every and i % every == 0 and msg.fault is None:
            body = json.loads(msg.value)
            body["temperature"] = PROBE_TEMPERATURE
            msg = replace(msg, value=json.dumps(body).encode())
        yield msg


# The queries whose input rows are readings, by layer: the pipeline lag is the produced count
# minus the rows the slowest of them has read (the gold dependents read alerts, not readings).
READINGS_QUERIES = {
    "bronze": ("bronze",),
    "silver": ("silver",),
    "gold": ("alerts", "gold_aggregates"),
}


def readings_queries(layers: Sequence[str]) -> tuple[str, ...]:
    """The queries of ``layers`` that read readings, by the layers the runner starts queries
    for (`jobs.runner.starter_refs`: with bronze, silver runs inside the bronze query)."""
    from jobs.runner import starter_refs

    run = dict.fromkeys(layer for layer, _ in starter_refs(layers))
    return tuple(q for layer in run for q in READINGS_QUERIES.get(layer, ()))


# The sustainable-rate search judges the lag of the slowest of these queries.
SUSTAIN_PATHS = {
    "all": tuple(q for queries in READINGS_QUERIES.values() for q in queries),
    "alert": ("bronze", "silver", "alerts"),  # what a reading needs to raise an alert
}


@dataclass
class LiveRun:
    """A continuous pipeline on fresh tables and its own input topic, as `live_pipeline` gives."""

    cfg: Config
    sampler: Sampler
    failure: list[BaseException]


@contextmanager
def live_pipeline(spark: Any, cfg: Config, opts: BenchOptions, tag: str,
                  pids: dict[str, int] | None = None) -> Iterator[LiveRun]:
    """``run_continuous`` in a thread on lake-<tag> and topic <in>-<tag>, sampled; stopped on exit.

    Raises after the stop if the pipeline failed meanwhile.
    """
    from jobs.runner import run_continuous, starter_refs
    from jobs.topics import create_topics

    lake = cfg.paths.data_dir / f"lake-{tag}"
    # its own input topic: a fresh bronze checkpoint reads from the earliest offset
    topic = f"{cfg.kafka.topic_in}-{tag}"
    run_cfg = cfg.with_overrides({"paths.lakehouse_root": str(lake), "kafka.topic_in": topic})
    create_topics(run_cfg, {topic: cfg.kafka.partitions_in})
    stop = threading.Event()
    failure: list[BaseException] = []

    def pipeline() -> None:
        try:
            run_continuous(spark, run_cfg, list(opts.latency_layers), stop_event=stop)
        except BaseException as exc:  # reported after the run
            failure.append(exc)

    runner = threading.Thread(target=pipeline, name="bench-pipeline", daemon=True)
    chain = readings_queries(opts.latency_layers)
    sampler = Sampler(pids or _pids(spark, cfg), lake, spark, kafka_client.settings(cfg), topic,
                      chain=chain)
    with sampler:
        runner.start()
        try:
            _wait_active(spark, len(starter_refs(opts.latency_layers)), 90.0)
            yield LiveRun(run_cfg, sampler, failure)
        finally:
            stop.set()
            runner.join(120.0)
    if failure:
        raise RuntimeError(f"pipeline failed during the {tag} run: {failure[0]}")


def produce_at(cfg: Config, opts: BenchOptions, rate: float, seconds: float) -> Any:
    """The fleet's readings (with hot probes) to the run's topic at ``rate``/s for ``seconds``."""
    spec = fleet_spec(opts, interval_s=opts.sensors / rate,
                      start=datetime.fromtimestamp(time.time(), UTC))
    sink = SinkSpec(kind="kafka", producer="confluent", bootstrap=cfg.kafka.bootstrap,
                    topic=cfg.kafka.topic_in, client=kafka_client.settings(cfg)).open()
    return drive(probed(generate_messages(spec), opts.probe_every), sink,
                 Pacing(rate=rate, wall_duration_s=seconds), label=f"bench {rate:g}/s")


def latency_run(spark: Any, cfg: Config, opts: BenchOptions, rate: float,
                pids: dict[str, int] | None = None) -> dict[str, Any]:
    """Run the pipeline continuously on fresh tables while producing ``rate`` readings/s."""
    t_start = time.time()
    with live_pipeline(spark, cfg, opts, f"latency-{int(rate)}", pids) as run:
        run_cfg, sampler, failure = run.cfg, run.sampler, run.failure
        produced = produce_at(run_cfg, opts, rate, opts.rate_duration_s)
        drain_until = time.monotonic() + 60.0
        while time.monotonic() < drain_until and not failure:
            if sampler.samples and sampler.samples[-1].get("bronze_offset", 0) >= produced.sent:
                break
            time.sleep(1.0)
        if "silver" in opts.latency_layers:  # every reading of the run in silver, or 120 s
            silver = str(run_cfg.paths.table(tables.SILVER_READINGS))
            until = time.monotonic() + 120.0
            while time.monotonic() < until and not failure:
                if spark.read.format("delta").load(silver).count() >= produced.sent:
                    break
                time.sleep(1.0)
        if "gold" in opts.latency_layers:  # an alert for every probe in silver, or 180 s
            _wait_for_probe_alerts(spark, run_cfg, t_start, 180.0, failure)
        time.sleep(2 * _trigger_s(cfg) + 2)  # let gold and the alerts take the last batch
    result = {
        "rate": rate, "produced": produced.sent, "produce_seconds": produced.seconds,
        "achieved_rate": produced.rate,
        "silver": silver_latency(spark, run_cfg, t_start),
        "alert": alert_latency(spark, run_cfg, t_start),
        "batches": batch_stats(list(sampler.batches.values()), produced.seconds),
        # every micro-batch's phases and state size, for reading a long run's growth afterwards
        "batch_log": sorted(sampler.batches.values(), key=lambda b: b["t"]),
        "samples": sampler.samples, "cost": asdict(sampler.cost),
    }
    lags = [s["lag"] for s in sampler.samples if "lag" in s]
    result["max_lag"] = max(lags) if lags else None
    result["final_lag"] = lags[-1] if lags else None
    return result


def reference_run(spark: Any, cfg: Config, opts: BenchOptions, rate: float,
                  pids: dict[str, int]) -> dict[str, Any]:
    """The plain reference query (jobs.bench_reference) alone on the same load: the fleet and
    its probes at ``rate`` to a topic of its own, alerts timed by the broker's append time."""
    from jobs.bench_reference import probe_latencies, start_reference, wait_for_alerts
    from jobs.topics import create_topics

    tag = f"ref-{int(rate)}"
    run_cfg = cfg.with_overrides({"kafka.topic_in": f"{cfg.kafka.topic_in}-{tag}"})
    topic_out = f"{cfg.kafka.topic_alerts}-{tag}"
    create_topics(run_cfg, {run_cfg.kafka.topic_in: cfg.kafka.partitions_in,
                            topic_out: cfg.kafka.partitions_alerts},
                  configs={topic_out: LOG_APPEND_TIME})
    t_start = time.time()
    query = start_reference(spark, cfg, topic_in=run_cfg.kafka.topic_in, topic_out=topic_out,
                            checkpoint=str(cfg.paths.data_dir / f"checkpoint-{tag}"))
    try:
        with Sampler(pids, cfg.paths.data_dir / f"checkpoint-{tag}") as sampler:
            produced = produce_at(run_cfg, opts, rate, opts.rate_duration_s)
            probes = produced.sent // opts.probe_every if opts.probe_every else 0
            wait_for_alerts(cfg, topic_out, probes, 60.0)
    finally:
        query.stop()
    lat = probe_latencies(run_cfg, topic_in=run_cfg.kafka.topic_in, topic_out=topic_out,
                          probe_temperature=PROBE_TEMPERATURE, since_epoch_s=t_start)
    return {"rate": rate, "produced": produced.sent,
            "alert": {**_pcts(lat["latencies"]), "probes": lat["probes"]},
            "cost": asdict(sampler.cost)}


def cores(cost: dict[str, Any]) -> float:
    """Cores busy for the pipeline: its JVM and its Python workers."""
    return cost["jvm_cpu_cores"] + cost["workers_cpu_cores"]


# -- 4. sustainable rate -----------------------------------------------------------------------


@dataclass(frozen=True)
class LagVerdict:
    """Whether the pipeline lag stayed bounded over a window, and the figures that decided it."""

    bounded: bool
    thirds: tuple[float, float, float]  # mean lag (messages) over each third of the window
    allowance: float                    # how far the last third may rise above the first
    slope_per_s: float                  # least-squares trend of the lag over the window
    samples: int


def lag_verdict(points: Sequence[tuple[float, float]], rate: float, start_s: float,
                window_s: float, *, growth: float = 1.25, slack_s: float = 10.0) -> LagVerdict:
    """Bounded = the last third's mean lag is at most ``growth`` x the first third's plus
    ``slack_s`` seconds of input.

    Micro-batches make the lag a saw-tooth (it climbs while a batch runs, drops when it
    commits), so single samples and a straight-line fit swing with the batch phase; the mean of
    a third of the window spans several batches. A pipeline that keeps up holds those means
    level; one that falls behind adds (rate - throughput) x window/3 between the thirds.
    """
    inside = [(t, lag) for t, lag in points if start_s <= t <= start_s + window_s]
    third = window_s / 3
    parts = [[lag for t, lag in inside if start_s + i * third <= t < start_s + (i + 1) * third
              or (i == 2 and t == start_s + window_s)] for i in range(3)]
    if any(not part for part in parts):
        raise ValueError(f"lag samples do not cover the {window_s:.0f} s window from "
                         f"{start_s:.0f} s ({len(inside)} samples)")
    means = tuple(sum(part) / len(part) for part in parts)
    n = len(inside)
    mt = sum(t for t, _ in inside) / n
    ml = sum(lag for _, lag in inside) / n
    var = sum((t - mt) ** 2 for t, _ in inside)
    slope = sum((t - mt) * (lag - ml) for t, lag in inside) / var if var else 0.0
    allowance = (growth - 1) * means[0] + slack_s * rate
    return LagVerdict(bounded=means[2] <= means[0] + allowance,
                      thirds=(means[0], means[1], means[2]), allowance=allowance,
                      slope_per_s=slope, samples=n)


def sustain_trial(spark: Any, cfg: Config, opts: BenchOptions, rate: float,
                  pids: dict[str, int] | None = None) -> dict[str, Any]:
    """Produce ``rate``/s for warm-up + window seconds; judge the pipeline lag over the window."""
    with live_pipeline(spark, cfg, opts, f"sustain-{int(rate)}", pids) as run:
        produce_t0 = time.monotonic() - run.sampler.started_at
        produced = produce_at(run.cfg, opts, rate, opts.sustain_warmup_s + opts.sustain_window_s)
    path = [q for q in SUSTAIN_PATHS[opts.sustain_path] if q in run.sampler.chain]
    points, slowest = [], Counter()
    for sample in run.sampler.samples:
        if "read" in sample and "kafka_end" in sample:
            last = min(path, key=sample["read"].__getitem__)
            points.append((sample["t"] - produce_t0, sample["kafka_end"] - sample["read"][last]))
            if opts.sustain_warmup_s <= points[-1][0]:
                slowest[last] += 1
    verdict = lag_verdict(points, produced.rate, opts.sustain_warmup_s, opts.sustain_window_s)
    logger.info("sustain %g/s (achieved %.0f/s): lag of %s thirds %s, %s", rate, produced.rate,
                opts.sustain_path, [round(m) for m in verdict.thirds],
                "bounded" if verdict.bounded else "growing")
    return {"rate": rate, "achieved_rate": produced.rate, "produced": produced.sent,
            **asdict(verdict), "max_pipeline_lag": max((lag for _, lag in points), default=None),
            "slowest": slowest.most_common(1)[0][0] if slowest else None,
            "lag": points, "batches": batch_stats(list(run.sampler.batches.values())),
            "cost": asdict(run.sampler.cost)}


def next_rate(tried: dict[float, bool], *, precision: float = 1.2) -> float | None:
    """The next rate to try, or None when the search is done.

    Doubles while every rate held, halves while none did, then bisects (geometric mean)
    between the highest that held and the lowest that did not, until they are within
    ``precision`` of each other.
    """
    held = [r for r, ok in tried.items() if ok]
    failed = [r for r, ok in tried.items() if not ok]
    if not failed:
        return 2 * max(held)
    if not held:
        return min(failed) / 2
    lo = max(held)
    hi = min(r for r in failed if r > lo) if any(r > lo for r in failed) else None
    if hi is None:
        return 2 * lo
    if hi / lo <= precision:
        return None
    return float(round((lo * hi) ** 0.5, -1) or (lo * hi) ** 0.5)


def find_sustainable(spark: Any, cfg: Config, opts: BenchOptions,
                     pids: dict[str, int] | None = None) -> dict[str, Any]:
    """Trials from ``opts.sustain_from`` (see `next_rate`), at most ``opts.sustain_steps``."""
    trials: list[dict[str, Any]] = []
    tried: dict[float, bool] = {}
    rate: float | None = opts.sustain_from
    while rate is not None and len(trials) < opts.sustain_steps:
        try:
            trial = sustain_trial(spark, cfg, opts, rate, pids)
        except Exception as exc:  # keep what was measured; say what failed
            logger.exception("sustain trial at %g/s failed", rate)
            trials.append({"rate": rate, "error": str(exc)})
            break
        trials.append(trial)
        tried[rate] = trial["bounded"]
        rate = next_rate(tried)
    held = [r for r, ok in tried.items() if ok]
    failed = [r for r, ok in tried.items() if not ok]
    return {"window_s": opts.sustain_window_s, "warmup_s": opts.sustain_warmup_s,
            "path": opts.sustain_path, "queries": list(SUSTAIN_PATHS[opts.sustain_path]),
            "sustainable": max(held) if held else None,
            "not_sustainable": min((r for r in failed if not held or r > max(held)),
                                   default=None),
            "trials": trials}


def _wait_for_probe_alerts(spark: Any, cfg: Config, since_epoch_s: float, timeout_s: float,
                           failure: list) -> None:
    """Until gold/alerts holds a HIGH_TEMP alert for each probe reading silver holds.

    The alerts query runs behind silver; stopping as soon as silver is complete would leave
    most probes unmeasured and the latency figure would describe a handful of them.
    """
    from pyspark.sql import functions as F

    silver = str(cfg.paths.table(tables.SILVER_READINGS))
    alerts = str(cfg.paths.table(tables.ALERTS))
    until = time.monotonic() + timeout_s
    while time.monotonic() < until and not failure:
        probes = (spark.read.format("delta").load(silver)
                  .where((F.unix_micros("kafka_timestamp") >= int(since_epoch_s * 1e6))
                         & (F.col("temperature") == PROBE_TEMPERATURE)).count())
        try:
            raised = (spark.read.format("delta").load(alerts)
                      .where((F.col("alert_type") == "HIGH_TEMP")
                             & (F.col("value") == PROBE_TEMPERATURE)).count())
        except Exception:  # noqa: BLE001 - the table may not exist yet
            raised = 0
        if raised >= probes:
            return
        time.sleep(2.0)
    logger.warning("alerts did not catch up with silver within %.0f s", timeout_s)


def _trigger_s(cfg: Config) -> float:
    num, _, unit = cfg.streaming.trigger_interval.partition(" ")
    scale = {"millisecond": 0.001, "second": 1, "minute": 60}
    return float(num) * next((v for k, v in scale.items() if unit.startswith(k)), 1.0)


def _wait_active(spark: Any, at_least: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(spark.streams.active) < at_least:
        time.sleep(0.5)


PERCENTILES = (0.5, 0.95, 0.99)


def _pcts(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None}
    s = sorted(values)
    pick = {f"p{int(q * 100)}": s[min(len(s) - 1, int(q * len(s)))] for q in PERCENTILES}
    return {"n": len(s), **pick, "max": s[-1]}


def silver_latency(spark: Any, cfg: Config, since_epoch_s: float) -> dict[str, Any]:
    """Produce time (kafka_timestamp) to silver processed_at, seconds, over the run's readings."""
    from pyspark.sql import functions as F

    path = str(cfg.paths.table(tables.SILVER_READINGS))
    df = (spark.read.format("delta").load(path)
          .where(F.unix_micros("kafka_timestamp") >= int(since_epoch_s * 1e6))
          .select(((F.unix_micros("processed_at") - F.unix_micros("kafka_timestamp")) / 1e6)
                  .alias("lat"),
                  F.floor(F.unix_micros("kafka_timestamp") / 1e6 - since_epoch_s).alias("sec")))
    row = df.agg(F.count(F.lit(1)).alias("n"),
                 F.percentile_approx("lat", list(PERCENTILES), 10_000).alias("q"),
                 F.max("lat").alias("mx")).first()
    if not row or not row.n:
        return {"n": 0, "p50": None, "p95": None, "p99": None, "max": None, "by_second": []}
    per_s = (df.groupBy("sec").agg(F.percentile_approx("lat", [0.5, 0.95], 1000).alias("q"))
             .orderBy("sec").collect())
    return {"n": row.n, "p50": row.q[0], "p95": row.q[1], "p99": row.q[2], "max": row.mx,
            "by_second": [(r.sec, r.q[0], r.q[1]) for r in per_s]}


def alert_latency(spark: Any, cfg: Config, since_epoch_s: float) -> dict[str, Any]:
    """Kafka timestamp of each HIGH_TEMP alert minus the produce time of its reading."""
    from kafka import KafkaConsumer
    from pyspark.sql import functions as F

    consumer = KafkaConsumer(cfg.kafka.topic_alerts,
                             **kafka_client.settings(cfg).python_kwargs(KafkaConsumer),
                             auto_offset_reset="earliest", enable_auto_commit=False,
                             consumer_timeout_ms=5000)
    alerts: dict[tuple[str, int], int] = {}
    try:
        for rec in consumer:
            a = json.loads(rec.value)
            if a.get("alert_type") != "HIGH_TEMP" or rec.timestamp < since_epoch_s * 1000:
                continue
            et = datetime.fromisoformat(a["event_time"].replace("Z", "+00:00"))
            key = (a["sensor_id"], round(et.timestamp() * 1e6))
            alerts[key] = min(alerts.get(key, rec.timestamp), rec.timestamp)  # first delivery
    finally:
        consumer.close()
    path = str(cfg.paths.table(tables.SILVER_READINGS))
    readings = (spark.read.format("delta").load(path)
                .where((F.unix_micros("kafka_timestamp") >= int(since_epoch_s * 1e6))
                       & (F.col("temperature") == PROBE_TEMPERATURE))
                .select("sensor_id", F.unix_micros("event_time").alias("et"),
                        F.unix_micros("kafka_timestamp").alias("kt")).collect())
    lat = [(alerts[(r.sensor_id, r.et)] / 1000 - r.kt / 1e6)
           for r in readings if (r.sensor_id, r.et) in alerts]
    return {**_pcts(lat), "probes": len(readings), "alerts_seen": len(alerts)}


# A run at least this long also reports its batch durations period by period (goal: the
# last period's equal the first's), in hours from two hours on, else in quarters of the run.
PERIODS_FROM_S = 1200.0


def period_seconds(run_s: float) -> float:
    return 3600.0 if run_s >= 7200.0 else run_s / 4


def batch_stats(batches: list[dict[str, Any]], run_s: float = 0.0) -> dict[str, dict[str, Any]]:
    """Per query: batch count, rows and duration percentiles (seconds); for a run of at least
    ``PERIODS_FROM_S``, also the p50 duration and p50 rows of each period of the run
    (``periods``, ``rows_periods``; None for a period without a batch), a batch counted in the
    period it was first seen, from the pipeline's start."""
    out = {}
    period = period_seconds(run_s) if run_s >= PERIODS_FROM_S else 0.0
    for name in sorted({b["name"] for b in batches}):
        mine = [b for b in batches if b["name"] == name]
        ms = [b["ms"] / 1000 for b in mine]
        out[name] = {"batches": len(ms), "rows": sum(b["rows"] for b in mine), **_pcts(ms)}
        if period:
            n = max(1, round(run_s / period))
            by: list[list[float]] = [[] for _ in range(n)]
            rows: list[list[float]] = [[] for _ in range(n)]
            for b in mine:  # the drain after the last period is not part of the run
                if (i := int(b.get("t", 0.0) // period)) < n:
                    by[i].append(b["ms"] / 1000)
                    rows[i].append(float(b["rows"]))
            out[name]["period_s"] = period
            out[name]["periods"] = [_pcts(v)["p50"] for v in by]
            out[name]["rows_periods"] = [_pcts(v)["p50"] for v in rows]
    return out


# -- the whole run -----------------------------------------------------------------------------


def _pids(spark: Any, cfg: Config) -> dict[str, int]:
    pids = {"jvm": int(spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()),
            "driver": os.getpid()}
    st = broker.status(cfg)
    if st.pid:
        pids["broker"] = st.pid
    return pids


def run_bench(base: Config, opts: BenchOptions, root: Path) -> dict[str, Any]:
    """Start a broker in ``root``, measure everything, write the report; returns the results."""
    from jobs.spark import build_spark
    from jobs.topics import create_topics

    root.mkdir(parents=True, exist_ok=True)
    cfg = bench_config(base, root, opts)
    results: dict[str, Any] = {"options": asdict(opts), "started": datetime.now(UTC).isoformat(),
                               "bootstrap": cfg.kafka.bootstrap, "cpus": os.cpu_count(),
                               "spark_master": cfg.spark.master,
                               "trigger_interval": cfg.streaming.trigger_interval,
                               "broker_jvm_options": list(cfg.kafka.broker.jvm_options)}
    broker.start(cfg)
    try:
        # Alerts timed by the broker's clock: the append time of each alert record.
        create_topics(cfg, configs={cfg.kafka.topic_alerts: LOG_APPEND_TIME})
        if opts.throughput:
            results["backlog"] = produce_backlog(cfg, opts)
            results["consumer_perf"] = consumer_perf(cfg, opts.messages)
        else:  # the live runs still need the fleet's registry
            write_registry_csv(fleet_spec(opts).sensors, registry_csv(cfg))
        t0 = time.monotonic()
        spark = build_spark(cfg)
        results["spark_start_s"] = time.monotonic() - t0
        pids = _pids(spark, cfg)
        if opts.throughput:
            results["spark_noop"] = spark_noop_read(spark, cfg)
            results["layers"] = layer_throughput(spark, cfg, opts.messages, pids=pids)
            results["chains"] = chain_rates(results["layers"], opts.messages)
        results["latency"] = []
        results["reference"] = []
        for rate in opts.rates:
            try:
                results["latency"].append(latency_run(spark, cfg, opts, rate, pids))
            except Exception as exc:  # keep what was measured; say what failed
                logger.exception("latency run at %g/s failed", rate)
                results["latency"].append({"rate": rate, "error": str(exc)})
            if opts.reference:
                try:
                    results["reference"].append(reference_run(spark, cfg, opts, rate, pids))
                except Exception as exc:
                    logger.exception("reference run at %g/s failed", rate)
                    results["reference"].append({"rate": rate, "error": str(exc)})
        if opts.sustain_from:
            results["sustain"] = find_sustainable(spark, cfg, opts, pids)
        results["peak"] = {k: _status_kb(p, "VmHWM") / 1024 for k, p in pids.items()}
        results["finished"] = datetime.now(UTC).isoformat()
    finally:
        broker.stop(cfg)
    write_report(results, root)
    if not opts.keep_data:
        _clean(root)
    return results


def _clean(root: Path) -> None:
    import shutil

    for name in ("kafka", "spark-warehouse"):
        shutil.rmtree(root / name, ignore_errors=True)
    for folder in (*root.glob("lake-*"), *root.glob("checkpoint-ref-*")):
        shutil.rmtree(folder, ignore_errors=True)


# -- report ------------------------------------------------------------------------------------


def _f(x: Any, digits: int = 0) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{digits}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def summary_lines(r: dict[str, Any]) -> list[str]:
    """The headline figures, one per line (printed by the CLI and at the top of the report)."""
    lines = throughput_lines(r) if "layers" in r else []
    for lat in r["latency"]:
        if "error" in lat:
            lines.append(f"latency at {lat['rate']:,.0f}/s: FAILED ({lat['error']})")
            continue
        s, a = lat["silver"], lat["alert"]
        lines.append(
            f"latency at {lat['rate']:,.0f}/s (achieved {lat['achieved_rate']:,.0f}/s): "
            f"produce->silver p50 {_f(s['p50'], 2)} s p95 {_f(s['p95'], 2)} s "
            f"p99 {_f(s['p99'], 2)} s (n {s['n']:,}); produce->alert p50 {_f(a['p50'], 2)} s "
            f"p95 {_f(a['p95'], 2)} s p99 {_f(a['p99'], 2)} s (n {a['n']:,} of {a['probes']:,} "
            f"probes); max lag {_f(lat['max_lag'])}, final lag {_f(lat['final_lag'])}")
        c = lat["cost"]
        lines.append(
            f"cores at {lat['rate']:,.0f}/s: JVM {c['jvm_cpu_cores']:.2f}, Python workers "
            f"{c['workers_cpu_cores']:.2f}, driver {c['driver_cpu_cores']:.2f}, broker "
            f"{c['broker_cpu_cores']:.2f}; machine {c['machine_busy_pct']:.0f} % busy")
    lines += reference_lines(r)
    if "sustain" in r:
        lines.append(sustain_line(r["sustain"]))
    peak = r.get("peak", {})
    lines.append("peak RSS (VmHWM): " + ", ".join(f"{k} {v:,.0f} MB" for k, v in peak.items()))
    return lines


def reference_lines(r: dict[str, Any]) -> list[str]:
    """The pipeline against the plain reference query at each rate: p95 and cores, as ratios."""
    out = []
    pipeline = {lat["rate"]: lat for lat in r.get("latency", []) if "error" not in lat}
    for ref in r.get("reference", []):
        if "error" in ref:
            out.append(f"reference at {ref['rate']:,.0f}/s: FAILED ({ref['error']})")
            continue
        a, c = ref["alert"], cores(ref["cost"])
        line = (f"reference query at {ref['rate']:,.0f}/s: produce->alert p50 {_f(a['p50'], 2)} s "
                f"p95 {_f(a['p95'], 2)} s ({a['n']:,} of {a['probes']:,} probes), "
                f"{c:.2f} cores")
        lat = pipeline.get(ref["rate"])
        if lat and a["p95"] and lat["alert"]["p95"] is not None and c:
            line += (f"; pipeline/reference: p95 {lat['alert']['p95'] / a['p95']:.1f}x, "
                     f"cores {cores(lat['cost']) / c:.1f}x")
        out.append(line)
    return out


def throughput_lines(r: dict[str, Any]) -> list[str]:
    cp = r["consumer_perf"].get("nMsg.sec", 0.0)
    noop = r["spark_noop"]["rows_per_s"]
    n = r["options"]["messages"]
    lines = [
        f"backlog: {n:,} messages from {r['options']['sensors']:,} sensors produced at "
        f"{r['backlog']['msgs_per_s']:,.0f} msg/s",
        f"ceiling: Kafka ConsumerPerformance {cp:,.0f} msg/s "
        f"(fetch only {r['consumer_perf'].get('fetch.nMsg.sec', 0):,.0f}); "
        f"Spark no-op Kafka read {noop:,.0f} rows/s",
    ]
    for layer in r["layers"]:
        lines.append(f"layer {layer['layer']}: {layer['rows_in']:,} rows in "
                     f"{layer['seconds']:.1f} s = {layer['rows_per_s']:,.0f} rows/s")
    for chain, rate in r["chains"].items():
        lines.append(f"throughput {chain}: {rate:,.0f} events/s = {rate / noop:.2f} x Spark no-op,"
                     f" {rate / cp:.2f} x Kafka consumer" if cp and noop else chain)
    return lines


def sustain_line(s: dict[str, Any]) -> str:
    held, failed = s["sustainable"], s["not_sustainable"]
    tried = ", ".join(
        f"{t['rate']:,.0f}/s " + ("failed" if "error" in t else
                                  "held" if t["bounded"] else "grew")
        for t in s["trials"])
    window = (f"lag of {'every query' if s.get('path', 'all') == 'all' else 'the alert path'} "
              f"bounded for {s['window_s']:.0f} s after {s['warmup_s']:.0f} s of warm-up")
    if held is None:
        return f"sustainable rate ({window}): below {_f(failed)}/s (tried {tried})"
    upper = f", {failed:,.0f}/s did not" if failed else ""
    return f"sustainable rate ({window}): {held:,.0f}/s{upper} (tried {tried})"


def write_report(r: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(r, indent=1, default=str))
    plots = _plots(r, out)
    md = ["# lakehouse bench", "",
          f"Run {r['started']} – {r.get('finished', '?')}, {r['cpus']} CPUs, Spark master "
          f"`{r['spark_master']}`, trigger `{r['trigger_interval']}`, broker JVM "
          f"`{' '.join(r.get('broker_jvm_options', []))}`, options "
          f"`{json.dumps(r['options'])}`.", "", "## Summary", ""]
    md += [f"- {line}" for line in summary_lines(r)]
    md += throughput_table(r) if "layers" in r else []
    md += latency_tables(r)
    if "sustain" in r:
        md += sustain_table(r["sustain"])
    md += ["", "## Plots", ""] + [f"![{p.stem}]({p.name})" for p in plots]
    md += ["", "Latency to silver is measured to `processed_at` (the micro-batch's "
           "`current_timestamp()`, taken just before the MERGE commits); to alerts, to the Kafka "
           "timestamp of the HIGH_TEMP alert record a probe reading triggered. Gold aggregates "
           "are not timed per reading. Pipeline lag is the messages produced minus the rows read "
           "by the slowest query that reads readings (bronze, silver, alerts, the aggregates).",
           ""]
    path = out / "report.md"
    path.write_text("\n".join(md))
    logger.info("report written to %s", path)
    return path


def throughput_table(r: dict[str, Any]) -> list[str]:
    md = ["", "## Throughput (availableNow, one layer after the other on fresh tables)", "",
          "| layer | events | seconds | events/s | JVM peak MB | JVM cores | workers cores | "
          "machine busy % | files written |", "|---|---|---|---|---|---|---|---|---|"]
    for layer in r["layers"]:
        c = layer["cost"]
        md.append(f"| {layer['layer']} | {layer['rows_in']:,} | {layer['seconds']:.1f} | "
                  f"{layer['rows_per_s']:,.0f} | {c['jvm_peak_rss_mb']:,.0f} | "
                  f"{c['jvm_cpu_cores']:.2f} | {c['workers_cpu_cores']:.2f} | "
                  f"{c['machine_busy_pct']:.0f} | {c['files_written']:,} |")
    md += ["", "Rows each query reported (numInputRows summed): " + "; ".join(
        f"{layer['layer']}: " + ", ".join(f"{k} {v:,}" for k, v in layer["queries"].items())
        for layer in r["layers"]), ""]
    return md


def latency_tables(r: dict[str, Any]) -> list[str]:
    if not r["latency"]:
        return []
    md = ["## Latency at steady rates (pipeline running continuously)", "",
          "| rate/s | achieved | silver p50 | p95 | p99 | alert p50 | p95 | p99 | alerts/probes "
          "| max lag | JVM peak MB | workers peak MB | machine busy % | files/min |",
          "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for lat in r["latency"]:
        if "error" in lat:
            md.append(f"| {lat['rate']:,.0f} | failed: {lat['error']} |")
            continue
        s, a, c = lat["silver"], lat["alert"], lat["cost"]
        md.append(f"| {lat['rate']:,.0f} | {lat['achieved_rate']:,.0f} | {_f(s['p50'], 2)} | "
                  f"{_f(s['p95'], 2)} | {_f(s['p99'], 2)} | {_f(a['p50'], 2)} | "
                  f"{_f(a['p95'], 2)} | {_f(a['p99'], 2)} | {a['n']}/{a['probes']} | "
                  f"{_f(lat['max_lag'])} | {c['jvm_peak_rss_mb']:,.0f} | "
                  f"{c['workers_py_peak_rss_mb']:,.0f} | {c['machine_busy_pct']:.0f} | "
                  f"{c['files_per_min']:,.0f} |")
    for lat in r["latency"]:
        if "batches" in lat:
            md += ["", f"Batch durations at {lat['rate']:,.0f}/s (seconds):", "",
                   "| query | batches | rows | p50 | p95 | max |", "|---|---|---|---|---|---|"]
            md += [f"| {q} | {b['batches']} | {b['rows']:,} | {_f(b['p50'], 2)} | "
                   f"{_f(b['p95'], 2)} | {_f(b['max'], 2)} |" for q, b in lat["batches"].items()]
            md += period_table(lat["batches"])
    return md


def period_table(batches: dict[str, dict[str, Any]]) -> list[str]:
    """Batch p50 period by period of a long run, and the last period's over the first's."""
    timed = {q: b for q, b in batches.items() if b.get("periods")}
    if not timed:
        return []
    period, n = next(iter(timed.values()))["period_s"], len(next(iter(timed.values()))["periods"])
    md = ["", f"Batch duration p50 by period of {period / 60:,.0f} min (seconds):", "",
          "| query | " + " | ".join(f"{i + 1}" for i in range(n)) + " | last/first |",
          "|---|" + "---|" * (n + 1)]
    for q, b in timed.items():
        ps = b["periods"]
        ratio = f"{ps[-1] / ps[0]:.2f}" if ps[0] and ps[-1] is not None else "-"
        md.append(f"| {q} | " + " | ".join(_f(p, 2) for p in ps) + f" | {ratio} |")
    md += ["", "Rows per batch p50 by the same periods (a slower batch also gathers more rows, so "
           "a duration that grows at constant rows is the cost per batch growing):", "",
           "| query | " + " | ".join(f"{i + 1}" for i in range(n)) + " |", "|---|" + "---|" * n]
    for q, b in timed.items():
        md.append(f"| {q} | " + " | ".join(_f(r, 0) for r in b.get("rows_periods", [])) + " |")
    return md


def sustain_table(s: dict[str, Any]) -> list[str]:
    md = ["", "## Sustainable rate", "", sustain_line(s), "",
          f"Each trial produces for {s['warmup_s']:.0f} s of warm-up plus a {s['window_s']:.0f} s "
          "window on fresh tables. The lag is the messages produced minus the rows read by the "
          f"slowest of {', '.join(s.get('queries', []))}. It held if its mean over the window's "
          "last third is at most 1.25 x the first third's plus 10 s of input.", "",
          "| rate/s | achieved | lag 1st third | 2nd | 3rd | allowed rise | trend msg/s | "
          "max lag | held | slowest query | machine busy % |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    for t in s["trials"]:
        if "error" in t:
            md.append(f"| {t['rate']:,.0f} | failed: {t['error']} |")
            continue
        a, b, c = t["thirds"]
        md.append(f"| {t['rate']:,.0f} | {t['achieved_rate']:,.0f} | {a:,.0f} | {b:,.0f} | "
                  f"{c:,.0f} | {t['allowance']:,.0f} | {t['slope_per_s']:,.1f} | "
                  f"{_f(t['max_pipeline_lag'])} | {'yes' if t['bounded'] else 'no'} | "
                  f"{t.get('slowest') or '–'} | "
                  f"{t['cost']['machine_busy_pct']:.0f} |")
    return md


def _plots(r: dict[str, Any], out: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.warning("matplotlib not installed: no plots")
        return []
    paths = [sustain_plot(r["sustain"], out, plt)] if r.get("sustain", {}).get("trials") else []
    runs = [lat for lat in r["latency"] if "error" not in lat]
    if not runs:
        return paths
    fig, ax = plt.subplots(figsize=(6, 4))
    for kind, style in (("silver", "o-"), ("alert", "s--")):
        for q in ("p50", "p95", "p99"):
            pts = [(lat["achieved_rate"], lat[kind][q]) for lat in runs if lat[kind][q]]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=f"{kind} {q}")
    ax.set_xlabel("events/s produced")
    ax.set_ylabel("latency from produce (s)")
    ax.set_title("rate vs latency")
    ax.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "rate_vs_latency.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for lat in runs:
        pts = [(s["t"], s["lag"]) for s in lat["samples"] if "lag" in s]
        if pts:
            ax1.plot(*zip(*pts, strict=True), label=f"{lat['rate']:,.0f}/s")
        by_s = lat["silver"]["by_second"]
        if by_s:
            ax2.plot([b[0] for b in by_s], [b[2] for b in by_s], label=f"{lat['rate']:,.0f}/s p95")
    ax1.set_ylabel("Kafka lag of bronze (messages)")
    ax1.legend(fontsize=7)
    ax2.set_ylabel("produce->silver p95 (s)")
    ax2.set_xlabel("seconds into the run (lag) / into producing (latency)")
    ax2.legend(fontsize=7)
    fig.tight_layout()
    paths.append(out / "lag_over_time.png")
    fig.savefig(paths[-1], dpi=100)
    plt.close(fig)
    return paths


def sustain_plot(s: dict[str, Any], out: Path, plt: Any) -> Path:
    fig, ax = plt.subplots(figsize=(7, 4))
    for t in s["trials"]:
        if t.get("lag"):
            ax.plot(*zip(*t["lag"], strict=True),
                    label=f"{t['rate']:,.0f}/s ({'held' if t['bounded'] else 'grew'})")
    ax.axvspan(s["warmup_s"], s["warmup_s"] + s["window_s"], alpha=0.1, label="judged window")
    ax.set_xlabel("seconds since producing started")
    ax.set_ylabel("pipeline lag (messages)")
    ax.set_title("sustainable-rate search")
    ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "sustain_lag.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


@dataclass
class BenchPlan:
    """What the CLI resolved: options and the folder of this run."""

    opts: BenchOptions
    root: Path
    notes: list[str] = field(default_factory=list)


def plan(base: Config, *, quick: bool, out: Path | None, **overrides: Any) -> BenchPlan:
    opts = QUICK if quick else BenchOptions()
    opts = replace(opts, **{k: v for k, v in overrides.items() if v is not None})
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    root = (out or base.paths.data_dir / "bench" / f"run-{stamp}").resolve()
    return BenchPlan(opts=opts, root=root)
