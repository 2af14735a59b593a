#!/usr/bin/env bash
# The GPU check, one command for a lent GPU machine (one H100 or H200):
#
#     bash bench/gpu_check.sh OUTDIR [--lucid-steps N] [--budget-s S] [--random-weights]
#
# Runs with the machine's own python3 (jax with CUDA, flax, optax, h5py, orbax, numpy, pillow,
# tqdm; no venv, nothing installed) and PYTHONPATH=. from the repository root. Finishes in under
# 6 minutes with compilation: the Python side stops measuring at --budget-s (330 s) and estimates
# what it did not reach; `timeout` is the backstop. JSON lines go to OUTDIR/gpu_check.jsonl as
# each section ends, the Markdown table to stdout and OUTDIR/summary.md, the log to OUTDIR/log.txt.
# VIZJAX_GPU_CHECK_TINY=1 (or --tiny) runs tiny sizes in seconds on any machine (the tests do).
set -euo pipefail
out=${1:?usage: bash bench/gpu_check.sh OUTDIR [options]}
shift
cd "$(dirname "$0")/.."
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}"
# The persistent compilation cache stays off: compile seconds are part of what is measured.
export VIZJAX_COMPILATION_CACHE=0
timeout -k 10 "${VIZJAX_GPU_CHECK_TIMEOUT:-350}" "${PYTHON:-python3}" -u -m bench.gpu_check "$out" "$@" 2>&1 |
    tee "$out/log.txt"
