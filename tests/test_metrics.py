"""gold/pipeline_metrics: the progress-to-row mapping, the listener on a real streaming query,
and the JSON-lines log file."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from jobs import metrics
from jobs.config import Config
from jobs.logs import configure_logging
from jobs.streaming import (
    PRODUCE_MAX_MS,
    PRODUCE_MIN_MS,
    PRODUCE_OBSERVATION,
    PRODUCE_ROWS,
    observe_produce_time,
)
from jobs.tables import PIPELINE_METRICS

# 14:30:05.000 + triggerExecution 1.5 s: the batch committed at 14:30:06.500. Its records were
# produced from 14:29:58.250 to 14:30:04.000 (Kafka timestamps, as epoch ms in the observation)
# and its newest event time is 14:30:00.
PROGRESS = {
    "id": "6c1d0c42-0000-4000-8000-000000000001",
    "name": "alerts",
    "timestamp": "2024-01-10T14:30:05.000Z",
    "batchId": 7,
    "batchDuration": 1502,
    "durationMs": {"addBatch": 1200, "walCommit": 40, "triggerExecution": 1500},
    "numInputRows": 120,
    "inputRowsPerSecond": 24.0,
    "processedRowsPerSecond": 80.0,
    "eventTime": {"max": "2024-01-10T14:30:00.000Z", "watermark": "2024-01-10T14:20:00.000Z"},
    "stateOperators": [
        {"numRowsTotal": 40, "numRowsDroppedByWatermark": 3},
        {"numRowsTotal": 2, "numRowsDroppedByWatermark": 1},
    ],
    "observedMetrics": {
        PRODUCE_OBSERVATION: {PRODUCE_MIN_MS: 1_704_896_998_250,  # 14:29:58.250
                              PRODUCE_MAX_MS: 1_704_897_004_000,  # 14:30:04.000
                              PRODUCE_ROWS: 120},
    },
}



def _run_recorded(spark, cfg: Config, start: Callable[[], Any]) -> list[dict]:
    """Run the query ``start`` starts to its end with the metrics recorder on; its progress."""
    recorder = metrics.start_recording(spark, cfg)
    query = None
    try:
        query = start()
        query.awaitTermination()
        return [json.loads(p.json) for p in query.recentProgress]
    finally:
        if query is not None and query.isActive:
            query.stop()
        recorder.stop()

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
        "batch_duration_ms": 1502,
        "rows_dropped_late": 4,
        "state_rows": 42,
        "watermark": datetime(2024, 1, 10, 14, 20, tzinfo=UTC),
        "produce_to_commit_ms": 8250.0,      # 14:30:06.500 - 14:29:58.250 (oldest record)
        "produce_to_commit_min_ms": 2500.0,  # 14:30:06.500 - 14:30:04.000 (newest record)
        "data_age_ms": 6500.0,               # 14:30:06.500 - 14:30:00 (newest event time)
    }


def test_latency_is_from_produce_time_whatever_the_event_time() -> None:
    # The default demo's case: readings stamped 60 days back, produced a second ago. Data age
    # is 60 days; the pipeline's own latency is what it took since the record was produced.
    old = {**PROGRESS, "eventTime": {"max": "2023-11-11T14:30:06.500Z",
                                     "watermark": "2023-11-11T14:20:00.000Z"},
           "observedMetrics": {PRODUCE_OBSERVATION: {
               PRODUCE_MIN_MS: 1_704_897_005_500, PRODUCE_MAX_MS: 1_704_897_006_000,
               PRODUCE_ROWS: 3}}}  # 14:30:05.500, 14:30:06.000
    rec = metrics.progress_record(old)
    assert (rec["produce_to_commit_ms"], rec["produce_to_commit_min_ms"]) == (1000.0, 500.0)
    assert rec["data_age_ms"] == 60 * 86_400_000.0


def test_progress_record_without_observation_event_time_or_rates() -> None:
    bare = {k: v for k, v in PROGRESS.items()
            if k not in {"eventTime", "processedRowsPerSecond", "stateOperators",
                         "observedMetrics"}}
    rec = metrics.progress_record({**bare, "inputRowsPerSecond": float("nan")})
    assert rec["produce_to_commit_ms"] is None and rec["produce_to_commit_min_ms"] is None
    assert rec["data_age_ms"] is None
    assert rec["watermark"] is None
    assert rec["input_rows_per_second"] is None
    assert rec["processed_rows_per_second"] is None
    assert (rec["rows_dropped_late"], rec["state_rows"]) == (0, 0)


def test_a_batch_without_kafka_timestamps_has_no_produce_latency() -> None:
    # A no-data batch (watermark advance) or a file/socket source: Spark reports the
    # observation with null min and max.
    empty = {**PROGRESS, "numInputRows": 0, "observedMetrics": {PRODUCE_OBSERVATION: {
        PRODUCE_MIN_MS: None, PRODUCE_MAX_MS: None, PRODUCE_ROWS: 0}}}
    rec = metrics.progress_record(empty)
    assert rec["produce_to_commit_ms"] is None and rec["produce_to_commit_min_ms"] is None


def test_commit_time_falls_back_to_batch_duration() -> None:
    # Progress JSON without durationMs (older Spark samples): batchDuration is the same span.
    rec = metrics.progress_record({k: v for k, v in PROGRESS.items() if k != "durationMs"})
    assert rec["produce_to_commit_ms"] == 8252.0  # committed 14:30:06.502


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
    # Each row carries its produce time (kafka_timestamp), half a second apart in the first.
    produced = [datetime(2024, 1, 10, 12, 30, tzinfo=UTC) + timedelta(milliseconds=500 * i)
                for i in range(8)]

    def line(k: str, ts: str, at: datetime) -> str:
        return json.dumps({"k": k, "ts": ts, "kafka_timestamp": at.isoformat()}) + "\n"

    (src / "a.json").write_text("".join(
        line(f"s{i % 2}", f"2024-01-10T12:0{i}:00Z", produced[i]) for i in range(6)))
    (src / "b.json").write_text(line("s0", "2024-01-10T12:09:00Z", produced[6]))
    (src / "c.json").write_text(line("s1", "2024-01-10T11:00:00Z", produced[7]))
    # per data batch: (oldest produce, newest produce, newest event time, rows)
    expected_batches = [
        (produced[0], produced[5], datetime(2024, 1, 10, 12, 5, tzinfo=UTC), 6),
        (produced[6], produced[6], datetime(2024, 1, 10, 12, 9, tzinfo=UTC), 1),
        (produced[7], produced[7], datetime(2024, 1, 10, 11, 0, tzinfo=UTC), 1),
    ]
    stream = (observe_produce_time(
                spark.readStream.schema("k STRING, ts TIMESTAMP, kafka_timestamp TIMESTAMP")
                .option("maxFilesPerTrigger", 1).json(str(src)))
              .withWatermark("ts", "1 minute")
              .groupBy("k", F.window("ts", "5 minutes")).count())
    progress = _run_recorded(spark, cfg, lambda: (
        stream.writeStream.format("noop").outputMode("update").queryName("metrics_test")
        .option("checkpointLocation", str(tmp_path / "cp")).trigger(availableNow=True).start()))

    assert converted == [], "progress events reached the listener through Java exceptions"
    table = spark.read.format("delta").load(str(cfg.paths.table(PIPELINE_METRICS)))
    assert [(f.name, f.dataType.simpleString()) for f in table.schema.fields] == [
        ("query_name", "string"), ("batch_id", "bigint"), ("batch_time", "timestamp"),
        ("input_rows", "bigint"), ("input_rows_per_second", "double"),
        ("processed_rows_per_second", "double"), ("batch_duration_ms", "bigint"),
        ("rows_dropped_late", "bigint"), ("state_rows", "bigint"), ("watermark", "timestamp"),
        ("produce_to_commit_ms", "double"), ("produce_to_commit_min_ms", "double"),
        ("data_age_ms", "double")]
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
    ms = timedelta(milliseconds=1)
    for r, p, (oldest, newest, max_event, n) in zip(rows[:3], progress[:3], expected_batches,
                                                    strict=True):
        # Spark observed exactly the produce times the batch's rows carry...
        assert p["observedMetrics"][PRODUCE_OBSERVATION] == {
            PRODUCE_MIN_MS: oldest.timestamp() * 1000, PRODUCE_MAX_MS: newest.timestamp() * 1000,
            PRODUCE_ROWS: n}
        # ...and the row measures each from the batch's commit: trigger start + its duration.
        committed = (datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00"))
                     + p["durationMs"]["triggerExecution"] * ms)
        assert r.produce_to_commit_ms == (committed - oldest) / ms
        assert r.produce_to_commit_min_ms == (committed - newest) / ms
        assert r.data_age_ms == (committed - max_event) / ms
        assert 0 < r.produce_to_commit_min_ms <= r.produce_to_commit_ms


@pytest.mark.spark
def test_an_old_metrics_table_gains_produce_latency_from_a_delta_stream(
        spark, base_cfg: Config, tmp_path: Path) -> None:  # noqa: ANN001
    """A lake whose gold/pipeline_metrics has the first layout, read by a long-lived DuckDB
    connection (a running dashboard) while a Delta-to-foreachBatch query, observed, appends."""
    from delta.tables import DeltaTable
    from serving_samples import LEGACY_METRICS_DDL

    from jobs import serving

    cfg = base_cfg.with_overrides({"paths.lakehouse_root": str(tmp_path / "lake"),
                                   "streaming.metrics_flush_s": 0.5})
    table = cfg.paths.table(PIPELINE_METRICS)
    old_row = ("silver", 0, datetime(2024, 1, 10, 14, tzinfo=UTC), 10, 1.0, 2.0, 1000, 5000.0,
               0, 0, None)
    spark.createDataFrame([old_row], LEGACY_METRICS_DDL).write.format("delta").save(str(table))
    lake = serving.Lakehouse(cfg)
    assert lake.execute(f"SELECT {serving.latency_columns(lake)} FROM pipeline_metrics").rows \
        == [(None, None, 5000.0)]

    # Two commits of rows with known produce times -> two batches; the sink MERGEs (as gold
    # and silver do), so the batch is read by a plan Spark builds inside foreachBatch.
    t0 = datetime(2024, 1, 10, 15, tzinfo=UTC)
    src, out = tmp_path / "src", tmp_path / "out"
    commits = [[t0, t0 + timedelta(seconds=2)], [t0 + timedelta(seconds=5)]]
    for i, times in enumerate(commits):
        spark.createDataFrame([(f"k{i}{j}", t) for j, t in enumerate(times)],
                              "k STRING, kafka_timestamp TIMESTAMP").coalesce(1).write.format(
            "delta").mode("append").save(str(src))
    spark.createDataFrame([], "k STRING, kafka_timestamp TIMESTAMP").write.format(
        "delta").save(str(out))

    def merge(batch, _batch_id: int) -> None:  # noqa: ANN001
        (DeltaTable.forPath(spark, str(out)).alias("t").merge(batch.alias("s"), "t.k = s.k")
         .whenNotMatchedInsertAll().execute())

    stream = observe_produce_time(spark.readStream.format("delta")
                                  .option("maxFilesPerTrigger", 1).load(str(src)))
    progress = _run_recorded(spark, cfg, lambda: (
        stream.writeStream.foreachBatch(merge).queryName("observed_merge")
        .option("checkpointLocation", str(tmp_path / "cp")).trigger(availableNow=True).start()))

    assert [p["numInputRows"] for p in progress] == [2, 1]
    ms = timedelta(milliseconds=1)
    expected = []
    for p, times in zip(progress, commits, strict=True):
        committed = (datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00"))
                     + p["durationMs"]["triggerExecution"] * ms)
        expected.append(("observed_merge", p["batchId"], (committed - min(times)) / ms,
                         (committed - max(times)) / ms, None))
    # Spark's side: the old columns stay, the new ones are appended; the old row unchanged.
    evolved = spark.read.format("delta").load(str(table))
    assert [f.name for f in evolved.schema.fields] == [
        *(c.split()[0] for c in LEGACY_METRICS_DDL.split(", ")),
        "produce_to_commit_ms", "produce_to_commit_min_ms", "data_age_ms"]
    # DuckDB's side, through the connection opened before the table changed layout.
    got = lake.execute(f"SELECT query_name, batch_id, {serving.latency_columns(lake)}"
                       " FROM pipeline_metrics ORDER BY batch_time, query_name").rows
    assert got == [("silver", 0, None, None, 5000.0), *expected]
    assert all(row[2] >= row[3] > 0 for row in expected)


@pytest.mark.spark
def test_the_recorder_compacts_its_table_every_n_flushes(spark, tmp_path: Path) -> None:  # noqa: ANN001
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    table = tmp_path / "pipeline_metrics"
    recorder = metrics.MetricsRecorder(spark, table, flush_s=3600.0, compact_every=3,
                                       compact_below_mb=16.0)
    for batch in range(7):  # one file a flush
        recorder.add(metrics.progress_record({**PROGRESS, "batchId": batch}))
        assert recorder.flush() == 1
    rows = spark.read.format("delta").load(str(table))
    assert sorted(r.batch_id for r in rows.collect()) == list(range(7))
    # Flush 3 compacted three files into one, flush 6 that one and three more; the 7th is new.
    assert rows.select(F.input_file_name()).distinct().count() == 2
    history = DeltaTable.forPath(spark, str(table)).history().collect()
    assert sorted(r.operation for r in history).count("OPTIMIZE") == 2
    # Compaction's file-size setting went to the recorder's own session, not the caller's.
    assert spark.conf.get("spark.databricks.delta.optimize.minFileSize", None) != str(16 * 2**20)
