#!/usr/bin/env bash
# The test command: set up .venv if missing, install vizjax with its test extras, run pytest.
# Fast by default (slow and gpu tests deselected). `--all`, the README's command and what CI runs
# (.ci/run), runs every test but the gpu ones (`-m "not gpu"`: they need an accelerator; `-m gpu`
# runs only those). Other arguments go to pytest (`-m slow` runs only the slow tests).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "test.sh: creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e ".[test]"
# The browser test (tests/test_gallery_browser.py) drives Debian's headless Chromium. Install it
# where we can (root with apt-get, as in CI); elsewhere that one test is skipped and says why.
if [ ! -x /usr/bin/chromium ] || [ ! -x /usr/bin/chromedriver ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing chromium and chromium-driver with apt-get (for the browser test)"
    log=$(mktemp)
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends chromium chromium-driver; } >"$log" 2>&1; then
      tail -n 5 "$log"
      echo "test.sh: could not install Chromium; the browser test will be skipped"
    fi
    rm -f "$log"
  fi
fi
args=()
for a in "$@"; do
  if [ "$a" = "--all" ]; then args+=(-m "not gpu"); else args+=("$a"); fi
done
exec .venv/bin/python -m pytest ${args[@]+"${args[@]}"}
