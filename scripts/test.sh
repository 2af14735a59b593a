#!/usr/bin/env bash
# The test command (CI runs it through .ci/run): set up .venv if missing, install vizjax with its
# test extras, run pytest. Fast by default; `bash scripts/test.sh -m slow` runs the slow tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "test.sh: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
exec .venv/bin/python -m pytest "$@"
