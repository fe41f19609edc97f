"""Measure the alerts query's state size over a long simulated run (issue 6).

Writes the generator's clean readings (with every event kind) straight into a scratch silver
table, one chunk of event time at a time, runs the alerts query (availableNow) after each chunk
and prints the state store metrics of the stateful operator (rows, memory) from lastProgress.
Kafka publishing is switched off here (state size only; no broker needed).

    python -m jobs.bench_alert_state --sensors 100 --hours 3 --chunk-min 15 --interval 10
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

from generator.events import EVENT_KINDS
from generator.fleet import make_fleet
from generator.stream import GeneratorSpec, generate_messages
from jobs import tables
from jobs.config import load_config
from jobs.logs import configure_logging
from silver.schema import SILVER_SCHEMA

logger = logging.getLogger(__name__)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sensors", type=int, default=100)
    ap.add_argument("--hours", type=float, default=3.0)
    ap.add_argument("--chunk-min", type=float, default=15.0)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--event-rate", type=float, default=0.0005)
    args = ap.parse_args()
    configure_logging("WARNING")
    root = Path(tempfile.mkdtemp(prefix="alert-state-"))
    cfg = load_config(overrides={"paths.data_dir": str(root), "spark.master": "local[2]",
                                 "spark.shuffle_partitions": 2, "spark.ui_enabled": False,
                                 "kafka.bootstrap": "127.0.0.1:1"})
    from jobs.alerts_job import AlertPublisher, start_alerts
    from jobs.spark import build_spark

    AlertPublisher.publish = lambda self, alerts: len(list(alerts))  # type: ignore[method-assign]
    spark = build_spark(cfg)
    start = datetime(2024, 1, 10, tzinfo=UTC)
    spec = GeneratorSpec(sensors=tuple(make_fleet(args.sensors, 1)), seed=1,
                         interval_s=args.interval, start=start, duration_s=args.hours * 3600,
                         events={k: args.event_rate for k in EVENT_KINDS})
    names = SILVER_SCHEMA.fieldNames()
    chunk = timedelta(minutes=args.chunk_min)
    edge, rows, total = start + chunk, [], 0

    def flush() -> None:
        nonlocal rows, total
        if rows:
            (spark.createDataFrame(rows, SILVER_SCHEMA).write.format("delta").mode("append")
             .save(str(cfg.paths.table(tables.SILVER_READINGS))))
            total += len(rows)
        rows = []
        q = start_alerts(spark, cfg, trigger={"availableNow": True})
        q.awaitTermination()
        progress = [p for p in q.recentProgress if p.get("stateOperators")]
        op = progress[-1]["stateOperators"][0] if progress else {}
        print(json.dumps({"event_time_upto": edge.isoformat(), "readings": total,
                          "state_rows": op.get("numRowsTotal"),
                          "state_memory_bytes": op.get("memoryUsedBytes"),
                          "custom": {k: v for k, v in (op.get("customMetrics") or {}).items()
                                     if "Sst" in k or "num" in k.lower()},
                          "batch_ms": progress[-1]["durationMs"].get("triggerExecution")
                          if progress else None}), flush=True)

    for msg in generate_messages(spec):
        d = json.loads(msg.value)
        t = datetime.fromisoformat(d["timestamp"].replace("Z", "+00:00"))
        while t >= edge:
            flush()
            edge += chunk
        rec = {"sensor_id": d["sensor_id"], "event_time": t,
               "temperature": float(d["temperature"]), "humidity": float(d["humidity"]),
               "pressure": float(d["pressure"]), "location": d.get("location")}
        rows.append(tuple(rec.get(n) for n in names))
    flush()
    spark.stop()


if __name__ == "__main__":
    main()
