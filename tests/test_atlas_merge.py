"""Tests of vizjax.atlas joining atlases: merge of parts by hard links, and format 1 atlases
(read with format 2 names, upgraded, resumed, merged). Kill -9 while doing either:
tests/test_atlas_crash.py."""

from __future__ import annotations

import json
import shutil

import h5py
import numpy as np
import pytest
from atlas_checks import (  # tests/atlas_checks.py (pytest puts tests/ on sys.path)
    EXPECTED_MERGE,
    FIXTURE_V1,
    assert_nan_equal,
    assert_rows_equal,
    done_filters,
    done_rows_h5,
    make_parts,
    referenced_only,
    v1_contents,
)
from atlas_scenarios import (  # tests/atlas_scenarios.py
    ATTRS,
    CONFIG,
    FIELDS,
    expected_row,
    make_rows,
    write_run,
)

import vizjax.atlas
from vizjax.atlas import AtlasWriter, merge_atlases, open_atlas, upgrade
from vizjax.errors import AtlasError

# ---------------------------------------------------------------------------------------------
# merge


def test_merge_links_parts_and_resolves_duplicates(tmp_path):
    out, p1, p2 = make_parts(tmp_path)
    part_bytes = {p: p.read_bytes() for p in (p1, p2)}
    merge_atlases(out, [p1, p2])
    assert_rows_equal(done_rows_h5(out), EXPECTED_MERGE)  # filter 5 from the first part
    referenced_only(out)
    with open_atlas(out) as atlas:
        assert atlas.config["filters"] == [4, 0, 2, 5]  # root attributes of the first part
        np.testing.assert_array_equal(atlas.layers["l1"].filters, [4, 0, 2, 5, 1, 3])
    # No data copied: every segment of the output is a hard link to a part's segment.
    inodes = {p.stat().st_ino for p in vizjax.atlas.data_dir(p1).iterdir()}
    inodes |= {p.stat().st_ino for p in vizjax.atlas.data_dir(p2).iterdir()}
    for seg in vizjax.atlas.data_dir(out).glob("*.h5"):
        assert seg.stat().st_ino in inodes and seg.stat().st_nlink == 2
    # A measure written into the merged atlas does not change the parts (the segment is copied).
    with AtlasWriter(out, ATTRS, {**CONFIG, "filters": [4, 0, 2, 5]}) as w:
        w.write_fields("l1", [4], {"robustness": np.full((1, 1), 7.0)})
    with open_atlas(out) as a, open_atlas(p1) as b:
        assert a.layers["l1"].robustness[0, 0] == 7
        assert b.layers["l1"].robustness[0, 0] == make_rows("l1", [4])["robustness"][0, 0]
    assert {p: p.read_bytes() for p in (p1, p2)} == part_bytes
    # Merging into an atlas that is itself a part reuses its segments in place.
    merge_atlases(out, [out, p2])
    got = done_rows_h5(out)
    assert got["l1"][4]["robustness"][0] == 7
    got["l1"][4]["robustness"] = EXPECTED_MERGE["l1"][4]["robustness"]
    assert_rows_equal(got, EXPECTED_MERGE)


def test_merge_refuses_mixed_runs(tmp_path):
    p1, p2 = tmp_path / "a.h5", tmp_path / "b.h5"
    write_run(p1, plan={"l1": (6, [0])})
    write_run(p2, plan={"l1": (6, [1])}, config={**CONFIG, "lr": 0.1})
    with pytest.raises(AtlasError, match=r"cannot merge .*b.h5.*: lr 0.1 in b.h5, 0.05 in a.h5$"):
        merge_atlases(tmp_path / "out.h5", [p1, p2])
    assert not (tmp_path / "out.h5").exists()
    with pytest.raises(AtlasError, match="no atlas at"):
        merge_atlases(tmp_path / "out.h5", [p1, tmp_path / "missing.h5"])


def test_merge_into_an_existing_atlas_keeps_its_rows(tmp_path):
    """Issue 30's case: A holds l1, B holds l2 (one run); B's index and data folder are copied to
    other.h5 and A is merged into it: other.h5 then holds both layers, no row of B's is lost and
    no segment file of B's copy is deleted."""
    (tmp_path / "A").mkdir()
    (tmp_path / "B").mkdir()
    a, b = tmp_path / "A" / "a.h5", tmp_path / "B" / "a.h5"
    write_run(a, plan={"l1": (6, [0, 1])})
    write_run(b, plan={"l2": (4, [0, 1])})
    other = tmp_path / "other.h5"
    shutil.copy2(b, other)
    b_folder = vizjax.atlas.data_dir(b)
    shutil.copytree(b_folder, tmp_path / b_folder.name)
    segments_before = {p.name for p in vizjax.atlas.data_dir(other).glob("*.h5")}
    assert segments_before
    merge_atlases(other, [a])
    got = done_rows_h5(other)
    want = {
        "l1": {f: expected_row("l1", f) for f in (0, 1)},
        "l2": {f: expected_row("l2", f) for f in (0, 1)},
    }
    assert_rows_equal(got, want)
    assert segments_before <= {p.name for p in vizjax.atlas.data_dir(other).glob("*.h5")}
    referenced_only(other)
    with open_atlas(other) as atlas:
        assert sorted(atlas.layers) == ["l1", "l2"]
    # Merging again changes nothing (the atlas at out and the part hold the same rows).
    merge_atlases(other, [a])
    assert_rows_equal(done_rows_h5(other), want)
    # An atlas of another run at out is still refused before anything is written.
    c = tmp_path / "c.h5"
    write_run(c, plan={"l1": (6, [2])}, config={**CONFIG, "lr": 0.1})
    before = c.read_bytes()
    with pytest.raises(AtlasError, match="refusing to replace .*c.h5, an atlas of another run"):
        merge_atlases(c, [a])
    assert c.read_bytes() == before


