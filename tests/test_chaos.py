"""A short crash loop: the real pipeline SIGKILLed twice mid-stream, then verified."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.chaos import run_chaos, scratch_config
from jobs.config import Config

pytestmark = pytest.mark.timeout(900)


def test_crash_loop_loses_and_doubles_nothing(spark, kafka_cfg: Config, tmp_path: Path) -> None:
    cfg = scratch_config(kafka_cfg, tmp_path / "chaos", kafka_cfg.kafka.port).with_overrides(
        {"kafka.topic_in": "chaos-sensors", "kafka.topic_alerts": "chaos-alerts",
         "streaming.max_offsets_per_trigger": 1500})
    report = run_chaos(cfg, messages=6000, sensors=40, kills=2, seed=3, min_s=25, max_s=45,
                       spark=spark)
    assert report.ok, report.describe()
    assert len(report.kills) == 2
    assert report.counts["bronze"] == 6000
    assert report.counts["quarantine"] > 0 and report.counts["duplicates"] > 0
    assert report.counts["alerts"] > 0, "the scenario must raise alerts to check them"
