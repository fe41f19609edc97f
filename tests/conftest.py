"""Shared fixtures: one real Kafka broker and one SparkSession per test run.

The broker is the real Apache Kafka (KRaft) from the Maven-resolved jars, on free ports, with
its storage in a temporary folder; the SparkSession is local[8] with the UI off (Real-Time
Mode holds a task slot per input partition).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs import broker
from jobs.config import Config, load_config
from jobs.logs import configure_logging

# PySpark turns timestamps into naive datetimes in the process time zone: pin it to UTC so that
# tests compare against fixed UTC datetimes whatever the machine's zone.
os.environ["TZ"] = "UTC"
time.tzset()


@pytest.fixture(scope="session")
def base_cfg(tmp_path_factory: pytest.TempPathFactory) -> Config:
    data = tmp_path_factory.mktemp("lakehouse-data")
    cfg = load_config(
        env={},
        overrides={
            "paths.data_dir": str(data),
            "kafka.bootstrap": f"127.0.0.1:{broker.free_port_pair()}",
            "spark.master": "local[8]",
            "spark.shuffle_partitions": 2,
            "spark.ui_enabled": False,
            "spark.driver_memory": "1g",
            "streaming.trigger_interval": "1 second",
        },
    )
    configure_logging("INFO")
    return cfg


@pytest.fixture(scope="session")
def kafka_cfg(base_cfg: Config) -> Iterator[Config]:
    """The base config with the suite's own broker running on it."""
    broker.start(base_cfg)
    try:
        yield base_cfg
    finally:
        broker.stop(base_cfg)


@pytest.fixture(scope="session")
def spark(base_cfg: Config):  # noqa: ANN201 - SparkSession import is deferred on purpose
    from jobs.spark import build_spark

    session = build_spark(base_cfg)
    try:
        yield session
    finally:
        session.stop()


@pytest.fixture()
def table_dir(tmp_path: Path) -> Path:
    return tmp_path / "tables"


@pytest.fixture(scope="session")
def sample_lake(base_cfg: Config, spark, tmp_path_factory: pytest.TempPathFactory) -> Config:  # noqa: ANN001
    """Config whose lakehouse holds the small fixed tables of tests/serving_samples.py."""
    from serving_samples import write_sample_tables

    root = tmp_path_factory.mktemp("sample-lakehouse")
    write_sample_tables(spark, root)
    return base_cfg.with_overrides({"paths.lakehouse_root": str(root)})
