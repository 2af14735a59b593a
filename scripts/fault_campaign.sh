#!/usr/bin/env bash
# Fault campaign: 20 seeded SIGKILLs of a multi-layer chunked `vizjax atlas` run (writer steps,
# random times, a 2-process merge), each resumed and compared with an uninterrupted run. Prints
# one line, e.g. "20/20 resumed atlases equal the uninterrupted run; 0 unreadable"; exit 0 only
# then. Options pass through: --kills N, --seed S, --dir DIR (see scripts/fault_campaign.py).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "fault_campaign.sh: run scripts/test.sh once first (it creates .venv)" >&2
  exit 2
fi
exec .venv/bin/python scripts/fault_campaign.py "$@"
