#!/usr/bin/env bash
# Stops what scripts/start_all.sh started, newest first, each one gracefully.
set -uo pipefail
cd "$(dirname "$0")/.."
LH=.venv/bin/lakehouse
[ -x "$LH" ] || { echo "nothing to stop: .venv is missing (scripts/setup.sh was never run)"; exit 0; }
read -r RUN < <(.venv/bin/python -c \
  'from jobs.config import load_config; print(load_config().paths.run)')

stop_one() {  # stop_one NAME WAIT_S: SIGTERM, wait, then the rest of its session, SIGKILL last
  local name=$1 wait_s=$2 pid
  pid=$(cat "$RUN/$name.pid" 2>/dev/null) || { echo "$name: not running"; return; }
  if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
    echo "$name: not running"; rm -f "$RUN/$name.pid"; return
  fi
  echo "$name: stopping (pid $pid)"
  kill -TERM "$pid"
  for _ in $(seq $((wait_s * 5))); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "$name: still running after ${wait_s}s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
  # start_all gave each service its own session (pgid = pid): leftovers such as Spark's JVM
  if pgrep -g "$pid" >/dev/null 2>&1; then
    kill -TERM -- "-$pid" 2>/dev/null; sleep 2; kill -KILL -- "-$pid" 2>/dev/null
  fi
  rm -f "$RUN/$name.pid"
  echo "$name: stopped"
}

stop_one generator 10
stop_one dashboard 10
stop_one pipeline 90  # the runner stops its queries cleanly on SIGTERM
$LH kafka stop
