"""Kafka taken away mid-stream: the generator and the pipeline carry on by themselves."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs import broker
from jobs.chaos import run_broker_loss, scratch_config
from jobs.config import Config

pytestmark = pytest.mark.timeout(900)


def test_broker_killed_mid_stream_loses_and_doubles_nothing(spark, kafka_cfg: Config,
                                                            tmp_path: Path) -> None:
    cfg = scratch_config(kafka_cfg, tmp_path / "loss", broker.free_port_pair()).with_overrides(
        {"streaming.max_offsets_per_trigger": 1500})
    broker.start(cfg)
    try:
        report = run_broker_loss(cfg, messages=4000, sensors=40, seed=5, rate=100.0,
                                 lead_s=10.0, outage_s=25.0, hard=True, spark=spark)
    finally:
        broker.stop(cfg)
    assert report.ok, report.describe()
    assert report.counts["bronze"] == 4000
    assert report.counts["alerts"] > 0, "the scenario must raise alerts to check them"
