"""Drive a message source into a sink: pacing (rate or speed-up), wall-clock limits, progress,
the truth file, and several producer processes (``workers``) for rates one process cannot reach.

The source never reads the clock; everything about wall time is here.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import queue
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from generator.sinks import ConfluentKafkaSink, FileSink, KafkaSink, Sink, SocketSink
from generator.stream import GeneratorSpec, Message, SourceStats, generate_messages

if TYPE_CHECKING:
    from jobs.kafka_client import ClientSettings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pacing:
    """``rate``: messages per wall second overall; ``speedup``: event seconds per wall second
    (wins over ``rate`` when both are given); ``wall_duration_s``: stop after this long."""

    rate: float | None = None
    speedup: float | None = None
    wall_duration_s: float | None = None


@dataclass
class RunResult:
    sent: int = 0
    delivered: int = 0
    errors: int = 0
    seconds: float = 0.0
    faults: dict[str, int] = field(default_factory=dict)
    events: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0

    def describe(self) -> str:
        return (f"sent {self.sent:,} messages in {self.seconds:.1f} s ({self.rate:,.0f}/s), "
                f"delivered {self.delivered:,}, errors {self.errors:,}; "
                f"faults {sum(self.faults.values()):,}, events {sum(self.events.values()):,}")


class TruthWriter:
    """The truth file: one JSON object per line, flushed as it goes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = self.path.open("w", encoding="utf-8")

    def __call__(self, record: dict[str, object]) -> None:
        self._fh.write(json.dumps(record, separators=(",", ":")) + "\n")

    def close(self) -> None:
        self._fh.close()


class Progress:
    """A progress line on stderr (via logging) about once a second."""

    def __init__(self, label: str, clock: Callable[[], float], every_s: float = 1.0) -> None:
        self.label = label
        self.clock = clock
        self.every_s = every_s
        self.t0 = clock()
        self._last_t = self.t0
        self._last_n = 0

    def maybe(self, sent: int, extra: str = "") -> None:
        now = self.clock()
        if now - self._last_t >= self.every_s:
            self.log(sent, extra, now)

    def log(self, sent: int, extra: str = "", now: float | None = None) -> None:
        now = self.clock() if now is None else now
        recent = (sent - self._last_n) / max(now - self._last_t, 1e-9)
        overall = sent / max(now - self.t0, 1e-9)
        logger.info("%s: %s sent, %s/s now, %s/s overall%s", self.label, f"{sent:,}",
                    f"{recent:,.0f}", f"{overall:,.0f}", extra)
        self._last_t, self._last_n = now, sent


def drive(
    messages: Iterable[Message],
    sink: Sink,
    pacing: Pacing,
    *,
    stats: SourceStats | None = None,
    label: str = "generate",
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    on_progress: Callable[[int], None] | None = None,
) -> RunResult:
    """Send every message to the sink at the pace asked; returns what was sent."""
    progress = Progress(label, clock)
    t0 = progress.t0
    rate = pacing.rate if pacing.speedup is None else None
    # check the pace every `chunk` messages: often enough to stay smooth, rarely enough to cost
    # nothing at high rates
    chunk = max(1, min(2000, int(rate / 200))) if rate else 1
    first_event: float | None = None
    sent = 0
    try:
        for msg in messages:
            sink.send(msg)
            sent += 1
            if sent % chunk:
                continue
            now = clock()
            if pacing.speedup is not None and msg.event_time is not None and msg.fault is None:
                ts = msg.event_time.timestamp()
                if first_event is None:
                    first_event = ts
                ahead = t0 + (ts - first_event) / pacing.speedup - now
                if ahead > 0.001:
                    sleep(ahead)
            elif rate:
                ahead = t0 + sent / rate - now
                if ahead > 0.0005:
                    sleep(ahead)
            if pacing.wall_duration_s is not None and now - t0 >= pacing.wall_duration_s:
                break
            if on_progress is not None:
                on_progress(sent)
            else:
                progress.maybe(sent, _stats_extra(stats))
    except KeyboardInterrupt:
        logger.warning("%s: interrupted, flushing what was sent", label)
    finally:
        sink.close()
    if on_progress is not None:
        on_progress(sent)
    else:
        progress.log(sent, _stats_extra(stats))
    result = RunResult(sent=sent, delivered=sink.delivered, errors=sink.errors,
                       seconds=clock() - t0)
    if stats is not None:
        result.faults, result.events = dict(stats.faults), dict(stats.events)
    return result


def _stats_extra(stats: SourceStats | None) -> str:
    if stats is None:
        return ""
    return (f", faults {sum(stats.faults.values()):,}, events {sum(stats.events.values()):,}, "
            f"event time {stats.readings:,} readings")


# -- the generate command's engine ---------------------------------------------------------


