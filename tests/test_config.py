"""The run's config: one identity for the writer, merge and the v1 upgrade, from the dataclasses'
field metadata; old layouts read and resumed; refusals in one short line."""

import dataclasses
import json
from pathlib import Path

import h5py
import pytest
from atlas_scenarios import ATTRS, HW, STEPS, make_rows

from vizjax.atlas import AtlasWriter, merge_atlases, open_atlas, part_path
from vizjax.config import RunConfig, as_current, differences, identity, read_config
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import PRESETS, Recipe
from vizjax.errors import AtlasError, VizjaxError

FIXTURE_V1 = Path(__file__).parent / "data" / "atlas-v1.h5"
RUN = RunConfig(PRESETS["classic"].replace(steps=STEPS, size=HW), layers=("l1",), filters="all")


def write(path, config, filters=(0, 1)):
    with AtlasWriter(path, ATTRS, config) as w:
        w.begin_layer("l1", 6, list(filters), HW, STEPS)
        w.write_chunk("l1", make_rows("l1", filters))


def test_identity_follows_the_field_metadata():
    ident = identity(RUN.to_json())
    recipe = {f.name for f in dataclasses.fields(Recipe)}
    # Every recipe field identifies the run except the start photo's path (its sha256 does).
    assert {k.split(".")[0] for k in ident} >= recipe - {"init"}
    assert "init" not in ident and "init_sha256" in ident
    # Of the execution only the dtype: the others change how fast, not the picture.
    for f in dataclasses.fields(Execution):
        assert (f.name in ident) == (f.metadata.get("identity", True) is not False)
    assert "dtype" in ident and "batch" not in ident and "conv" not in ident
    assert "layers" not in ident and "filters" not in ident and ident["weights"] == RUN.weights
    # Nested fields are named as --set names them.
    assert ident["optimizer.lr"] == 1.0 and ident["size"] == list(HW)


def test_read_config_round_trips_and_reads_every_layout():
    r = RunConfig(
        PRESETS["lucid"].replace(size=(32, 48), init="cat.png", init_sha256="ab" * 32),
        Execution(dtype="bfloat16", batch=8),
        layers=("block1_conv1",),
        filters=(0, 3),
    )
    assert read_config(json.loads(json.dumps(r.to_json()))) == r
    # Format 2 of earlier versions: the recipe without init, execution flat beside it.
    rec = r.recipe.to_json()
    old = {"recipe": {k: v for k, v in rec.items() if k != "init"}, **r.execution.to_json()}
    old |= {"init": "cat.png", "model": "vgg16", "weights": r.weights}
    old |= {"layers": ["block1_conv1"], "filters": [0, 3]}
    assert read_config(old) == r and as_current(old) == r.to_json()
    # A recipe field added since an atlas was written takes its default.
    del old["recipe"]["redirect_relu"]
    assert read_config(old).recipe.redirect_relu == 0 == Recipe().redirect_relu
    # Format 1: flat, a preset name, step_size.
    with h5py.File(FIXTURE_V1, "r") as f:
        v1 = read_config(json.loads(f.attrs["config"]))
    assert v1.recipe == PRESETS["classic"].replace(steps=3, size=(32, 32))
    assert v1.layers == ("block1_conv1", "block2_conv1") and v1.filters == "0:3"
    with pytest.raises(VizjaxError, match="not a run config vizjax can read"):
        read_config({"recipe": {"steps": "many"}, "execution": {}})


def test_runs_that_differ_only_in_how_fast_share_an_atlas_and_merge(tmp_path):
    """What a resumed run accepts, merge accepts (they had two different key lists)."""
    out = tmp_path / "atlas.h5"
    p1, p2 = part_path(out, 0, 2), part_path(out, 1, 2)
    fast = dataclasses.replace(
        RUN, execution=Execution(conv="xla", segment=2, unroll=1, batch=3), filters=(2, 3)
    )
    write(p1, RUN.to_json(), (0, 1))
    write(p2, fast.to_json(), (2, 3))
    with AtlasWriter(p1, ATTRS, fast.to_json()) as w:  # the resumed run accepts it ...
        assert w.begin_layer("l1", 6, [0, 1], HW, STEPS) == []
    merge_atlases(out, [p1, p2])  # ... so merge does too
    with open_atlas(out) as a:
        assert sorted(a.layers["l1"].completed()) == [0, 1, 2, 3]
    slower = dataclasses.replace(RUN, execution=Execution(dtype="bfloat16"))
    write(tmp_path / "bf16.h5", slower.to_json())
    refusal = r"cannot merge .*bf16.h5 with .*: dtype bfloat16 in bf16.h5, float32 in atlas.part"
    with pytest.raises(AtlasError, match=refusal):
        merge_atlases(tmp_path / "m.h5", [p1, tmp_path / "bf16.h5"])


def test_an_atlas_written_with_an_old_config_layout_is_resumed(tmp_path):
    rec = RUN.recipe.to_json()
    old = {"recipe": {k: v for k, v in rec.items() if k != "init"}, **RUN.execution.to_json()}
    old |= {"init": None, "model": "vgg16", "weights": RUN.weights, "layers": ["l1"]}
    write(tmp_path / "old.h5", old)
    with AtlasWriter(tmp_path / "old.h5", ATTRS, RUN.to_json()) as w:
        assert w.begin_layer("l1", 6, [0, 1, 2], HW, STEPS) == [2]
    assert differences(old, RUN.to_json()) == []


def test_a_refusal_names_only_what_differs_in_one_short_line(tmp_path):
    big = tmp_path / "a.h5"
    write(big, dataclasses.replace(RUN, recipe=RUN.recipe.replace(size=(48, 48))).to_json())
    before = big.read_bytes()
    with pytest.raises(AtlasError) as e:
        AtlasWriter(big, ATTRS, RUN.to_json()).__enter__()
    msg = str(e.value)
    assert msg == (
        f"refusing to mix runs in {big}: size 48x48 in the atlas, 8x8 now; write to another --out"
    )
    assert big.read_bytes() == before
    # Another recipe: a few fields, each value short, then how many more; still one line.
    lucid = dataclasses.replace(RUN, recipe=PRESETS["lucid"].replace(steps=STEPS, size=HW))
    with pytest.raises(AtlasError) as e:
        AtlasWriter(big, ATTRS, lucid.to_json()).__enter__()
    msg = str(e.value).replace(str(big), "a.h5")
    assert "\n" not in msg and len(msg) < 300, msg
    assert "display deprocess in the atlas, clip now" in msg and " more; write to another" in msg
    assert "recipe" not in msg and "{" not in msg  # no JSON recipes


def _old_layout(run: RunConfig) -> dict:
    """``run`` as format 2 of earlier versions stored it (execution flat, init beside the recipe)."""
    rec = run.recipe.to_json()
    old = {"recipe": {k: v for k, v in rec.items() if k != "init"}, **run.execution.to_json()}
    return old | {"init": rec["init"], "model": run.model, "weights": run.weights}


def test_merge_accepts_old_parts_that_differ_only_in_the_conv_algorithm(tmp_path):
    """Before one identity, run.py let ``conv``/``segment``/``unroll`` differ and merge did not."""
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    write(a, _old_layout(RUN), (0, 1))
    write(b, _old_layout(dataclasses.replace(RUN, execution=Execution(conv="winograd"))), (2,))
    merge_atlases(tmp_path / "m.h5", [a, b])
    with open_atlas(tmp_path / "m.h5") as m:
        assert sorted(m.layers["l1"].completed()) == [0, 1, 2]
