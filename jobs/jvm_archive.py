"""A class-data-sharing (AppCDS) archive for the Spark driver JVM, built once by set-up.

On two cores a cold JVM spends much of its first minute loading and verifying the classes of
Spark, Delta and Hadoop: in a JFR recording of `scripts/start_all.sh`'s first 150 s, a quarter
of the Java samples were class loading (jar lookups alone 9%). JDK 13+ can dump the classes a
run loaded into an archive (-XX:ArchiveClassesAtExit) and map them pre-parsed and pre-verified
into later JVMs (-XX:SharedArchiveFile). A cold Spark session with a Delta write, a MERGE and a
Delta stream took 39 s without the archive and 29-30 s with it (two runs each).

`scripts/setup.sh` runs ``python -m jobs.jvm_archive <file>``: bronze and silver once over a
few generated lines (files source, so no broker), in a JVM that dumps its classes to <file>
as it exits. `jobs.spark` then starts every driver JVM with the
archive if it exists. The JVM checks the archive against its own version and class path and
quietly ignores one that does not match (-Xshare:auto): a stale archive costs the gain, never
a failure.
"""

from __future__ import annotations

import logging
import sys
import tempfile
from pathlib import Path

from jobs.config import Config, load_config
from jobs.logs import configure_logging

logger = logging.getLogger(__name__)

ARCHIVE = Path("cds") / "spark-driver.jsa"
# Class-sharing messages at error level only: the dump lists every class it skips.
_QUIET = "-Xlog:cds*=error"


def archive_path(cfg: Config) -> Path:
    return cfg.paths.deps_dir / ARCHIVE


def java_options(cfg: Config) -> list[str]:
    """Driver JVM options that map the archive, or none while there is no archive."""
    path = archive_path(cfg)
    if not path.is_file():
        return []
    return [f"-XX:SharedArchiveFile={path.resolve()}", "-Xshare:auto", _QUIET]


def _training_lines(n: int = 400) -> list[str]:
    """Generated readings with every fault kind, so silver's quarantine path runs too."""
    from generator.faults import FAULT_KINDS
    from generator.fleet import make_fleet
    from generator.stream import GeneratorSpec, generate_messages

    spec = GeneratorSpec(sensors=tuple(make_fleet(20, 1)), seed=1, count=n,
                         faults={k: 0.02 for k in FAULT_KINDS})
    return [m.value.decode("utf-8", "replace") for m in generate_messages(spec)]


def train(cfg: Config, target: Path) -> None:
    """Run bronze and silver once in a JVM that dumps its classes to ``target`` at exit."""
    from jobs.runner import run_once
    from jobs.spark import build_spark

    with tempfile.TemporaryDirectory(prefix="lakehouse-cds-") as root:
        run_cfg = cfg.with_overrides({
            "paths.data_dir": root, "paths.lakehouse_root": None,
            "paths.checkpoint_root": None, "streaming.source": "files",
            "streaming.files_dir": None, "spark.ui_enabled": False,
        })
        incoming = run_cfg.paths.data_dir / "incoming"
        incoming.mkdir(parents=True)
        (incoming / "training.jsonl").write_text("\n".join(_training_lines()) + "\n")
        spark = build_spark(run_cfg, extra_java_options=(
            f"-XX:ArchiveClassesAtExit={target.resolve()}", _QUIET))
        # PySpark's launcher process (spark-submit, whose child is the JVM): the JVM exits
        # when its stdin closes and writes the archive as it exits, which takes a while.
        launcher = getattr(spark.sparkContext._gateway, "proc", None)  # noqa: SLF001
        try:
            rows = run_once(spark, run_cfg, ["bronze", "silver"])
            logger.info("class archive training run: %s", rows)
        finally:
            spark.stop()
        if launcher is not None:
            launcher.stdin.close()
            launcher.wait(timeout=600)


def main() -> None:
    configure_logging()
    if len(sys.argv) != 2:
        sys.exit("usage: python -m jobs.jvm_archive <archive file to write>")
    target = Path(sys.argv[1])
    target.parent.mkdir(parents=True, exist_ok=True)
    train(load_config(), target)
    if not target.is_file():
        sys.exit(f"the JVM wrote no class archive at {target}")
    logger.info("class archive written: %s (%.0f MB)", target, target.stat().st_size / 1e6)


if __name__ == "__main__":
    main()
