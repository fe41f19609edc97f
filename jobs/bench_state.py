"""The alerts query's state size over a long simulated run (issue 6): does it stay flat?

Clean generator readings (every event kind on) are produced to a private broker's input topic
one chunk of event time at a time; after each chunk the real alerts query runs (availableNow,
reading that topic and publishing to the broker's alert topic) and the state store metrics of
its stateful operator are read from its progress. Flat means: once every sensor has been seen, the
state rows and memory stop growing while the readings keep coming.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from generator.events import EVENT_KINDS
from generator.fleet import make_fleet
from generator.stream import GeneratorSpec, generate_messages
from jobs import broker, kafka_client
from jobs.config import Config

logger = logging.getLogger(__name__)

START = datetime(2024, 1, 10, tzinfo=UTC)


@dataclass(frozen=True)
class StatePoint:
    event_time_upto: str
    readings: int
    state_rows: int | None
    state_memory_bytes: int | None
    batch_ms: int | None


def _chunks(spec: GeneratorSpec, chunk: timedelta) -> Iterator[tuple[datetime, list[bytes]]]:
    """The generated wire messages, one list per ``chunk`` of event time."""
    edge, rows = START + chunk, []
    for msg in generate_messages(spec):
        d = json.loads(msg.value)
        t = datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00"))
        while t >= edge:
            yield edge, rows
            edge, rows = edge + chunk, []
        rows.append(msg.value)
    yield edge, rows


def _produce(cfg: Config, values: list[bytes]) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(**kafka_client.settings(cfg).python_kwargs(KafkaProducer),
                             acks="all", linger_ms=20)
    try:
        for value in values:
            producer.send(cfg.kafka.topic_in, value)
        producer.flush()
    finally:
        producer.close()


def alert_state_run(base: Config, *, sensors: int, hours: float, chunk_min: float = 30.0,
                    interval_s: float = 30.0, event_rate: float = 0.0005,
                    folder: Path | None = None) -> list[StatePoint]:
    """Run the simulation on a private broker and data folder; one point per chunk."""
    from jobs.alerts_job import start_alerts
    from jobs.spark import build_spark
    from jobs.topics import create_topics

    root = folder or Path(tempfile.mkdtemp(prefix="lakehouse-alert-state-"))
    cfg = base.with_overrides({
        "paths.data_dir": str(root), "paths.lakehouse_root": None,
        "paths.checkpoint_root": None, "spark.ui_enabled": False,
        "kafka.bootstrap": f"127.0.0.1:{broker.free_port_pair()}",
    })
    spec = GeneratorSpec(sensors=tuple(make_fleet(sensors, 1)), seed=1, interval_s=interval_s,
                         start=START, duration_s=hours * 3600,
                         events={k: event_rate for k in EVENT_KINDS})
    broker.start(cfg)
    try:
        create_topics(cfg)
        spark = build_spark(cfg)
        points: list[StatePoint] = []
        total = 0
        for edge, rows in _chunks(spec, timedelta(minutes=chunk_min)):
            if rows:
                _produce(cfg, rows)
                total += len(rows)
            query = start_alerts(spark, cfg, trigger={"availableNow": True})
            query.awaitTermination()
            progress = [p for p in query.recentProgress if p.get("stateOperators")]
            op = progress[-1]["stateOperators"][0] if progress else {}
            # the chunk's data batch (availableNow may end with an empty, timers-only one)
            data = max(progress, key=lambda p: p.get("numInputRows", 0), default=None)
            points.append(StatePoint(
                event_time_upto=edge.isoformat(), readings=total,
                state_rows=op.get("numRowsTotal"), state_memory_bytes=op.get("memoryUsedBytes"),
                batch_ms=data["durationMs"].get("triggerExecution") if data else None,
            ))
            logger.info("alert state: %s", asdict(points[-1]))
    finally:
        broker.stop(cfg)
    return points
