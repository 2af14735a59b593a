"""The benchmarks' code paths on tiny sizes, so they cannot rot between the days they are run.

Nothing here times anything: bench/ holds plain scripts (``python -m bench.throughput``, ``bash
bench/gpu_check.sh``) whose
figures live in bench/README.md. These tests run their CPU paths in seconds and check the output
has the rows and fields the README's tables are made from.

All of them run with ``-m slow`` (scripts/test.sh --all, CI): the bench is a tool of the project,
not of vizjax's users, and each run of it compiles the engine's programs again.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

BENCH = Path(__file__).resolve().parent.parent / "bench"


def _lines(path):
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def test_throughput_tiny_run_writes_its_rows(tmp_path, capsys):
    from bench import throughput as tp

    out = tmp_path / "r.jsonl"
    assert tp.main(["--tiny", "--out", str(out)]) == 0
    rows = _lines(out)
    for row in rows:  # every line says where and when it was measured
        for key in ("device", "cpu_model", "jax", "date", "platform", "command"):
            assert row[key], key
    tables = {r["table"] for r in rows}
    assert {"peak", "main", "scaling", "run"} <= tables
    main = {r["way"]: r for r in rows if r["table"] == "main"}
    assert {"vizjax", "seed"} <= set(main)
    assert main["vizjax"]["compile_s"] >= 0 and main["vizjax"]["wall_s"] > 0
    assert "| block2_conv1 |" in capsys.readouterr().out


def test_throughput_peer_torch_agrees_or_is_skipped_with_a_note(tmp_path, capsys):
    from bench import throughput as tp

    out = tmp_path / "r.jsonl"
    assert tp.main(["--tiny", "--no-scaling", "--peer", "torch", "--out", str(out)]) == 0
    torch_rows = [r for r in _lines(out) if r.get("way") == "torch"]
    if tp.torch_python() is None:
        assert "--peer torch skipped" in capsys.readouterr().out
        pytest.skip("no PyTorch environment (bench/.venv-torch): the skip note was checked")
    (row,) = torch_rows
    assert row["agree_max_rel"] < tp.AGREE_RTOL  # same weights, start image, filters, steps


# lucid's programs compile for ~10 s each on a 2-core CPU; six of them here
def test_recipes_and_whole_model_tiny(tmp_path):
    from bench import throughput as tp

    out = tmp_path / "r.jsonl"
    assert tp.main(["--tiny", "--recipes", "--out", str(out)]) == 0
    assert tp.main(["--tiny", "--whole-model", "--layers", "block1_conv1", "--out", str(out)]) == 0
    rows = _lines(out)
    recipes = {r["recipe"]: r for r in rows if r["table"] == "recipes"}
    assert set(recipes) == {"classic", "classic@lucid-input", "lucid"}
    # lucid is compared with classic at the network input its transforms produce.
    assert recipes["classic@lucid-input"]["network_input"] == recipes["lucid"]["network_input"]
    assert recipes["lucid"]["vs_classic_same_input"] > 0
    assert any(r["table"] == "compile512" and r["steps"] == 512 for r in rows)
    assert len([r for r in rows if r["table"] == "segments"]) == 2
    totals = {r["way"]: r for r in rows if r["table"] == "whole_model_total"}
    assert set(totals) == {"vizjax", "one-at-a-time"}
    assert all(t["total_s"] > 0 and t["measured_layers"] == 1 for t in totals.values())


# the whole GPU check on CPU, real weights: ~25 s on a 2-core CPU
def test_gpu_check_script_runs_its_cpu_path(tmp_path):
    """`bash bench/gpu_check.sh OUTDIR` as on a lent GPU, with tiny sizes and this interpreter
    standing in for the machine's python3."""
    env = {**os.environ, "PYTHON": sys.executable, "VIZJAX_GPU_CHECK_TINY": "1"}
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "FAILED" not in proc.stdout, proc.stdout[-3000:]
    rows = _lines(tmp_path / "gpu_check.jsonl")
    assert "weights" in rows[0] and rows[0]["tiny"] is True
    classic = {r["dtype"] for r in rows if r["table"] == "classic"}
    assert classic == {"bfloat16", "float32"}
    lucid = [r for r in rows if r["table"] == "lucid"]
    assert lucid and all(r["full_steps"] == 512 and r["predicted_full_s"] > 0 for r in lucid)
    assert {r["dtype"] for r in rows if r["table"] == "peak"} == {"bfloat16", "float32"}
    assert {r["way"] for r in rows if r["table"] == "whole_model_total"} == {
        "vizjax",
        "one-at-a-time",
    }
    assert all("chunk" in r and "mem_bytes" not in r for r in rows if r["table"] == "classic")
    # The whole model runs right after the peak, within its own share of the budget, so a cut
    # run still prints its line (issue 21).
    tables = [r["table"] for r in rows]
    assert tables.index("whole_model_total") < tables.index("classic")
    summary = (tmp_path / "summary.md").read_text()
    assert "| work | dtype |" in summary and "classic" in summary
    assert "this project's CPU" in summary and "- whole model (classic" in summary
    assert (tmp_path / "log.txt").read_text().strip()


