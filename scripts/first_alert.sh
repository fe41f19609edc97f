#!/usr/bin/env bash
# How long a user waits: seconds from scripts/start_all.sh to the first alert on the dashboard
# (its /api/panels answer, as the page shows it), on a fresh data folder (LAKEHOUSE_DATA, default: a new temporary one). The stack is stopped afterwards
# unless KEEP=1. Needs the default ports free (9092, 8501): no other stack running.
set -euo pipefail
cd "$(dirname "$0")/.."
export LAKEHOUSE_DATA=${LAKEHOUSE_DATA:-$(mktemp -d -t lakehouse-first-alert-XXXX)}
PORT=${DASHBOARD_PORT:-8501}
LIMIT=${LIMIT:-600}
scripts/setup.sh >/dev/null  # setup is not part of the wait being measured
t0=$(date +%s)
scripts/start_all.sh >/dev/null
panel() {  # panel NAME FIELD: FIELD of a panel, 0 while it waits for data
  curl -fsS "http://127.0.0.1:$PORT/api/panels?minutes=0" 2>/dev/null | .venv/bin/python -c \
    "import json, sys; p = json.load(sys.stdin)['$1']; print(p.get('$2', 0) or 0)" 2>/dev/null \
    || echo 0
}
echo "stack up after $(( $(date +%s) - t0 )) s"
while :; do
  now=$(( $(date +%s) - t0 ))
  if [ "$(panel alerts total)" != 0 ]; then
    echo "first alert on the dashboard after ${now} s (data in $LAKEHOUSE_DATA)"
    if [ -x /usr/bin/chromium ]; then  # the page as a user sees it then (after the timing)
      /usr/bin/chromium --headless --no-sandbox --disable-gpu --no-first-run \
        --disable-background-networking --user-data-dir="$LAKEHOUSE_DATA/chromium" \
        --window-size=1400,2600 --virtual-time-budget=8000 \
        --screenshot="$LAKEHOUSE_DATA/first-alert.png" "http://127.0.0.1:$PORT/" \
        >/dev/null 2>&1 && echo "screenshot: $LAKEHOUSE_DATA/first-alert.png"
    fi
    break
  fi
  if [ "$now" -ge "$LIMIT" ]; then echo "no alert within ${LIMIT} s" >&2; break; fi
  sleep 5  # as often as the page refreshes
done
grep -m3 -h "batch 0:" "$LAKEHOUSE_DATA/logs/pipeline.log" || true
[ "${KEEP:-0}" = 1 ] || scripts/stop_all.sh >/dev/null
