#!/usr/bin/env bash
# Sets everything up (idempotent) and runs the test suite. The suite starts its own Kafka
# broker on free ports and its own SparkSession; no service needs to be running beforehand.
# Extra arguments go to pytest, e.g.  scripts/test.sh -k bronze -x
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
echo "[test] ruff"
.venv/bin/ruff check .
echo "[test] pytest"
exec .venv/bin/python -m pytest "$@"
