"""`lakehouse bench`'s measurement functions on a tiny backlog (real broker, real Spark).

No timing is asserted: only that each measurement counts exactly what was produced and that
the report holds the figures.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

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


def _sawtooth(rate: float, throughput: float, seconds: int, batch_s: int = 20) -> list:
    """Lag sampled each second: input piles up during a batch, the batch's rows drop off at
    its commit; a pipeline slower than the input keeps (rate - throughput) x t of it."""
    points, lag = [], 0.0
    for t in range(seconds):
        lag += rate
        if t % batch_s == batch_s - 1:
            lag -= min(lag, throughput * batch_s)
        points.append((float(t), lag))
    return points


def test_a_long_run_reports_batch_durations_period_by_period() -> None:
    # A batch every 10 s for 8 h (and a drain after it); bronze's batches slow down from
    # 1 s to 1.5 s over the run, gold's stay at 3 s.
    batches = [{"name": "bronze", "rows": 10, "ms": 1000 + t * 500 // 28_800, "t": float(t)}
               for t in range(0, 29_000, 10)]
    batches += [{"name": "gold", "rows": 5, "ms": 3000, "t": float(t)}
                for t in range(0, 28_800, 30)]
    stats = bench.batch_stats(batches, run_s=28_800.0)
    assert stats["bronze"]["period_s"] == 3600.0
    p = stats["bronze"]["periods"]
    assert len(p) == 8 and p == sorted(p) and p[0] < 1.1 and 1.4 < p[-1] < 1.5
    assert stats["gold"]["periods"] == [3.0] * 8
    assert stats["bronze"]["batches"] == 2900  # the overall figures keep the drain
    table = "\n".join(bench.period_table(stats))
    assert "by period of 60 min" in table and "| gold | 3.00 |" in table
    assert f"| {p[-1] / p[0]:.2f} |" in table
    assert stats["gold"]["rows_periods"] == [5.0] * 8
    assert "| gold | 5 | 5 | 5 | 5 | 5 | 5 | 5 | 5 |" in table


def test_a_short_run_or_a_missing_period_is_reported_as_such() -> None:
    batches = [{"name": "bronze", "rows": 1, "ms": 2000, "t": float(t)} for t in range(0, 60)]
    assert "periods" not in bench.batch_stats(batches, run_s=180.0)["bronze"]
    assert bench.period_table(bench.batch_stats(batches, run_s=180.0)) == []
    late = [{"name": "gold", "rows": 1, "ms": 2000, "t": 1500.0},  # nothing before minute 25
            {"name": "gold", "rows": 1, "ms": 9000, "t": 2500.0}]  # the drain, after the run
    stats = bench.batch_stats(late, run_s=2400.0)
    assert stats["gold"]["periods"] == [None, None, 2.0, None]
    assert "| gold | – | – | 2.00 | – | - |" in "\n".join(bench.period_table(stats))


def test_lag_verdict_holds_for_a_pipeline_that_keeps_up() -> None:
    v = bench.lag_verdict(_sawtooth(1000, 1200, 420), 1000, start_s=120, window_s=300)
    assert v.bounded
    assert v.samples == 300
    assert abs(v.thirds[2] - v.thirds[0]) < 2000  # the saw-tooth averages out


def test_lag_verdict_grows_for_a_pipeline_a_tenth_too_slow() -> None:
    v = bench.lag_verdict(_sawtooth(1000, 900, 420), 1000, start_s=120, window_s=300)
    assert not v.bounded
    assert 80 < v.slope_per_s < 120  # it falls behind by about 100 messages/s
    assert v.thirds[0] < v.thirds[1] < v.thirds[2]


def test_lag_verdict_refuses_a_window_it_has_no_samples_for() -> None:
    with pytest.raises(ValueError, match="do not cover"):
        bench.lag_verdict(_sawtooth(1000, 1200, 200), 1000, start_s=120, window_s=300)


def test_next_rate_doubles_halves_then_bisects() -> None:
    assert bench.next_rate({1000.0: True}) == 2000.0
    assert bench.next_rate({1000.0: False}) == 500.0
    assert bench.next_rate({1000.0: False, 500.0: False}) == 250.0
    assert bench.next_rate({1000.0: False, 500.0: True}) == 710.0  # ~sqrt(500 x 1000)
    assert bench.next_rate({1000.0: False, 500.0: True, 710.0: True}) == 840.0
    assert bench.next_rate({1000.0: False, 900.0: True}) is None  # within 20 %: done


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
    assert "bronze" in lat["batches"] and "silver" not in lat["batches"]  # one query, both

    trial = bench.sustain_trial(spark, cfg, replace(opts, sustain_warmup_s=4.0,
                                                    sustain_window_s=9.0), 200.0, pids)
    assert trial["produced"] > 0
    assert trial["samples"] >= 6  # about one a second over the window
    lags = [lag for _, lag in trial["lag"]]
    assert all(0 <= lag <= trial["produced"] for lag in lags)  # never more than was produced
    assert "bronze" in trial["batches"]

    results = {"options": {"messages": 3000, "sensors": 50}, "started": "t0", "cpus": 2,
               "spark_master": cfg.spark.master, "trigger_interval": "1 second",
               "backlog": backlog, "consumer_perf": perf, "spark_noop": noop,
               "layers": layers, "chains": bench.chain_rates(layers, 3000), "latency": [lat],
               "peak": {"jvm": 1.0},
               "sustain": {"window_s": 9.0, "warmup_s": 4.0, "trials": [trial],
                           "sustainable": 200.0 if trial["bounded"] else None,
                           "not_sustainable": None if trial["bounded"] else 200.0}}
    report = bench.write_report(results, tmp_path / "report")
    text = report.read_text()
    assert "throughput bronze+silver" in text
    assert f"(n {lat['silver']['n']:,})" in text
    assert "## Sustainable rate" in text
    assert "sustainable rate (lag of every query bounded for 9 s after 4 s of warm-up)" in text
    assert (tmp_path / "report" / "lag_over_time.png").stat().st_size > 0
    assert (tmp_path / "report" / "sustain_lag.png").stat().st_size > 0
    assert (tmp_path / "report" / "results.json").exists()
