"""gold/pipeline_metrics: the progress-to-row mapping, the listener on a real streaming query,
and the JSON-lines log file."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest

from jobs import metrics
from jobs.config import Config
from jobs.logs import configure_logging
from jobs.tables import PIPELINE_METRICS

PROGRESS = {
    "id": "6c1d0c42-0000-4000-8000-000000000001",
    "name": "alerts",
    "timestamp": "2024-01-10T14:30:05.000Z",
    "batchId": 7,
    "batchDuration": 1500,
    "numInputRows": 120,
    "inputRowsPerSecond": 24.0,
    "processedRowsPerSecond": 80.0,
    "eventTime": {"max": "2024-01-10T14:30:00.000Z", "watermark": "2024-01-10T14:20:00.000Z"},
    "stateOperators": [
        {"numRowsTotal": 40, "numRowsDroppedByWatermark": 3},
        {"numRowsTotal": 2, "numRowsDroppedByWatermark": 1},
    ],
}


def test_progress_record_maps_every_column() -> None:
    rec = metrics.progress_record(PROGRESS)
    assert tuple(rec) == metrics.COLUMNS
    assert rec == {
        "query_name": "alerts",
        "batch_id": 7,
        "batch_time": datetime(2024, 1, 10, 14, 30, 5, tzinfo=UTC),
        "input_rows": 120,
        "input_rows_per_second": 24.0,
        "processed_rows_per_second": 80.0,
        "batch_duration_ms": 1500,
        # committed at 14:30:06.5, newest event 14:30:00
        "event_to_commit_latency_ms": 6500.0,
        "rows_dropped_late": 4,
        "state_rows": 42,
        "watermark": datetime(2024, 1, 10, 14, 20, tzinfo=UTC),
    }


def test_progress_record_without_event_time_or_rates() -> None:
    bare = {k: v for k, v in PROGRESS.items()
            if k not in {"eventTime", "processedRowsPerSecond", "stateOperators"}}
    rec = metrics.progress_record({**bare, "inputRowsPerSecond": float("nan")})
    assert rec["event_to_commit_latency_ms"] is None
    assert rec["watermark"] is None
    assert rec["input_rows_per_second"] is None
    assert rec["processed_rows_per_second"] is None
    assert (rec["rows_dropped_late"], rec["state_rows"]) == (0, 0)


def test_log_file_is_json_lines(tmp_path: Path) -> None:
    log_file = tmp_path / "logs" / "x.log"
    configure_logging("INFO", log_file)
    try:
        logging.getLogger("jobs.test").info("batch %d done", 3)
        try:
            raise ValueError("boom")
        except ValueError:
            logging.getLogger("jobs.test").exception("failed")
        for h in logging.getLogger().handlers:
            h.flush()
        lines = [json.loads(x) for x in log_file.read_text().splitlines()]
    finally:
        configure_logging("INFO")
    assert [(r["level"], r["logger"], r["message"]) for r in lines] == [
        ("INFO", "jobs.test", "batch 3 done"), ("ERROR", "jobs.test", "failed")]
    assert "ValueError: boom" in lines[1]["exc_info"]
    assert datetime.fromisoformat(lines[0]["time"]).tzinfo is not None


@pytest.mark.spark
def test_listener_records_every_micro_batch(spark, base_cfg: Config, tmp_path: Path,  # noqa: ANN001
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import pyspark.errors.exceptions.captured as captured
    from pyspark.sql import functions as F

    # Java exceptions PySpark converts while the query runs: PySpark's own listener bridge
    # raised several per progress event (each py4j iteration over a Java map ends in one).
    converted: list[str] = []
    convert = captured.convert_exception

    def counting(e):  # noqa: ANN001, ANN202
        converted.append(str(e).splitlines()[0])
        return convert(e)

    monkeypatch.setattr(captured, "convert_exception", counting)

    cfg = base_cfg.with_overrides({"paths.lakehouse_root": str(tmp_path / "lake"),
                                   "streaming.metrics_flush_s": 0.5})
    src = tmp_path / "in"
    src.mkdir()
    # Three files -> three data batches; the third holds one reading far behind the watermark
    # (late rows are judged against the previous batch's watermark, hence not the second file).
    (src / "a.json").write_text("".join(
        json.dumps({"k": f"s{i % 2}", "ts": f"2024-01-10T12:0{i}:00Z"}) + "\n" for i in range(6)))
    (src / "b.json").write_text(json.dumps({"k": "s0", "ts": "2024-01-10T12:09:00Z"}) + "\n")
    (src / "c.json").write_text(json.dumps({"k": "s1", "ts": "2024-01-10T11:00:00Z"}) + "\n")
    stream = (spark.readStream.schema("k STRING, ts TIMESTAMP").option("maxFilesPerTrigger", 1)
              .json(str(src))
              .withWatermark("ts", "1 minute")
              .groupBy("k", F.window("ts", "5 minutes")).count())
    recorder = metrics.start_recording(spark, cfg)
    query = None
    try:
        query = (stream.writeStream.format("noop").outputMode("update").queryName("metrics_test")
                 .option("checkpointLocation", str(tmp_path / "cp"))
                 .trigger(availableNow=True).start())
        query.awaitTermination()
        progress = query.recentProgress
    finally:
        if query is not None and query.isActive:
            query.stop()
        recorder.stop()

    assert converted == [], "progress events reached the listener through Java exceptions"
    table = spark.read.format("delta").load(str(cfg.paths.table(PIPELINE_METRICS)))
    assert [(f.name, f.dataType.simpleString()) for f in table.schema.fields] == [
        ("query_name", "string"), ("batch_id", "bigint"), ("batch_time", "timestamp"),
        ("input_rows", "bigint"), ("input_rows_per_second", "double"),
        ("processed_rows_per_second", "double"), ("batch_duration_ms", "bigint"),
        ("event_to_commit_latency_ms", "double"), ("rows_dropped_late", "bigint"),
        ("state_rows", "bigint"), ("watermark", "timestamp")]
    rows = sorted(table.collect(), key=lambda r: r.batch_id)
    # one row per progress event the query reported, none twice across background flushes
    assert [r.batch_id for r in rows] == [p["batchId"] for p in progress]
    assert {r.query_name for r in rows} == {"metrics_test"}
    assert sum(r.input_rows for r in rows) == 8
    assert [r.input_rows for r in rows[:3]] == [6, 1, 1]
    assert [r.rows_dropped_late for r in rows[:3]] == [0, 0, 1]
    assert rows[1].state_rows > 0
    # Spark gives naive datetimes in the session zone (UTC in the suite)
    assert [r.watermark for r in rows[:3]] == [
        datetime(1970, 1, 1), datetime(2024, 1, 10, 12, 4),  # noqa: DTZ001
        datetime(2024, 1, 10, 12, 8)]  # noqa: DTZ001
    for r in rows[:3]:
        expected = metrics.progress_record(json.loads(
            next(p for p in progress if p["batchId"] == r.batch_id).json))
        assert r.event_to_commit_latency_ms == pytest.approx(
            expected["event_to_commit_latency_ms"])
        assert r.event_to_commit_latency_ms > 0
        assert r.batch_duration_ms == expected["batch_duration_ms"]
