"""The sensor registry: the generator's CSV loaded as a Delta dimension table for silver."""

from __future__ import annotations

import logging
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from jobs.config import Config
from jobs.streaming import table_exists
from jobs.tables import SENSOR_REGISTRY
from silver.schema import REGISTRY_SCHEMA

logger = logging.getLogger(__name__)


def registry_csv(cfg: Config) -> Path:
    return cfg.paths.data_dir / "registry" / "sensors.csv"


def sync_registry(spark: SparkSession, cfg: Config) -> bool:
    """Overwrite the registry table from the CSV when the CSV exists; True if loaded."""
    csv = registry_csv(cfg)
    if not csv.exists():
        logger.info("no sensor registry at %s: silver runs without enrichment", csv)
        return False
    df = spark.read.csv(str(csv), header=True, schema=REGISTRY_SCHEMA, mode="FAILFAST")
    df.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(
        str(cfg.paths.table(SENSOR_REGISTRY))
    )
    logger.info("sensor registry loaded from %s", csv)
    return True


def read_registry(spark: SparkSession, cfg: Config) -> DataFrame | None:
    path = cfg.paths.table(SENSOR_REGISTRY)
    return spark.read.format("delta").load(str(path)) if table_exists(spark, path) else None
