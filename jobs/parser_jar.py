"""The jar of silver's JVM reading parser (`silver/jvm/ReadingJson.java`), built from source.

`scripts/setup.sh` builds it (``python -m jobs.parser_jar``); `jobs.spark` puts it on Spark's
class path and builds it first if the source changed since (a second or two of javac), so an
edited parser is never run stale. The jar's name carries a hash of the source: a jar is either
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

SOURCE = REPO_ROOT / "silver" / "jvm" / "ReadingJson.java"


class ParserBuildError(RuntimeError):
    """The parser jar cannot be built; the message names the fix."""


def _digest() -> str:
    return hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:12]


def jar_path(cfg: Config) -> Path:
    """Where the jar of the current source lives (built or not)."""
    return cfg.paths.deps_dir / "parser" / f"lakehouse-parser-{_digest()}.jar"


def _spark_jars() -> Path:
    import pyspark

    return Path(pyspark.__file__).parent / "jars"


def ensure_jar(cfg: Config) -> Path:
    """The parser jar for the current source, compiled now if it is not there yet."""
    target = jar_path(cfg)
    if target.is_file():
        return target
    javac = shutil.which("javac")
    if javac is None:
        raise ParserBuildError(
            "javac not found: silver's reading parser is compiled at set-up. Install a JDK "
            "17+ (Debian: apt-get install openjdk-17-jdk-headless), then run scripts/setup.sh")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        classes = Path(tmp) / "classes"
        cmd = [javac, "--release", "17", "-nowarn", "-encoding", "UTF-8",
               "-cp", str(_spark_jars() / "*"), "-d", str(classes), str(SOURCE)]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise ParserBuildError(f"javac failed on {SOURCE.name}:\n{done.stderr.strip()}")
        staged = Path(tmp) / target.name
        with zipfile.ZipFile(staged, "w", zipfile.ZIP_DEFLATED) as jar:
            jar.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\r\n\r\n")
            for f in sorted(classes.rglob("*.class")):
                jar.write(f, f.relative_to(classes).as_posix())
        os.replace(staged, target)  # atomic: a reader sees no jar or the whole jar
    for old in target.parent.glob("lakehouse-parser-*.jar"):
        if old != target:
            old.unlink(missing_ok=True)
    logger.info("built %s", target.name)
    return target


def main() -> int:
    configure_logging()
    try:
        path = ensure_jar(load_config())
    except ParserBuildError as e:
        logger.error("%s", e)
        return 1
    logger.info("reading parser jar: %s", path.name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