@dataclass(frozen=True)
class SinkSpec:
    kind: str = "kafka"  # kafka | files | socket
    producer: str = "kafka-python"  # kafka-python | confluent (librdkafka)
    bootstrap: str = "127.0.0.1:9092"
    topic: str = "iot-sensors"
    out_dir: Path | None = None
    host: str = "127.0.0.1"
    port: int = 9999
    # Security settings of the Kafka clients (jobs.kafka_client); None: PLAINTEXT to bootstrap.
    client: ClientSettings | None = None

    def open(self, worker: int | None = None) -> Sink:
        if self.kind == "kafka":
            if self.producer == "confluent":
                return ConfluentKafkaSink(self.bootstrap, self.topic, client=self.client)
            if self.producer != "kafka-python":
                raise ValueError(f"unknown producer {self.producer!r}: kafka-python or confluent")
            return KafkaSink(self.bootstrap, self.topic, client=self.client)
        if self.kind == "files":
            if self.out_dir is None:
                raise ValueError("the files sink needs an output folder (--out)")
            prefix = None if worker is None else f"part-{int(time.time() * 1000)}-w{worker}"
            return FileSink(self.out_dir, prefix=prefix)
        if self.kind == "socket":
            sink = SocketSink(self.host, self.port)
            sink.wait_for_client()
            return sink
        raise ValueError(f"unknown sink {self.kind!r}: kafka, files or socket")


def run_generator(
    spec: GeneratorSpec, sink_spec: SinkSpec, pacing: Pacing, *, truth_path: Path | None = None,
    workers: int = 1,
) -> RunResult:
    """Generate into the sink with one process, or ``workers`` processes splitting the fleet."""
    if workers > 1:
        return _run_workers(spec, sink_spec, pacing, truth_path, workers)
    truth = TruthWriter(truth_path) if truth_path else None
    stats = SourceStats()
    try:
        sink = sink_spec.open()
        return drive(generate_messages(spec, truth=truth, stats=stats), sink, pacing, stats=stats)
    finally:
        if truth is not None:
            truth.close()


def split_spec(spec: GeneratorSpec, workers: int, worker: int) -> GeneratorSpec:
    """Worker ``worker``'s share: every ``workers``-th sensor, its share of the count, its own
    seed. Deterministic for a given (spec, workers)."""
    count = None
    if spec.count is not None:
        count = spec.count // workers + (1 if worker < spec.count % workers else 0)
    return replace(spec, sensors=spec.sensors[worker::workers], count=count,
                   seed=spec.seed * 1_000_003 + worker)


def _worker_main(
    spec: GeneratorSpec, sink_spec: SinkSpec, pacing: Pacing, truth_path: str | None,
    worker: int, counters: Any, results: Any, log_level: int,
) -> None:
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.WARNING)

    def report(n: int) -> None:
        counters[worker] = n

    truth = TruthWriter(truth_path) if truth_path else None
    stats = SourceStats()
    try:
        sink = sink_spec.open(worker)
        result = drive(generate_messages(spec, truth=truth, stats=stats), sink, pacing,
                       stats=stats, label=f"worker {worker}", on_progress=report)
        results.put((worker, result, None))
    except Exception as exc:  # reported to the parent, which fails the run
        results.put((worker, None, f"{type(exc).__name__}: {exc}"))
        raise
    finally:
        if truth is not None:
            truth.close()


def _run_workers(
    spec: GeneratorSpec, sink_spec: SinkSpec, pacing: Pacing, truth_path: Path | None,
    workers: int,
) -> RunResult:
    if sink_spec.kind == "socket":
        raise ValueError("the socket sink serves one stream: use --workers 1")
    workers = min(workers, len(spec.sensors))
    ctx = mp.get_context("spawn")
    counters = ctx.Array("q", workers)
    results = ctx.Queue()
    share = Pacing(rate=pacing.rate / workers if pacing.rate else None, speedup=pacing.speedup,
                   wall_duration_s=pacing.wall_duration_s)
    parts = [None if truth_path is None else f"{truth_path}.part{w}" for w in range(workers)]
    level = logging.getLogger().getEffectiveLevel()
    progress = Progress(f"generate ({workers} workers)", time.monotonic)
    procs = [
        ctx.Process(target=_worker_main, name=f"generator-{w}",
                    args=(split_spec(spec, workers, w), sink_spec, share, parts[w], w, counters,
                          results, level))
        for w in range(workers)
    ]
    for proc in procs:
        proc.start()
    total = RunResult()
    failures: list[str] = []
    got = 0
    try:
        while got < workers:
            try:
                w, r, err = results.get(timeout=0.2)
            except queue.Empty:
                progress.maybe(sum(counters[:]))
                if not any(p.is_alive() for p in procs) and results.empty():
                    failures.append("a worker died without a result")
                    break
                continue
            got += 1
            if err is not None:
                failures.append(f"worker {w}: {err}")
                continue
            total.sent += r.sent
            total.delivered += r.delivered
            total.errors += r.errors
            for key in ("faults", "events"):
                into = getattr(total, key)
                for kind, n in getattr(r, key).items():
                    into[kind] = into.get(kind, 0) + n
    finally:
        for proc in procs:
            proc.join()
    total.seconds = time.monotonic() - progress.t0
    progress.log(total.sent)
    if failures:
        raise RuntimeError("; ".join(failures))
    if truth_path is not None:
        with Path(truth_path).open("w", encoding="utf-8") as out:
            for part in parts:
                assert part is not None
                path = Path(part)
                out.write(path.read_text(encoding="utf-8"))
                path.unlink()
    return total
