"""`lakehouse bench`'s measurement functions on a tiny backlog (real broker, real Spark).

No timing is asserted: only that each measurement counts exactly what was produced and that
the report holds the figures.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from jobs import bench
from jobs.config import Config
from jobs.topics import create_topics

PERF_OUTPUT = """\
start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, \
rebalance.time.ms, fetch.time.ms, fetch.MB.sec, fetch.nMsg.sec
2025-01-01 00:00:00:000, 2025-01-01 00:00:02:000, 19.0735, 9.5367, 100000, 50000.0000, \
500, 1500, 12.7157, 66666.6667
"""


def test_parse_consumer_perf() -> None:
    stats = bench.parse_consumer_perf("WARN something, else\n" + PERF_OUTPUT)
    assert stats["data.consumed.in.nMsg"] == 100_000
    assert stats["nMsg.sec"] == 50_000.0
    assert stats["fetch.nMsg.sec"] == 66_666.6667


def test_chain_rates_add_layer_times() -> None:
    layers = [{"layer": "bronze", "seconds": 2.0}, {"layer": "silver", "seconds": 3.0}]
    assert bench.chain_rates(layers, 1000) == {"bronze": 500.0, "bronze+silver": 200.0}


def test_measurements_on_a_tiny_backlog(kafka_cfg: Config, spark, tmp_path: Path) -> None:  # noqa: ANN001
    opts = replace(bench.QUICK, messages=3000, sensors=50, rates=(200.0,), rate_duration_s=5.0,
                   latency_layers=("bronze", "silver"))
    cfg = kafka_cfg.with_overrides({
        "paths.data_dir": str(tmp_path),
        "paths.lakehouse_root": str(tmp_path / "lake-throughput"),
        "kafka.topic_in": "bench-test",
        "streaming.max_offsets_per_trigger": 500_000,
    })
    create_topics(cfg, {"bench-test": 3})
    pids = {"jvm": bench._pids(spark, cfg)["jvm"], "driver": bench._pids(spark, cfg)["driver"]}

    backlog = bench.produce_backlog(cfg, opts)
    assert backlog["messages"] == 3000
    perf = bench.consumer_perf(cfg, 3000)
    assert perf["data.consumed.in.nMsg"] == 3000
    noop = bench.spark_noop_read(spark, cfg)
    assert noop["rows"] == 3000

    layers = bench.layer_throughput(spark, cfg, 3000, ("bronze", "silver"), pids=pids)
    assert [x["layer"] for x in layers] == ["bronze", "silver"]
    assert layers[0]["queries"] == {"bronze": 3000}
    assert spark.read.format("delta").load(str(cfg.paths.table("silver/sensor_readings"))
                                           ).count() == 3000
    assert layers[0]["cost"]["jvm_peak_rss_mb"] > 0
    assert layers[0]["cost"]["files_written"] > 0

    lat = bench.latency_run(spark, cfg, opts, 200.0, pids)
    assert lat["produced"] > 0
    assert lat["silver"]["n"] == lat["produced"]  # every reading of the run reached silver
    assert lat["silver"]["p50"] > 0
    assert lat["final_lag"] == 0
    assert "bronze" in lat["batches"] and "silver" in lat["batches"]

    results = {"options": {"messages": 3000, "sensors": 50}, "started": "t0", "cpus": 2,
               "spark_master": cfg.spark.master, "trigger_interval": "1 second",
               "backlog": backlog, "consumer_perf": perf, "spark_noop": noop,
               "layers": layers, "chains": bench.chain_rates(layers, 3000), "latency": [lat],
               "peak": {"jvm": 1.0}}
    report = bench.write_report(results, tmp_path / "report")
    text = report.read_text()
    assert "throughput bronze+silver" in text
    assert f"(n {lat['silver']['n']:,})" in text
    assert (tmp_path / "report" / "lag_over_time.png").stat().st_size > 0
    assert (tmp_path / "report" / "results.json").exists()
