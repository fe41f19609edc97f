#!/usr/bin/env bash
# One command for the whole stack on this machine: set-up (idempotent), the Kafka broker,
# the topics, the pipeline, the generator and the dashboard. Stop everything with
# scripts/stop_all.sh. Idempotent: a service whose pid file names a live process is left alone.
#
# Generator defaults (environment): GEN_SENSORS=100, GEN_INTERVAL=1 (seconds between two
# readings of a sensor, so ~100 msg/s), in real time: event time is the wall clock, as with real
# sensors (GEN_SPEEDUP>1 replays faster, with event time placed to end at GEN_DURATION);
# GEN_FIRST_EVENT=20 (seconds before injected events may start), GEN_DURATION=86400 wall
# seconds, GEN_EVENTS, GEN_FAULTS. DASHBOARD_PORT=8501.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
LH=.venv/bin/lakehouse

# Folders of the configured data dir (LAKEHOUSE_DATA / conf/pipeline.yaml).
read -r RUN LOGS < <(.venv/bin/python -c \
  'from jobs.config import load_config; c = load_config(); print(c.paths.run, c.paths.logs)')
mkdir -p "$RUN" "$LOGS"

running() {  # running NAME: its pid file names a live process
  local pid
  pid=$(cat "$RUN/$1.pid" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

start_bg() {  # start_bg NAME CMD...: detached (own session), output to $LOGS/NAME.log
  local name=$1; shift
  if running "$name"; then
    echo "$name: already running (pid $(cat "$RUN/$name.pid"))"
    return
  fi
  setsid nohup "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$RUN/$name.pid"
  echo "$name: started (pid $!), log $LOGS/$name.log"
}

# The pipeline first: its Spark JVM starts while the broker does, and it waits for the topics.
start_bg pipeline "$LH" run --wait-for-broker 120
if ! { $LH kafka start && $LH topics create; }; then
  kill "$(cat "$RUN/pipeline.pid")" 2>/dev/null || true
  echo "Kafka did not start (see $LOGS/kafka); the pipeline was stopped" >&2
  exit 1
fi
if [ "${GEN_SPEEDUP:-1}" = 1 ]; then
  timing=(--start now)            # real time
else
  timing=(--speedup "$GEN_SPEEDUP")
fi
start_bg generator "$LH" generate --producer confluent --sensors "${GEN_SENSORS:-100}" \
  --interval "${GEN_INTERVAL:-1}" "${timing[@]}" --first-event-after "${GEN_FIRST_EVENT:-20}" \
  --duration "${GEN_DURATION:-86400}" \
  --events "${GEN_EVENTS:-all=0.0005}" \
  --faults "${GEN_FAULTS:-malformed_json=0.002,out_of_range=0.002,duplicate=0.005,late_beyond_watermark=0.001}"
PORT=${DASHBOARD_PORT:-8501}
start_bg dashboard "$LH" dashboard --port "$PORT"

for _ in $(seq 60); do  # the dashboard answers within a few seconds
  curl -fsS "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
  running dashboard || { echo "dashboard exited; see $LOGS/dashboard.log" >&2; exit 1; }
  sleep 0.5
done
running pipeline || { echo "pipeline exited; see $LOGS/pipeline.log" >&2; exit 1; }

echo
echo "Stack is up."
echo "  broker:     $($LH kafka status)"
echo "  dashboard:  http://127.0.0.1:$PORT/"
echo "  metrics:    http://127.0.0.1:$PORT/metrics"
echo "  logs:       $LOGS/{pipeline,generator,dashboard}.log, JSON lines in $LOGS/lakehouse.log"
echo "  status:     $LH status"
echo "  query:      $LH query \"SELECT alert_type, severity, count(*) FROM alerts GROUP BY ALL ORDER BY 3 DESC\""
echo "              $LH query \"SELECT * FROM sensor_status WHERE status = 'OFFLINE'\""
echo "              $LH query \"SELECT query_name, max(batch_id), avg(batch_duration_ms) FROM pipeline_metrics GROUP BY 1\""
echo "              $LH history alerts; $LH query --version 0 \"SELECT count(*) FROM alerts\""
echo "  stop:       scripts/stop_all.sh"