def test_merge_cli_into_an_existing_atlas(tmp_path, capsys):
    from vizjax.cli import main

    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    write_run(a, plan={"l1": (6, [0])})
    write_run(b, plan={"l2": (4, [3])})
    assert main(["merge", str(b), str(a)]) == 0
    assert "and the rows it held" in capsys.readouterr().out
    assert done_filters(done_rows_h5(b)) == {"l1": [0], "l2": [3]}


# ---------------------------------------------------------------------------------------------
# format 1


def test_v1_fixture_reads_with_v2_names(tmp_path):
    want = v1_contents(FIXTURE_V1)
    with open_atlas(FIXTURE_V1) as atlas:
        assert atlas.format_version == 1 and list(atlas.layers) == ["block1_conv1", "block2_conv1"]
        assert atlas.config["steps"] == 3
        for name, layer in atlas.layers.items():
            assert (layer.k, layer.image_shape, layer.steps) == (1, (32, 32), 3)
            np.testing.assert_array_equal(layer.completed(), [0, 1, 2])
            assert layer.image(1).shape == (32, 32, 3) and layer.image(1).dtype == np.uint8
            assert layer.images_of(2).shape == (1, 32, 32, 3)
            assert layer.raw.shape == (3, 1, 32, 32, 3)
            assert layer.activation_matrix is None and layer.nearest(0) == []
            assert layer.exemplars(0) is None
            d = layer.to_numpy()
            for f in range(3):
                r = layer.row(f)
                for k in FIELDS:
                    np.testing.assert_array_equal(d[k][r], want[name][f][k], err_msg=k)
            assert np.isnan(layer.fidelity["robustness"]).all()
            assert not layer.fidelity["selectivity"].any()


def test_upgrade_round_trip(tmp_path):
    path = tmp_path / "v1.h5"
    shutil.copy(FIXTURE_V1, path)
    want = v1_contents(path)
    assert upgrade(path) is True
    with h5py.File(path, "r") as f:
        assert f.attrs["format_version"] == 2
        with h5py.File(FIXTURE_V1, "r") as v1:
            for k in ("created", "config", "weights_sha256", "preprocessing", "jax_version"):
                assert f.attrs[k] == v1.attrs[k]
    assert_nan_equal(done_rows_h5(path), want)
    assert upgrade(path) is False
    referenced_only(path)


def test_writer_upgrades_v1_and_resumes(tmp_path):
    path = tmp_path / "v1.h5"
    shutil.copy(FIXTURE_V1, path)
    with h5py.File(path, "r") as f:
        attrs = {k: f.attrs[k] for k in ATTRS}
        config = json.loads(f.attrs["config"])
    # A fake format 1 journal entry (a chunk a killed v1 writer did not commit): filter 3.
    journal = tmp_path / "v1.h5.journal"
    journal.mkdir()
    chunk = make_rows("block1_conv1", [3], num_filters=64)
    np.savez(
        journal / "0001.npz",
        layer=np.array("block1_conv1"),
        config=np.array(json.dumps(config)),
        weights_sha256=np.array(attrs["weights_sha256"]),
        filters=chunk["filters"],
        images=np.zeros((1, 32, 32, 3), np.uint8),
        raw=np.ones((1, 32, 32, 3), np.float32),
        objective=np.ones((1, 4), np.float32),
        dead=np.array([True]),
    )
    with pytest.raises(AtlasError, match="refusing to mix runs in .*: steps 3 in the atlas, 9 now"):
        AtlasWriter(path, attrs, {**config, "steps": 9}).__enter__()
    assert path.read_bytes() == FIXTURE_V1.read_bytes()  # refused before upgrading
    with AtlasWriter(path, attrs, config) as w:
        assert w.begin_layer("block1_conv1", 64, range(5), (32, 32), 3) == [4]
    assert not journal.exists()
    with open_atlas(path) as atlas:
        l1 = atlas.layers["block1_conv1"]
        assert atlas.format_version == 2
        np.testing.assert_array_equal(l1.completed(), [0, 1, 2, 3])
        assert l1.raw[l1.row(3)].min() == 1 and l1.zero_start_grad[l1.row(3)]
    with open_atlas(FIXTURE_V1) as v1, open_atlas(path) as v2:
        for f in range(3):
            a, b = v1.layers["block2_conv1"], v2.layers["block2_conv1"]
            np.testing.assert_array_equal(a.images_of(f), b.images_of(f))


def test_merge_of_a_v1_part(tmp_path):
    v2 = tmp_path / "v2.h5"
    with h5py.File(FIXTURE_V1, "r") as f:
        attrs = {k: f.attrs[k] for k in ATTRS}
        config = json.loads(f.attrs["config"])
    with AtlasWriter(v2, attrs, config) as w:
        w.begin_layer("block1_conv1", 64, [2, 3], (32, 32), 3)
        w.write_chunk("block1_conv1", {"filters": [3], "objective": np.ones((1, 4))})
    merge_atlases(tmp_path / "out.h5", [FIXTURE_V1, v2])
    with open_atlas(tmp_path / "out.h5") as atlas:
        np.testing.assert_array_equal(atlas.layers["block1_conv1"].completed(), [0, 1, 2, 3])
        np.testing.assert_array_equal(atlas.layers["block2_conv1"].completed(), [0, 1, 2])
    assert_nan_equal(
        {
            k: {f: r for f, r in v.items() if f < 3}
            for k, v in done_rows_h5(tmp_path / "out.h5").items()
        },
        v1_contents(FIXTURE_V1),
    )
