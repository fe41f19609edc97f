#!/usr/bin/env bash
# Idempotent set-up: Python virtualenv with the pinned packages, JVM jars resolved by Maven.
# A second run with nothing changed only checks stamps and returns within a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

command -v java >/dev/null 2>&1 || die "java not found. Install a JDK 17+ (Debian: apt-get install openjdk-17-jdk-headless)."
java_major=$(java -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -n1)
[ "${java_major:-0}" -ge 17 ] || die "Java 17+ is required (found ${java_major:-unknown}); Kafka 4 and Spark 4 need it."
command -v javac >/dev/null 2>&1 || die "javac not found. Install a JDK 17+, not only a JRE (Debian: apt-get install openjdk-17-jdk-headless); it compiles silver's reading parser."
command -v mvn >/dev/null 2>&1 || die "mvn not found. Install Maven (Debian: apt-get install maven); it resolves the Kafka, Spark-Kafka and Delta jars."
PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null 2>&1 || die "$PYTHON not found. Install Python 3.11+."

hash_of() { cat "$@" | sha256sum | cut -c1-16; }

# --- Python ------------------------------------------------------------------------------
py_stamp=".venv/.stamp-$(hash_of pyproject.toml)"
if [ ! -f "$py_stamp" ]; then
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$PYTHON" -m venv .venv
  fi
  log "installing pinned Python packages (first run takes a few minutes)"
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -e ".[dev]"
  rm -f .venv/.stamp-*
  touch "$py_stamp"
else
  log "Python packages up to date"
fi

# --- JVM jars ----------------------------------------------------------------------------
resolve() {  # resolve <name>: conf/maven/<name>/pom.xml -> .deps/<name>-all
  local name=$1 out=.deps/$1-all
  rm -rf "$out"
  mvn -q -B -Dstyle.color=never -f "conf/maven/$name/pom.xml" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="$PWD/$out" \
    || die "Maven could not resolve conf/maven/$name/pom.xml (see the error above)."
}

jvm_stamp=".deps/.stamp-$(hash_of conf/maven/*/pom.xml pyproject.toml)"
if [ ! -f "$jvm_stamp" ]; then
  mkdir -p .deps
  log "resolving the Kafka broker jars with Maven"
  resolve broker
  rm -rf .deps/broker && mv .deps/broker-all .deps/broker
  log "resolving the Spark Kafka connector and Delta jars with Maven"
  resolve spark
  # Keep only what the pyspark wheel does not already ship: two copies of a jar on the
  # classpath (say, two hadoop-client-runtime or scala-library versions) break Spark.
  .venv/bin/python - <<'PY'
import pathlib, re, shutil
import pyspark

def artifact(jar: pathlib.Path) -> str:
    m = re.match(r"^(.*?)-(\d+(?:\.\d+)+.*)$", jar.stem)
    return m.group(1) if m else jar.stem

shipped = {artifact(j) for j in (pathlib.Path(pyspark.__file__).parent / "jars").glob("*.jar")}
src, dst = pathlib.Path(".deps/spark-all"), pathlib.Path(".deps/spark")
shutil.rmtree(dst, ignore_errors=True)
dst.mkdir(parents=True)
kept = [j for j in sorted(src.glob("*.jar")) if artifact(j) not in shipped]
for j in kept:
    shutil.copy2(j, dst / j.name)
print("[setup] Spark extra jars:", ", ".join(j.name for j in kept))
PY
  rm -rf .deps/spark-all
  rm -f .deps/.stamp-*
  touch "$jvm_stamp"
else
  log "JVM jars up to date"
fi

# --- The project's JVM classes (silver/jvm/, jobs/jvm/), compiled against the Spark and Delta jars
.venv/bin/python -m jobs.jvm_jar || die "could not build the project's JVM classes (see above)."

# --- Headless Chromium for the dashboard's browser test (Debian package, no browser download)
if [ ! -x /usr/bin/chromium ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
    log "installing Debian's chromium (dashboard browser test)"
    apt-get update -qq >/dev/null \
      && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null \
      || die "apt-get could not install chromium (needed by tests/test_dashboard.py)."
  else
    log "WARNING: /usr/bin/chromium missing and apt-get unavailable (or not root):"
    log "         install Debian's chromium to run tests/test_dashboard.py"
  fi
fi

# --- DuckDB delta extension (shipped in the duckdb-extension-delta wheel, no network) ----
.venv/bin/python -m jobs.duck --check >/dev/null \
  || die "DuckDB could not load the delta extension from the duckdb-extension-delta wheel."
# --- Class archives of the Spark driver and Kafka broker JVMs (jobs/jvm_archive.py) -------
# Faster cold starts. Rebuilt when the jars, the Python packages or the JDK change. Optional:
# without them Spark and Kafka start as usual, only slower.
cds=.deps/cds
cds_stamp="$cds/.stamp-$( (cat conf/maven/*/pom.xml pyproject.toml jobs/jvm_archive.py; \
  java -version 2>&1) | sha256sum | cut -c1-16)"
if [ ! -f "$cds/spark-driver.jsa" ] || [ ! -f "$cds/kafka-broker.jsa" ] \
    || [ ! -f "$cds_stamp" ]; then
  log "building the JVM class archives for faster Spark and Kafka starts (once, about 3 min)"
  rm -rf "$cds" "$cds.tmp" && mkdir -p "$cds.tmp"
  if .venv/bin/python -m jobs.jvm_archive "$cds.tmp" >"$cds.tmp/build.log" 2>&1; then
    mv "$cds.tmp" "$cds" && touch "$cds_stamp"
  else
    mkdir -p "$cds" && mv "$cds.tmp/build.log" "$cds/build.log" && rm -rf "$cds.tmp"
    log "WARNING: no class archives (see $cds/build.log); Spark and Kafka start without them"
  fi
else
  log "JVM class archives up to date"
fi
log "ready"