def test_fidelity_tiny_run_has_photo_recipe_and_lucent_rows_or_a_note(tmp_path, capsys):
    from bench import fidelity, peer

    args = ["--layers", "block1_conv1", "--filters", "2", "--size", "32", "--recipes", "classic"]
    args += ["--steps", "classic=2", "--peer", "lucent", "--lucent-steps", "2", "--sheet", "2"]
    fidelity.main([*args, "--out", str(tmp_path)])
    rows = {r["recipe"].split(" ")[0]: r for r in _lines(tmp_path / "results.jsonl")}
    # The photo row is measured like the recipes: on its own most active channels.
    assert {"photo", "classic"} <= set(rows)
    assert rows["photo"]["done"] == fidelity.PHOTO_CHANNELS and rows["photo"]["dead_fraction"] == 0
    assert 0 < rows["photo"]["median_robustness"] <= 1.5 and rows["photo"]["median_hf_energy"] > 0
    assert rows["classic"]["done"] == 2
    assert (tmp_path / "sheet_block1_conv1.png").is_file()
    if peer.lucent_python() is None:
        assert "--peer lucent skipped" in capsys.readouterr().out
    else:
        assert rows["Lucent"]["done"] == 2 and rows["Lucent"]["seconds_per_filter"] > 0


def test_fidelity_seed_reaches_the_recipe_and_the_row(tmp_path):
    from bench import fidelity
    from vizjax import open_atlas

    args = ["--layers", "block1_conv1", "--filters", "1", "--size", "32", "--recipes", "classic"]
    fidelity.main([*args, "--steps", "classic=1", "--seed", "3", "--out", str(tmp_path)])
    rows = [r for r in _lines(tmp_path / "results.jsonl") if r["recipe"] == "classic"]
    assert [r["seed"] for r in rows] == [3]
    with open_atlas(tmp_path / "classic-32px-1steps-seed3.h5") as a:
        assert a.config["recipe"]["seed"] == 3


def test_frontier_runs_each_point_once_and_plots(tmp_path, capsys):
    from bench import frontier

    args = ["--layers", "block1_conv1", "--filters", "2", "--size", "32", "--recipes", "classic"]
    args += ["--steps", "1,3", "--out", str(tmp_path)]
    frontier.main(args)
    rows = _lines(tmp_path / "results.jsonl")
    points = sorted((r["recipe"], r["steps"]) for r in rows)
    assert points == [("classic", 1), ("classic", 3), ("photo", 0)]
    assert all(r["seconds_per_filter"] > 0 for r in rows if r["recipe"] != "photo")
    assert (tmp_path / "frontier_block1_conv1.png").stat().st_size > 1000
    # Resumed: a finished point is not run again; a new step count is.
    frontier.main([*args[:-4], "--steps", "1,2", "--out", str(tmp_path)])
    again = [(r["recipe"], r["steps"]) for r in _lines(tmp_path / "results.jsonl")]
    assert len(again) == 4 and again[-1] == ("classic", 2)
    assert "| block1_conv1 | classic | 2 |" in capsys.readouterr().out


