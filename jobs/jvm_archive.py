"""Class-data-sharing (AppCDS) archives for the Spark driver JVM and the Kafka broker JVM,
built once by set-up.

On two cores a cold JVM spends much of its first minute loading and verifying the classes of
Spark, Delta and Hadoop: in a JFR recording of `scripts/start_all.sh`'s first 150 s, a quarter
of the Java samples were class loading (jar lookups alone 9%). JDK 13+ can dump the classes a
run loaded into an archive (-XX:ArchiveClassesAtExit) and map them pre-parsed and pre-verified
into later JVMs (-XX:SharedArchiveFile). A cold Spark session with a Delta write, a MERGE and a
Delta stream took 39 s without the archive and 29-30 s with it (two runs each).

`scripts/setup.sh` runs ``python -m jobs.jvm_archive <folder>``: a broker on free ports and,
against it, bronze (Kafka source), silver and gold (alerts published to Kafka) once over a few
hundred generated readings, each JVM dumping the classes it loaded as it exits. `jobs.spark`
then starts every driver JVM, and `jobs.broker` every Kafka JVM, with its archive if it
exists. The JVM checks an archive against its own version and class path and quietly ignores
one that does not match (-Xshare:auto): a stale archive costs the gain, never a failure.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from generator.stream import GeneratorSpec
from jobs import kafka_client
from jobs.config import Config, load_config
from jobs.logs import configure_logging

logger = logging.getLogger(__name__)

SPARK_DRIVER = "spark-driver.jsa"
KAFKA_BROKER = "kafka-broker.jsa"
# Class-sharing messages at error level only: the dump lists every class it skips.
_QUIET = "-Xlog:cds*=error"


def archive_path(cfg: Config, name: str = SPARK_DRIVER) -> Path:
    return cfg.paths.deps_dir / "cds" / name


def java_options(cfg: Config, name: str = SPARK_DRIVER) -> list[str]:
    """JVM options that map archive ``name``, or none while there is no such archive."""
    path = archive_path(cfg, name)
    if not path.is_file():
        return []
    return [f"-XX:SharedArchiveFile={path.resolve()}", "-Xshare:auto", _QUIET]


def dump_options(target: Path) -> tuple[str, ...]:
    """JVM options that write the classes the JVM loaded to ``target`` when it exits."""
    return (f"-XX:ArchiveClassesAtExit={target.resolve()}", _QUIET)


def _training_spec(n: int = 600) -> GeneratorSpec:
    """Readings with every fault and event kind, so the quarantine and alert paths run too."""
    from generator.events import EVENT_KINDS
    from generator.faults import FAULT_KINDS
    from generator.fleet import make_fleet

    return GeneratorSpec(sensors=tuple(make_fleet(20, 1)), seed=1, count=n,
                         faults={k: 0.02 for k in FAULT_KINDS},
                         events={k: 0.02 for k in EVENT_KINDS})


def train(cfg: Config, out_dir: Path) -> None:
    """Broker, then bronze, silver and gold once; both JVMs dump their classes into ``out_dir``."""
    from generator.driver import Pacing, SinkSpec, run_generator
    from generator.fleet import write_registry_csv
    from jobs import broker
    from jobs.registry import registry_csv
    from jobs.runner import run_once
    from jobs.spark import build_spark
    from jobs.topics import create_topics

    with tempfile.TemporaryDirectory(prefix="lakehouse-cds-") as root:
        run_cfg = cfg.with_overrides({
            "paths.data_dir": root, "paths.lakehouse_root": None,
            "paths.checkpoint_root": None, "streaming.source": "kafka",
            "streaming.starting_offsets": "earliest", "spark.ui_enabled": False,
            "kafka.bootstrap": f"127.0.0.1:{broker.free_port_pair()}",
            "kafka.broker.controller_port": None,
        })
        broker.start(run_cfg, jvm_options=dump_options(out_dir / KAFKA_BROKER))
        try:
            create_topics(run_cfg)
            spec = _training_spec()
            write_registry_csv(spec.sensors, registry_csv(run_cfg))
            sent = run_generator(spec, SinkSpec(kind="kafka", producer="confluent",
                                                bootstrap=run_cfg.kafka.bootstrap,
                                                topic=run_cfg.kafka.topic_in,
                                                client=kafka_client.settings(run_cfg)),
                                 Pacing())
            logger.info("class archive training input: %s", sent.describe())
            spark = build_spark(run_cfg, extra_java_options=dump_options(out_dir / SPARK_DRIVER))
            # PySpark's launcher process (spark-submit, whose child is the JVM): the JVM exits
            # when its stdin closes and writes the archive as it exits, which takes a while.
            launcher = getattr(spark.sparkContext._gateway, "proc", None)  # noqa: SLF001
            try:
                rows = run_once(spark, run_cfg, ["bronze", "silver", "gold"])
                logger.info("class archive training run: %s", rows)
            finally:
                spark.stop()
            if launcher is not None:
                launcher.stdin.close()
                launcher.wait(timeout=600)
        finally:
            broker.stop(run_cfg)  # the broker JVM writes its archive as it exits


def main() -> None:
    configure_logging()
    if len(sys.argv) != 2:
        sys.exit("usage: python -m jobs.jvm_archive <folder to write the archives into>")
    out_dir = Path(sys.argv[1])
    out_dir.mkdir(parents=True, exist_ok=True)
    train(load_config(), out_dir)
    for name in (SPARK_DRIVER, KAFKA_BROKER):
        target = out_dir / name
        if not target.is_file():
            sys.exit(f"the JVM wrote no class archive at {target}")
        logger.info("class archive written: %s (%.0f MB)", target, target.stat().st_size / 1e6)


if __name__ == "__main__":
    main()
