"""What ``lakehouse generate`` and ``lakehouse replay`` do, kept out of the click layer."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from generator.driver import Pacing, RunResult, SinkSpec, drive, run_generator
from generator.events import EVENT_KINDS
from generator.faults import FAULT_KINDS
from generator.fleet import make_fleet, write_registry_csv
from generator.replay import (
    BEIJING,
    ReplayStats,
    parse_mapping,
    read_beijing,
    read_mapped_csv,
    replay_messages,
)
from generator.stream import GeneratorSpec
from jobs import kafka_client
from jobs.config import REPO_ROOT, Config

logger = logging.getLogger(__name__)

DEFAULT_SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


def parse_rates(text: str | None, known: tuple[str, ...], what: str) -> dict[str, float]:
    """``"kind=rate,kind=rate"`` (``all=rate`` sets every kind) -> {kind: rate}."""
    rates: dict[str, float] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        kind, sep, value = item.partition("=")
        kind = kind.strip()
        try:
            rate = float(value)
        except ValueError:
            rate = math.nan
        if not sep or not math.isfinite(rate):
            raise ValueError(f"bad --{what} item {item!r}: expected kind=rate, e.g. "
                             f"{known[0]}=0.01")
        if kind == "all":
            rates.update({k: rate for k in known})
        elif kind in known:
            rates[kind] = rate
        else:
            raise ValueError(f"unknown {what[:-1]} kind {kind!r}; known: {', '.join(known)}")
    return rates


def parse_start(text: str | None) -> datetime | None:
    if not text:
        return None
    t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


@dataclass(frozen=True)
class GenerateOptions:
    sensors: int = 100
    rate: float | None = None
    duration_s: float | None = None
    count: int | None = None
    seed: int = 42
    interval_s: float = 5.0
    faults: str | None = None
    events: str | None = None
    sink: str = "kafka"
    out: Path | None = None
    port: int = 9999
    truth: Path | None = None
    registry: Path | None = None
    speedup: float | None = None
    start: str | None = None
    workers: int = 1
    producer: str = "kafka-python"
    first_event_after_s: float | None = None


def plan_generate(
    cfg: Config, opts: GenerateOptions, now: datetime
) -> tuple[GeneratorSpec, Pacing, Path]:
    """The spec, pacing and registry path the options ask for.

    Without ``--rate`` or ``--speedup`` the fleet runs in real time (``speedup`` 1). A wall
    ``--duration`` becomes event time through the speed-up, or a message count through the rate.
    Without ``--start`` the stream is placed to end about now, so that no clean reading is ever
    in the future (silver rejects timestamps more than a day ahead).
    """
    if opts.duration_s is None and opts.count is None:
        raise ValueError("give --duration SECONDS or --count MESSAGES")
    speedup = opts.speedup
    if opts.rate is None and speedup is None:
        speedup = 1.0
    pacing = Pacing(rate=opts.rate, speedup=speedup, wall_duration_s=opts.duration_s)
    count = opts.count
    event_duration: float | None = None
    if opts.duration_s is not None:
        if speedup is not None:
            event_duration = opts.duration_s * speedup
        elif count is None:
            assert opts.rate is not None
            count = math.ceil(opts.rate * opts.duration_s)
    start = now.replace(microsecond=0) if (opts.start or "").strip() == "now" \
        else parse_start(opts.start)
    if start is None:
        span = event_duration
        if span is None and count is not None:
            span = count / opts.sensors * opts.interval_s
        start = (now - timedelta(seconds=span or 0)).replace(microsecond=0)
    spec = GeneratorSpec(
        sensors=tuple(make_fleet(opts.sensors, opts.seed)),
        seed=opts.seed,
        interval_s=opts.interval_s,
        start=start,
        count=count,
        duration_s=event_duration,
        faults=parse_rates(opts.faults, FAULT_KINDS, "faults"),
        events=parse_rates(opts.events, EVENT_KINDS, "events"),
        ranges=cfg.validation.ranges(),
        first_event_after_s=opts.first_event_after_s,
    )
    registry = opts.registry or cfg.paths.data_dir / "registry" / "sensors.csv"
    return spec, pacing, registry


def generate(cfg: Config, opts: GenerateOptions) -> RunResult:
    spec, pacing, registry = plan_generate(cfg, opts, datetime.now(UTC))
    write_registry_csv(spec.sensors, registry)
    logger.info("registry of %d sensors written to %s", len(spec.sensors), registry)
    if opts.sink == "kafka":
        from jobs.topics import create_topics

        create_topics(cfg)
    sink = SinkSpec(kind=opts.sink, producer=opts.producer, bootstrap=cfg.kafka.bootstrap,
                    topic=cfg.kafka.topic_in, out_dir=opts.out, port=opts.port,
                    client=kafka_client.settings(cfg) if opts.sink == "kafka" else None)
    logger.info(
        "generating: %d sensors every %g s from %s, %s, sink %s",
        len(spec.sensors), spec.interval_s, spec.start.isoformat(),
        f"speed-up {pacing.speedup:g}" if pacing.speedup else f"{pacing.rate:g} msg/s",
        opts.sink,
    )
    return run_generator(spec, sink, pacing, truth_path=opts.truth, workers=opts.workers)


@dataclass(frozen=True)
class ReplayOptions:
    source: str = BEIJING
    data_dir: Path = DEFAULT_SHARED_DATA
    speedup: float | None = 3600.0
    rate: float | None = None
    mapping: str | None = None
    stations: tuple[str, ...] = ()
    limit: int | None = None
    sink: str = "kafka"
    out: Path | None = None
    port: int = 9999
    producer: str = "kafka-python"


def replay(cfg: Config, opts: ReplayOptions) -> tuple[RunResult, ReplayStats]:
    stats = ReplayStats()
    if opts.source.lower() == BEIJING:
        readings = read_beijing(opts.data_dir, opts.stations or None, stats)
    else:
        readings = read_mapped_csv(Path(opts.source), parse_mapping(opts.mapping), stats)
    if opts.sink == "kafka":
        from jobs.topics import create_topics

        create_topics(cfg)
    sink = SinkSpec(kind=opts.sink, producer=opts.producer, bootstrap=cfg.kafka.bootstrap,
                    topic=cfg.kafka.topic_in, out_dir=opts.out, port=opts.port,
                    client=kafka_client.settings(cfg) if opts.sink == "kafka" else None).open()
    pacing = Pacing(rate=opts.rate, speedup=None if opts.rate else opts.speedup)
    result = drive(replay_messages(readings, opts.limit), sink, pacing, label="replay")
    return result, stats


def rates_text(rates: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {v:,}" for k, v in sorted(rates.items())) or "none"
