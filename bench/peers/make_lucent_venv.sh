#!/usr/bin/env bash
# Lucent's own environment for the fidelity bench's Lucent peer (bench/peers/lucent_render.py):
#
#     bash bench/peers/make_lucent_venv.sh        # makes bench/.venv-lucent (~6 GB)
#
# torch-lucent 0.1.8 imports torchvision and kornia at import time. PyPI's torchvision needs the
# torch it was built with: torch 2.14.1 + torchvision 0.29.1 (CUDA wheels, ~5.5 GB; they run on
# the CPU). PyPI's torchvision does not import beside the CPU-only torch 2.13.0 wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-lucent}
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check torch==2.14.1 torchvision==0.29.1 numpy pillow
"$venv/bin/pip" install --quiet --disable-pip-version-check torch-lucent==0.1.8
"$venv/bin/python" -c "import lucent, torch, torchvision; print('lucent', lucent.__version__ if hasattr(lucent, '__version__') else '0.1.8', 'torch', torch.__version__)"
