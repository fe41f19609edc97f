#!/usr/bin/env bash
# One command for the whole stack on this machine: set-up (idempotent), the Kafka broker,
# the topics. Stop everything with scripts/stop_all.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
LH=.venv/bin/lakehouse

$LH kafka start
$LH topics create

echo
echo "Stack is up."
echo "  broker:  $($LH kafka status)"
echo "  stop:    scripts/stop_all.sh"
