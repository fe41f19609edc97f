#!/usr/bin/env bash
# Stops what scripts/start_all.sh started, newest first, each one gracefully.
set -uo pipefail
cd "$(dirname "$0")/.."
LH=.venv/bin/lakehouse
[ -x "$LH" ] || { echo "nothing to stop: .venv is missing (scripts/setup.sh was never run)"; exit 0; }
$LH kafka stop
