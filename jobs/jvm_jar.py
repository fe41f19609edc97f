"""The project's jar of JVM classes, built from the repository's Java sources.

It holds silver's reading parser (`silver/jvm/ReadingJson.java`, a pure function) and the
Delta log store for local file systems (`jobs/jvm/LocalListingLogStore.java`, I/O).
`scripts/setup.sh` builds it (``python -m jobs.jvm_jar``); `jobs.spark` puts it on Spark's
class path and builds it first if a source changed since (a second or two of javac), so an
edited class is never run stale. The jar's name carries a hash of the sources: a jar is either
current or ignored, and two processes building at once write the same bytes.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from jobs.config import REPO_ROOT, Config, load_config
from jobs.logs import configure_logging

logger = logging.getLogger(__name__)

SOURCES = (
    REPO_ROOT / "silver" / "jvm" / "ReadingJson.java",
    REPO_ROOT / "jobs" / "jvm" / "LocalListingLogStore.java",
)


class JarBuildError(RuntimeError):
    """The project's jar cannot be built; the message names the fix."""


def _digest() -> str:
    digest = hashlib.sha256()
    for source in SOURCES:
        digest.update(source.name.encode() + b"\0" + source.read_bytes())
    return digest.hexdigest()[:12]


def jar_path(cfg: Config) -> Path:
    """Where the jar of the current sources lives (built or not)."""
    return cfg.paths.deps_dir / "jvm" / f"lakehouse-{_digest()}.jar"


def _spark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def ensure_jar(cfg: Config) -> Path:
    """The jar of the current sources, compiled now if it is not there yet."""
    target = jar_path(cfg)
    if target.is_file():
        return target
    javac = shutil.which("javac")
    if javac is None:
        raise JarBuildError(
            "javac not found: the project's JVM classes are compiled at set-up. Install a JDK "
            "17+ (Debian: apt-get install openjdk-17-jdk-headless), then run scripts/setup.sh")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        classes = Path(tmp) / "classes"
        connectors = cfg.paths.deps_dir / "spark"  # Delta's log store API (delta-storage)
        class_path = os.pathsep.join(str(d / "*") for d in (_spark_jars(), connectors))
        cmd = [javac, "--release", "17", "-nowarn", "-encoding", "UTF-8", "-cp", class_path,
               "-d", str(classes), *(str(s) for s in SOURCES)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            names = ", ".join(s.name for s in SOURCES)
            raise JarBuildError(f"javac failed on {names}:\n{done.stderr.strip()}")
        staged = Path(tmp) / target.name
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
            for f in sorted(classes.rglob("*.class")):
                jar.write(f, f.relative_to(classes).as_posix())
        os.replace(staged, target)  # atomic: a reader sees no jar or the whole jar
    for old in target.parent.glob("lakehouse-*.jar"):
        if old != target:
            old.unlink(missing_ok=True)
    logger.info("built %s", target.name)
    return target


def main() -> int:
    configure_logging()
    try:
        path = ensure_jar(load_config())
    except JarBuildError as e:
        logger.error("%s", e)
        return 1
    logger.info("project jar: %s", path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
