"""The one SparkSession factory: Delta, the Kafka connector from local jars, lean on 2 cores."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from pyspark.sql import SparkSession

from jobs import jvm_archive, jvm_jar
from jobs.config import REPO_ROOT, Config

logger = logging.getLogger(__name__)

SPARK_LOG4J = REPO_ROOT / "conf" / "log4j2-spark.properties"
FAIR_POOLS = REPO_ROOT / "conf" / "fairscheduler.xml"
REQUIRED_JARS = ("spark-sql-kafka-0-10_2.13-", "delta-spark_", "kafka-clients-")


class SparkSetupError(RuntimeError):
    """Spark cannot start as configured; the message names the fix."""


def connector_jars(cfg: Config) -> list[Path]:
    """The Kafka connector and Delta jars resolved by scripts/setup.sh, checked present."""
    folder = cfg.paths.deps_dir / "spark"
    jars = sorted(folder.glob("*.jar"))
    missing = [p for p in REQUIRED_JARS if not any(j.name.startswith(p) for j in jars)]
    if missing:
        raise SparkSetupError(
            f"Spark connector jars missing in {folder} "
            f"({', '.join(m.rstrip('-_') for m in missing)}): run scripts/setup.sh"
        )
    return jars


LOCAL_LOG_STORE = "lakehouse.storage.LocalListingLogStore"
# Delta applies a session setting under this prefix to every table it creates, without it.
TABLE_DEFAULTS = "spark.databricks.delta.properties.defaults."


def table_properties(cfg: Config) -> dict[str, str]:
    """The Delta table properties (names without ``delta.``) every table of the lake holds."""
    minutes = round(cfg.maintenance.log_retention_hours * 60)
    return {"logRetentionDuration": f"interval {minutes} minutes"}


def spark_conf(cfg: Config) -> dict[str, str]:
    """Every setting build_spark applies; kept separate so it can be inspected and tested."""
    # Local jar paths (spark.jars), never spark.jars.packages: no Ivy download at run time.
    # The project's own classes are built from the repository's sources (jobs.jvm_jar).
    try:
        own = jvm_jar.ensure_jar(cfg)
    except jvm_jar.JarBuildError as e:
        raise SparkSetupError(str(e)) from e
    jars = ",".join(str(j) for j in (*connector_jars(cfg), own))
    java_opts = f"-Dlog4j2.configurationFile={SPARK_LOG4J.as_uri()}"
    # Local mode: the driver JVM is the executor too, so only it takes the class archive.
    driver_opts = " ".join([java_opts, *jvm_archive.java_options(cfg)])
    conf = {
        "spark.jars": jars,
        "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
        "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
        # Delta's log store for file: paths, whose listing of a `_delta_log` stats only the
        # files from the last checkpoint on (jobs/jvm/LocalListingLogStore.java): Hadoop's
        # stats every file of the folder, which made each snapshot update grow with history.
        "spark.delta.logStore.file.impl": LOCAL_LOG_STORE,
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.default.parallelism": str(max(2, cfg.spark.shuffle_partitions)),
        "spark.driver.memory": cfg.spark.driver_memory,
        "spark.driver.extraJavaOptions": driver_opts,
        "spark.executor.extraJavaOptions": java_opts,
        "spark.ui.enabled": str(cfg.spark.ui_enabled).lower(),
        "spark.ui.killEnabled": "false",
        "spark.driver.bindAddress": cfg.spark.bind_address,
        "spark.driver.host": cfg.spark.bind_address,
        "spark.ui.showConsoleProgress": "false",
        # Queries share two cores: pools (conf/fairscheduler.xml) put the alert path first.
        "spark.scheduler.mode": "FAIR",
        "spark.scheduler.allocation.file": str(FAIR_POOLS),
        "spark.sql.streaming.stateStore.providerClass": (
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider"
        ),
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        # Small tables, 2 cores: Delta's default of 50 snapshot partitions only adds tasks.
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.databricks.delta.autoCompact.enabled": "false",
        # Properties every table gets at creation (Delta's session defaults);
        # jobs.streaming.ensure_table sets them on a table created before they changed.
        **{TABLE_DEFAULTS + key: value for key, value in table_properties(cfg).items()},
        "spark.sql.adaptive.enabled": "true",
        # Generated code is cached by its source; the six queries and Delta's own plans hold
        # several hundred distinct classes, and Spark's default of 100 entries made every
        # micro-batch compile most of its code again (1,406 Janino compilations in 90 s of
        # the demo, 199 with this), each class then JIT-compiled anew.
        "spark.sql.codegen.cache.maxEntries": "2000",
        # Frees the blocks of each silver micro-batch's localCheckpoint soon after the batch.
        "spark.cleaner.periodicGC.interval": "5min",
        "spark.sql.warehouse.dir": str((cfg.paths.data_dir / "spark-warehouse").resolve()),
    }
    conf.update(cfg.spark.extra)
    return conf


def build_spark(cfg: Config, *, extra_java_options: Sequence[str] = ()) -> SparkSession:
    """Create (or return the running) SparkSession configured for this pipeline."""
    conf = spark_conf(cfg)
    if extra_java_options:
        conf["spark.driver.extraJavaOptions"] += " " + " ".join(extra_java_options)
    # PySpark starts its JVM with this Python's workers; pin them to the same interpreter.
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    # The UI binds to SPARK_LOCAL_IP (else every interface); the JVM inherits it from here.
    os.environ["SPARK_LOCAL_IP"] = cfg.spark.bind_address
    if not ipaddress.ip_address(cfg.spark.bind_address).is_loopback:
        logger.warning("Spark binds %s, not loopback: its RPC, block manager and UI are "
                       "reachable from the network (spark.bind_address)", cfg.spark.bind_address)
    builder = SparkSession.builder.master(cfg.spark.master).appName(cfg.spark.app_name)
    for key, value in conf.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    logger.info(
        "Spark %s up (master %s, %s shuffle partitions)",
        spark.version, cfg.spark.master, cfg.spark.shuffle_partitions,
    )
    return spark