def test_scale_measures_every_reading_command_on_a_tiny_atlas(tiny_weights, tmp_path):
    """bench/scale.py on a tiny atlas: a JSON line per command, each exit 0, with the gallery's
    sizes (its heaviest page, its images, no data: URI)."""
    import tiny_network

    from bench import scale
    from vizjax.cli import main

    atlas = tmp_path / "a.h5"
    run = ["atlas", *tiny_network.ARGS, "--recipe", "classic", "--size", "32", "--steps", "3"]
    run += ["--layer", "block1_conv1", "--filters", "0:8", "--batch", "2", "--quiet"]
    assert main([*run, "--out", str(atlas)]) == 0
    out = tmp_path / "scale.jsonl"
    vizjax = str(Path(sys.executable).with_name("vizjax"))
    args = [str(atlas), "--out", str(out), "--layer", "block1_conv1", "--vizjax", vizjax]
    assert scale.main(args) == 0
    rows = {r["step"]: r for r in _lines(out)}
    assert sorted(rows) == ["fidelity", "gallery", "grid", "info", "to_xarray"]
    assert all(r["rc"] == 0 and r["wall_s"] > 0 for r in rows.values()), rows
    g = rows["gallery"]
    # Here the heaviest page is a filter's (its full-size image is not lazy); on VGG16 a layer's.
    assert g["heaviest_page_imgs"] >= g["heaviest_page_lazy_imgs"] and g["data_uris"] == 0
    assert g["heaviest_page_all_images_bytes"] > g["heaviest_page_bytes"]


def test_generic_tiny_run_times_both_ways_and_their_ratio(tmp_path, capsys):
    from bench import generic

    out = tmp_path / "g.jsonl"
    assert generic.main(["--tiny", "--recipes", "classic", "--builtin-xla", "--out", str(out)]) == 0
    rows = _lines(out)
    timed = {r["way"]: r for r in rows if r["table"] == "generic"}
    assert set(timed) == {"builtin", "generic", "builtin-xla"}
    assert all(r["ms_per_filter_step"] > 0 and r["chunk"] >= 1 for r in timed.values())
    (ratio,) = [r for r in rows if r["table"] == "generic_ratio"]
    want = timed["generic"]["ms_per_filter_step"] / timed["builtin"]["ms_per_filter_step"]
    assert ratio["ratio"] == pytest.approx(want)
    assert "| block2_conv1 | classic |" in capsys.readouterr().out


