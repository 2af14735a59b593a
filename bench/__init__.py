"""vizjax's benchmarks: plain scripts, run as modules from the repository root.

    python -m bench.throughput --quick       # the engine against the seed's way (and PyTorch)
    python -m bench.fidelity                 # the recipes' pictures and measures side by side
    python -m bench.compile_cache            # compile time with and without the persistent cache
    python -m bench.atlas_commit             # the atlas' cost per committed chunk
    bash bench/gpu_check.sh OUTDIR           # everything a lent GPU should measure, in minutes

Shared pieces, one job each: :mod:`bench.report` (the machine, JSON lines, Markdown tables),
:mod:`bench.work` (FLOPs of a step, the matmul peak, memory), :mod:`bench.timing` (vizjax and the
seed's way, timed), :mod:`bench.peer` (PyTorch in its own environment), :mod:`bench.whole_model`
(a whole-model atlas predicted from a few timed steps per layer). Figures live in bench/README.md.
"""
