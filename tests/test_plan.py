"""``vizjax atlas --plan`` (vizjax.plan): what a run would do and take, with nothing written;
and the long-run warning of a real run."""

import json
import os

import pytest

from vizjax import plan, run
from vizjax.cli import main
from vizjax.engine import cost
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import preset

ARGS = ["atlas", "--layer", "block1_conv1", "--recipe", "lucid", "--size", "32", "--steps", "2"]
ARGS += ["--batch", "4"]


def files_under(path):
    return sorted(
        os.path.relpath(os.path.join(d, f), path) for d, _, fs in os.walk(path) for f in fs
    )


def test_plan_writes_nothing_and_counts_what_is_done(tmp_path, capsys, default_weights):
    out = tmp_path / "new" / "a.h5"
    assert main([*ARGS, "--filters", "0:8", "--out", str(out), "--plan", "--json"]) == 0
    p = json.loads(capsys.readouterr().out)
    assert list(tmp_path.iterdir()) == []  # no atlas, no lock, no folder
    (row,) = p["layers"]
    assert (row["layer"], row["filters"], row["done"], row["todo"]) == ("block1_conv1", 8, 0, 8)
    assert row["chunk"] == 4 and row["ms_per_filter_step"] > 0 and row["compile_s"] > 0
    # 2 chunks of 4 filters x 2 steps at the timed step.
    step_s = row["ms_per_filter_step"] * 4 / 1e3
    assert row["compute_s"] == pytest.approx(2 * 2 * step_s)
    assert p["seconds"] == pytest.approx(row["compute_s"] + row["compile_s"])
    assert p["warning"] is None

    # An atlas with 4 of the 8 filters done: the plan leaves them out and still writes nothing.
    recipe = preset("lucid").replace(size=(32, 32), steps=2)
    run.run_atlas(
        out,
        ["block1_conv1"],
        "0:4",
        recipe,
        default_weights,
        execution=Execution(batch=4),
        quiet=True,
    )
    before = {f: os.path.getmtime(tmp_path / f) for f in files_under(tmp_path)}
    assert main([*ARGS, "--filters", "0:8", "--out", str(out), "--plan"]) == 0
    text = capsys.readouterr().out
    assert {f: os.path.getmtime(tmp_path / f) for f in files_under(tmp_path)} == before
    line = next(li for li in text.splitlines() if li.startswith("block1_conv1"))
    assert line.split()[1:5] == ["8", "4", "4", "4"]  # filters, done, to do, chunk
    assert "nothing was written" in text and text.splitlines()[-1].startswith("predicted: ")
    # The size on disk: the schema's fields of the rows; the real atlas holds 4 such rows.
    data = sum(os.path.getsize(tmp_path / f) for f in before if not f.endswith(".lock"))
    assert plan.atlas_bytes("block1_conv1", 4, recipe) <= data


def test_atlas_bytes_from_the_schema():
    recipe = preset("classic").replace(size=(16, 16), steps=9)
    # images uint8 + raw float32 (16x16x3 each), objective float32 (T+1), activation_matrix
    # float32 (K x C = 64), 3 float32 (K) measures, 1 int32 filter index, 4 bools.
    per_row = 16 * 16 * 3 * (1 + 4) + 4 * 10 + 4 * 64 + 3 * 4 + 4 + 4
    assert plan.atlas_bytes("block1_conv1", 3, recipe) == 3 * per_row
    assert plan.atlas_bytes("block1_conv1", 3, recipe.with_diversity(2)) > 3 * per_row


def test_a_long_plan_and_a_long_run_say_so_first(tmp_path, capsys, monkeypatch, default_weights):
    monkeypatch.setattr(cost, "LONG_RUN_SECONDS", 0.0)
    out = tmp_path / "a.h5"
    assert main([*ARGS, "--filters", "0:8", "--out", str(out), "--plan"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert first.startswith("vizjax: this run will take about ")
    assert "--steps" in first and "--size" in first and "--filters" in first
    assert not out.exists()
    # A real run says it once it has timed a chunk that compiled nothing (its second chunk).
    monkeypatch.setenv("VIZJAX_PROGRESS_SECONDS", "1000")
    assert main([*ARGS, "--filters", "0:12", "--out", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("vizjax: this run will take about ")
    assert sum("will take about" in li for li in err) == 1
