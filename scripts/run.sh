#!/usr/bin/env bash
# The main job: set up .venv if missing, install vizjax, prepare the default weights, then
# reproduce the seed article's pictures into out/, and the same filters under the default recipe
# (resumable atlases, PNGs and a gallery showing both side by side).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "run.sh: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
echo "run.sh: installing vizjax into .venv"
# The onednn extra (x86-64 Linux only; nothing elsewhere): on a CPU with AMX the default recipe's
# half of the job then runs in bfloat16 on the matrix unit (vizjax.models.onednn).
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[onednn]"
.venv/bin/vizjax weights          # prepares weights/vgg16-torchvision on first use
.venv/bin/vizjax layers
.venv/bin/vizjax article --out out "$@"