def test_tuning_tiny_run_records_its_decisions_and_the_table(tmp_path, capsys):
    from bench import tuning as bench_tuning
    from vizjax.engine.tuning import Table

    out, path = tmp_path / "r.jsonl", tmp_path / "tuning.json"
    assert bench_tuning.main(["--tiny", "--table", str(path), "--out", str(out)]) == 0
    (row,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert row["table"] == "tuning" and row["layer"] == "block2_conv1" and row["size"] == 32
    assert row["rule"] == "winograd/8/float32"  # timed first: the CPU rule at 32 px
    # the rule, XLA's convolution, half the chunk; oneDNN's where it runs; on a CPU with AMX,
    # bfloat16 at the winner and through oneDNN (one of them when the winner is oneDNN)
    from vizjax.engine.tuning import this_machine
    from vizjax.models import onednn

    least = 3 + int(onednn.unavailable() is None)
    most = least + int(this_machine().bfloat16_unit) * (1 + int(onednn.unavailable() is None))
    assert least <= len(row["ms_per_filter_step"]) <= most and row["rule_over_decision"] >= 1.0
    assert row["cpu_model"] and row["machine_key"] == Table.load(path).machine.key
    entry = Table.load(path).entries()[row["key"]]
    assert (entry["conv"], entry["per_device"]) == (row["conv"], row["per_device"])
    assert "rule / decision" in capsys.readouterr().out


def test_onednn_convolution_table_runs(tmp_path):
    from bench import onednn as bench_onednn
    from vizjax.models import onednn

    if onednn.unavailable() is not None:
        assert bench_onednn.main(["--no-steps", "--out", str(tmp_path / "o.jsonl")]) == 1
        return
    out = tmp_path / "o.jsonl"
    assert bench_onednn.main(["--no-steps", "--out", str(out)]) == 0
    rows = _lines(out)
    assert len(rows) == 4 * len(bench_onednn.SHAPES)
    assert all(r["ms"] > 0 and r["gflops"] > 0 for r in rows)


def test_compile_split_reads_xlas_timers():
    from bench.compile_split import split_log

    log = "\n".join(
        [
            "I1205 18:51:54.3 1 cpu_compiler.cc:1269] Running HLO passes on [jit_f] for CPU "
            "time: 733 us (733 us) (cumulative: 733 us, max: 733 us, #called: 1)",
            "I1205 18:51:54.3 1 cpu_compiler.cc:2094] Compiling [jit_f] for CPU using JIT time: "
            "3.59 ms (3587 us) (cumulative: 3.59 ms, max: 3.59 ms, #called: 1)",
            "I1205 18:51:54.3 1 ir_compiler.cc:293] Compiled LLVM module: m time: 7.46 ms "
            "(7464 us) (cumulative: 22.6 ms, max: 15.2 ms, #called: 2)",
            "I1205 18:51:54.3 1 ir_compiler.cc:293] Compiled LLVM module: n time: 1 ms (1000 us)",
            "I1205 18:51:54.3 1 fusion_compiler.cc:494] Compiled MLIR module: m time: 8.06 ms "
            "(8059 us) (cumulative: 11.9 ms, max: 8.06 ms, #called: 2)",
            "I1205 18:51:54.3 1 cpu_compiler.cc:1215] CpuCompiler - Running LLVM verifier time: "
            "7 us (7 us)",
        ]
    )
    got = split_log(log)
    assert got == pytest.approx(
        {"hlo_passes_s": 733e-6, "backend_s": 3587e-6, "mlir_s": 8059e-6, "llvm_s": 8464e-6}
    )


def test_profile_sums_thunks_by_kind_and_runs_tiny(tmp_path, capsys):
    from bench import profile

    events = [
        ("tf_XLAEigen/1", "ffi_call.3", 2.0),
        ("tf_XLAEigen/2", "ffi_call.17", 1.0),
        ("tf_XLAEigen/2", "divide_convert_fusion", 0.5),
        ("tf_XLAEigen/2", "ThunkExecutor::Execute", 9.0),  # wraps the thunks: not one
        ("python", "ffi_call.3", 7.0),  # not XLA's thread pool
    ]
    assert profile.kinds(events) == {"ffi_call": 3.0, "divide_convert_fusion": 0.5}
    out = tmp_path / "p.jsonl"
    assert (
        profile.main(
            ["--tiny", "--filters", "2", "--steps", "2", "--repeats", "1", "--out", str(out)]
        )
        == 0
    )
    (row,) = _lines(out)
    assert row["table"] == "profile" and row["wall_ms_per_filter_step"] > 0
    kinds = row["thunk_ms_per_filter_step"]
    assert sum(kinds.values()) > 0 and all(v >= 0 for v in kinds.values())
    assert not [k for k in kinds if k.startswith(profile.WRAPPERS)]
    assert "| kind | ms per filter-step | share |" in capsys.readouterr().out
