#!/usr/bin/env bash
# Fault campaigns: 20 seeded SIGKILLs of a multi-layer chunked `vizjax atlas` run (writer steps,
# random times, a 2-process merge), each resumed and compared with an uninterrupted run; then
# seeded SIGKILLs of merge (into an existing atlas), fidelity, exemplars, gallery and a resumed
# atlas (scripts/fault_commands.py, 6 per command), each state checked and each rerun compared
# with the uninterrupted command. Prints one line per campaign; exit 0 only if both are clean.
# Options pass through to the first: --kills N, --seed S, --dir DIR (see scripts/fault_campaign.py);
# FAULT_COMMANDS_KILLS sets the second's kills per command.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
  echo "fault_campaign.sh: run scripts/test.sh once first (it creates .venv)" >&2
  exit 2
fi
.venv/bin/python scripts/fault_campaign.py "$@"
exec .venv/bin/python scripts/fault_commands.py --kills "${FAULT_COMMANDS_KILLS:-6}"
