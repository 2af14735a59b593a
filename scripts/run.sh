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
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e .
.venv/bin/vizjax weights          # prepares weights/vgg16-torchvision on first use
.venv/bin/vizjax layers
.venv/bin/vizjax article --out out "$@"
