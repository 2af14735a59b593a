"""Tests of vizjax.atlas (format v2) and vizjax.schema: layout, reader, what a writer takes,
resume, refusals, single writer, exemplars. Kill -9 at any moment: tests/test_atlas_crash.py;
merge and format 1: tests/test_atlas_merge.py."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
from atlas_checks import (  # tests/atlas_checks.py (pytest puts tests/ on sys.path)
    ROOT,
    assert_rows_equal,
    done_rows_h5,
    referenced_only,
    run_python,
)
from atlas_scenarios import (  # tests/atlas_scenarios.py
    ATTRS,
    CONFIG,
    FIELDS,
    HW,
    PLAN,
    STEPS,
    expected_row,
    make_rows,
    write_run,
)

import vizjax.atlas
from vizjax import schema
from vizjax.atlas import AtlasWriter, merge_atlases, open_atlas, sidecar_path, write_exemplars
from vizjax.atlas.segment import _create_segment
from vizjax.errors import AtlasError, VizjaxError

# ---------------------------------------------------------------------------------------------
# schema and layout


#: The documentation page that holds the schema and the plain-h5py example.
FORMAT_PAGE = ROOT / "docs" / "pages" / "atlas-format.md"


def test_docs_schema_is_generated_from_schema_module():
    page = FORMAT_PAGE.read_text()
    assert schema.markdown() in page, f"run python -m vizjax.schema and paste it into {FORMAT_PAGE}"
    for field in (*schema.ROW_FIELDS, *schema.INDEX_DATASETS, *schema.EXEMPLAR_FIELDS):
        assert f"| `{field.name}` |" in page


def test_layout_plain_h5py(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out)
    with h5py.File(out, "r") as f:
        a = f.attrs
        assert a["format"] == "vizjax-atlas" and a["format_version"] == 2
        for k, v in ATTRS.items():
            assert a[k] == v
        assert json.loads(a["config"]) == CONFIG
        assert len(a["created"]) == 20 and a["created"].endswith("Z")
        assert list(f["layers"]) == ["l1", "l2"]
        g = f["layers/l1"]
        assert dict(g.attrs) | {"segments": None} == {
            "num_filters": 6,
            "k": 1,
            "image_height": 8,
            "image_width": 8,
            "steps": STEPS,
            "image_channels": 3,
            "segments": None,
        }
        [[seg_name, start, stop]] = json.loads(g.attrs["segments"])
        assert (start, stop) == (0, 6)
        dims = {"K": 1, "H": 8, "W": 8, "D": 3, "T": STEPS, "C": 6}
        for field in schema.ROW_FIELDS:
            d = g[field.name]
            assert d.is_virtual, field.name
            assert d.dtype == np.dtype(field.dtype), field.name
            assert d.shape == (6, *schema.row_shape(field, dims)), field.name
            [src] = d.virtual_sources()
            # relative to the index, in a folder named by the atlas' id
            assert src.file_name == f"atlas.{f.attrs['atlas_id'][:8]}.d/{seg_name}"
            assert f.attrs["data_folder"] == src.file_name.split("/")[0]
        for field in schema.INDEX_DATASETS:
            assert not g[field.name].is_virtual and g[field.name].shape == (6,)
    # The segment: contiguous, uncompressed, allocated datasets.
    with h5py.File(vizjax.atlas.data_dir(tmp_path / "atlas.h5") / seg_name, "r") as s:
        assert s.attrs["format"] == "vizjax-atlas-segment" and s.attrs["layer"] == "l1"
        for field in schema.ROW_FIELDS:
            d = s[field.name]
            assert d.chunks is None and d.compression is None and d.id.get_offset() is not None
    assert_rows_equal(
        done_rows_h5(out), {n: {f: expected_row(n, f) for f in fs} for n, (_, fs) in PLAN.items()}
    )
    referenced_only(out)


def test_docs_h5py_snippet_runs_on_a_v2_atlas(tmp_path, monkeypatch):
    page = FORMAT_PAGE.read_text()
    section = page[page.index("## Reading an atlas without vizjax") :]
    code = section[section.index("```python\n") + 10 : section.index("```\n", 20)]
    write_run(tmp_path / "atlas.h5", plan={"block4_conv1": (6, [5, 0, 3])})
    other = tmp_path / "elsewhere"
    other.mkdir()
    folder = vizjax.atlas.data_dir(tmp_path / "atlas.h5")
    shutil.move(tmp_path / "atlas.h5", other / "atlas.h5")  # the index and its folder move
    shutil.move(folder, other / folder.name)
    monkeypatch.chdir(other)
    scope: dict = {}
    exec(code, scope)  # noqa: S102 -- the page's own example, as a user would run it
    np.testing.assert_array_equal(scope["filters"], [5, 0, 3])
    want = make_rows("block4_conv1", [5, 0, 3])
    np.testing.assert_array_equal(scope["images"], want["images"])
    np.testing.assert_array_equal(scope["final"], want["objective"][:, -1])
    np.testing.assert_array_equal(scope["dead"], [False, True, True])
    assert scope["config"] == CONFIG


def test_layers_are_listed_in_the_networks_order(tmp_path):
    # Written in another order than the network's: the reader lists the model's order, for VGG16
    # and AlexNet (whose pools sit between its convolutions); unknown names keep their order.
    plan = {n: (6, [0, 1]) for n in ("block2_conv1", "block1_conv2", "block1_pool", "block1_conv1")}
    write_run(tmp_path / "vgg.h5", plan=plan)
    with open_atlas(tmp_path / "vgg.h5") as a:
        assert list(a.layers) == ["block1_conv1", "block1_conv2", "block1_pool", "block2_conv1"]
    write_run(tmp_path / "made-up.h5", plan={"l2": (4, [0]), "l1": (6, [0])})
    with open_atlas(tmp_path / "made-up.h5") as a:
        assert list(a.layers) == ["l2", "l1"]  # not the model's layers: as written
    order = vizjax.atlas.reader.network_order
    assert order(["conv2", "pool1", "conv1"], "alexnet") == ["conv1", "pool1", "conv2"]
    assert order(["x", "block1_conv2", "block1_conv1"], "vgg16") == [
        *("block1_conv1", "block1_conv2", "x")
    ]
    assert order(["b", "a"], "a model vizjax does not know") == ["b", "a"]
    assert order(["b", "a"], None) == ["b", "a"]


def test_atlas_names_with_percent_and_spaces(tmp_path):
    out = tmp_path / "run %b 100%.h5"  # HDF5 reads % in VDS source names as a pattern
    write_run(out, plan={"l1": (6, [2, 0])})
    assert_rows_equal(done_rows_h5(out), {"l1": {f: expected_row("l1", f) for f in (0, 2)}})


def test_segment_is_sparse_and_a_commit_touches_no_index(tmp_path):
    out = tmp_path / "atlas.h5"
    with AtlasWriter(out, ATTRS, CONFIG) as w:
        w.begin_layer("big", 512, range(512), (64, 64), STEPS)
        [seg] = list(vizjax.atlas.data_dir(out).glob("*.h5"))
        st = seg.stat()
        assert st.st_size > 512 * 64 * 64 * 3 * 5  # images + raw allocated...
        assert st.st_blocks * 512 < st.st_size / 20  # ...but not written: sparse
        index = out.stat()
        rows = make_rows("big", [7, 8], num_filters=512)
        rows["images"] = np.zeros((2, 1, 64, 64, 3), np.uint8)
        rows["raw"] = np.ones((2, 1, 64, 64, 3), np.float32)
        w.write_chunk("big", rows)
        assert (out.stat().st_ino, out.stat().st_mtime_ns) == (index.st_ino, index.st_mtime_ns)
        with open_atlas(out) as a:  # the rows are visible without an index rewrite
            np.testing.assert_array_equal(a.layers["big"].completed(), [7, 8])
            assert a.layers["big"].raw[8].min() == 1


# ---------------------------------------------------------------------------------------------
# the reader


def test_reader_api(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [5, 1, 3, 0]), "l2": (4, [0, 1, 2, 3])})
    with open_atlas(out) as atlas:
        assert atlas.format_version == 2 and atlas.config == CONFIG
        assert atlas.attrs["weights_sha256"] == ATTRS["weights_sha256"]
        l1 = atlas.layers["l1"]
        assert (l1.name, l1.num_filters, l1.k, l1.image_shape, l1.steps) == ("l1", 6, 1, HW, 3)
        np.testing.assert_array_equal(l1.filters, [5, 1, 3, 0])  # row order = request order
        np.testing.assert_array_equal(l1.completed(), [5, 1, 3, 0])
        want = make_rows("l1", [5, 1, 3, 0])
        assert l1.row(3) == 2
        np.testing.assert_array_equal(l1.image(3), want["images"][2, 0])
        np.testing.assert_array_equal(l1.images_of(3), want["images"][2])
        # Lazy fields: by name or attribute, numpy-style indexing of the rows.
        raw = l1["raw"]
        assert raw.shape == (4, 1, 8, 8, 3) and raw.dtype == np.float32 and len(raw) == 4
        np.testing.assert_array_equal(raw[-1], want["raw"][3])
        np.testing.assert_array_equal(l1.raw[1:3], want["raw"][1:3])
        np.testing.assert_array_equal(l1.raw[::2, 0, 0, 0], want["raw"][::2, 0, 0, 0])
        np.testing.assert_array_equal(l1.objective[:, -1], want["objective"][:, -1])
        np.testing.assert_array_equal(l1.objective[[3, 0, 3]], want["objective"][[3, 0, 3]])
        np.testing.assert_array_equal(
            l1.hf_energy[np.array([1, 0, 0, 1], bool)], want["hf_energy"][[0, 3]]
        )
        np.testing.assert_array_equal(np.asarray(l1.dead), [False, False, True, True])
        np.testing.assert_array_equal(l1.zero_start_grad[...], want["zero_start_grad"])
        with pytest.raises(AtlasError, match="filter 2 of layer l1 is not in"):
            l1.image(2)
        with pytest.raises(AtlasError, match="k=1"):
            l1.image(3, k=1)
        with pytest.raises(KeyError, match="no field 'nope'"):
            l1["nope"]
        # Analysis.
        d = l1.to_numpy()
        assert set(d) == {*FIELDS, "filters", "selectivity", "specificity"}
        for k in FIELDS:
            np.testing.assert_array_equal(d[k], want[k] if k != "dead" else [0, 0, 1, 1], k)
        fid = l1.fidelity
        np.testing.assert_array_equal(fid["filter"], [5, 1, 3, 0])
        np.testing.assert_allclose(fid["final_activation"], want["final_activation"][:, 0])
        np.testing.assert_array_equal(fid["nonfinite"], [True, True, False, False])
        am = want["activation_matrix"]  # (4, 1, 6)
        expect = schema.index_datasets(np.array([5, 1, 3, 0]), np.ones(4, bool), am)
        np.testing.assert_array_equal(fid["selectivity"], expect["selectivity"])
        np.testing.assert_allclose(fid["specificity"], expect["specificity"], rtol=1e-6)
        np.testing.assert_array_equal(l1.activation_matrix, am)
        near = l1.nearest(5, k=2)
        cols = am[:, 0, :].astype(np.float64)
        cos = {
            g: cols[:, 5] @ cols[:, g] / np.linalg.norm(cols[:, 5]) / np.linalg.norm(cols[:, g])
            for g in (1, 3, 0)
        }
        assert [g for g, _ in near] == sorted(cos, key=lambda g: -cos[g])[:2]
        assert near[0][1] == pytest.approx(cos[near[0][0]])
        assert l1.exemplars(0) is None


def test_index_datasets_definition():
    # Channel f's activations over the images of rows (filters 0, 1, 2); row 3 is not done.
    a = np.array([[[4, 0, 1]], [[1, 2, 1]], [[1, 3, 1]], [[9, 9, 9]]], np.float32)
    d = schema.index_datasets(np.array([0, 1, 2, 0]), np.array([1, 1, 1, 0], bool), a)
    np.testing.assert_array_equal(d["selectivity"], [True, False, False, False])
    np.testing.assert_allclose(d["specificity"][:3], [4 / 1, 2 / 1.5, 1 / 1])
    assert np.isnan(d["specificity"][3])


def test_xarray(tmp_path, monkeypatch):
    pytest.importorskip("xarray")
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [2, 4])})
    with open_atlas(out) as atlas:
        ds = atlas.layers["l1"].to_xarray()
        assert ds["images"].dims == ("filter", "k", "y", "x", "rgb")
        assert ds["activation_matrix"].dims == ("filter", "k", "channel")
        assert ds["objective"].dims == ("filter", "step") and ds.sizes["step"] == STEPS + 1
        assert ds["filter"].values.tolist() == [2, 4]
        np.testing.assert_array_equal(ds["raw"].sel(filter=4), make_rows("l1", [4])["raw"][0])
        assert json.loads(ds.attrs["config"]) == CONFIG and ds.attrs["done"] == 2
        monkeypatch.setitem(sys.modules, "xarray", None)
        with pytest.raises(VizjaxError, match=r"pip install vizjax\[xarray\]"):
            atlas.layers["l1"].to_xarray()


def test_reader_refuses_missing_foreign_and_incomplete(tmp_path):
    with pytest.raises(AtlasError, match="no atlas at"):
        open_atlas(tmp_path / "missing.h5")
    text = tmp_path / "notes.h5"
    text.write_text("hello")
    with pytest.raises(AtlasError, match="exists and is not a vizjax atlas"):
        open_atlas(text)
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [0])})
    (tmp_path / "sub").mkdir()
    shutil.copy(out, tmp_path / "sub" / "alone.h5")  # the index without its data folder
    folder = vizjax.atlas.data_dir(out).name
    with pytest.raises(AtlasError, match=rf"{folder}/l1.000001.h5 is missing .*copy or move both"):
        open_atlas(tmp_path / "sub" / "alone.h5")
    with h5py.File(out, "r+") as f:
        f.attrs["format_version"] = 3
    with pytest.raises(AtlasError, match="format version 3"):
        open_atlas(out)
    with pytest.raises(AtlasError, match="format version 3"):
        AtlasWriter(out, ATTRS, CONFIG).__enter__()


# ---------------------------------------------------------------------------------------------
# what write_chunk takes


def test_chunk_forms_fills_and_k(tmp_path):
    out = tmp_path / "atlas.h5"
    with AtlasWriter(out, ATTRS, CONFIG) as w:
        w.begin_layer("l1", 6, range(6), HW, STEPS)
        # An object with attributes, only some fields: the others get their fill value.
        full = make_rows("l1", [0, 1])
        w.write_chunk("l1", SimpleNamespace(filters=full["filters"], images=full["images"]))
        # Format-1 shaped engine results: no K axis, `dead` = zero gradient at the start.
        v1 = make_rows("l1", [2, 3])
        w.write_chunk(
            "l1",
            SimpleNamespace(
                filters=v1["filters"],
                images=v1["images"][:, 0],
                raw=v1["raw"][:, 0],
                objective=np.array([[1, 2, 3, 0], [1, 2, 3, 4]], np.float32),
                dead=np.array([True, False]),
            ),
        )
        with pytest.raises(AtlasError, match=r"raw has shape \(1, 1, 4, 8, 3\), expected"):
            w.write_chunk("l1", {"filters": [4], "raw": np.zeros((1, 1, 4, 8, 3))})
        with pytest.raises(AtlasError, match=r"unknown fields \['colour'\]"):
            w.write_chunk("l1", {"filters": [4], "colour": np.zeros(1)})
        with pytest.raises(AtlasError, match="done is set by the writer"):
            w.write_chunk("l1", {"filters": [4], "done": [True]})
        with pytest.raises(AtlasError, match=r"filters \[7\] that were not begun"):
            w.write_chunk("l1", {"filters": [7]})
        with pytest.raises(AtlasError, match="layer l9 was not begun"):
            w.write_chunk("l9", {"filters": [0]})
        # K = 2 images per filter, in another layer.
        w.begin_layer("l2", 4, [1], HW, STEPS, k=2)
        w.write_chunk("l2", make_rows("l2", [1], k=2))
        with pytest.raises(AtlasError, match="k=1, 3 steps"):
            w.begin_layer("l2", 4, [1], HW, STEPS)
    with open_atlas(out) as atlas:
        l1 = atlas.layers["l1"]
        np.testing.assert_array_equal(l1.completed(), [0, 1, 2, 3])
        np.testing.assert_array_equal(l1.images[:2], full["images"])
        assert np.isnan(l1.raw[:2]).all() and np.isnan(l1.final_activation[:2]).all()
        assert not l1.dead[:2].any() and not l1.zero_start_grad[:2].any()
        np.testing.assert_array_equal(l1.images[2:4], v1["images"])
        np.testing.assert_array_equal(l1.zero_start_grad[2:4], [True, False])
        np.testing.assert_array_equal(l1.dead[2:4], [True, False])  # objective[:, -1] == 0
        l2 = atlas.layers["l2"]
        assert l2.k == 2 and l2.images.shape == (1, 2, 8, 8, 3)
        np.testing.assert_array_equal(l2.image(1, k=1), make_rows("l2", [1], k=2)["images"][0, 1])


def test_write_fields_and_finish_layer(tmp_path):
    out = tmp_path / "atlas.h5"
    with AtlasWriter(out, ATTRS, CONFIG) as w:
        w.begin_layer("l1", 6, range(4), HW, STEPS)
        w.write_chunk("l1", {"filters": [0, 1, 2], "images": make_rows("l1", range(3))["images"]})
        w.write_fields("l1", [2, 0], {"final_activation": np.array([[0.0], [5.0]])})
        am = np.random.default_rng(0).random((2, 1, 6)).astype(np.float32)
        w.write_fields("l1", [0, 1], {"activation_matrix": am})
        with pytest.raises(AtlasError, match="filter 3 of layer l1 is not done"):
            w.write_fields("l1", [3], {"robustness": np.ones((1, 1))})
        assert w.layer_rows("l1").tolist() == [0, 1, 2, 3]
        with pytest.raises(AtlasError, match=r"shape \(2,\), expected \(4,\)"):
            w.finish_layer("l1", {"specificity": np.ones(2)})
        w.finish_layer("l1", {"specificity": np.arange(4)})
        with h5py.File(out, "r") as f:
            np.testing.assert_array_equal(f["layers/l1/specificity"][...], [0, 1, 2, 3])
    with open_atlas(out) as atlas:
        l1 = atlas.layers["l1"]
        np.testing.assert_array_equal(l1.final_activation[[0, 2], 0], [5, 0])
        np.testing.assert_array_equal(l1.dead[:3], [False, False, True])
        np.testing.assert_array_equal(l1.activation_matrix[:2], am)
        assert np.isnan(l1.activation_matrix[2]).all()
        np.testing.assert_array_equal(l1.images[:3], make_rows("l1", range(3))["images"])


# ---------------------------------------------------------------------------------------------
# resume, refusals, single writer


def test_resume_adds_a_segment_for_new_filters(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [4, 0])}, config={**CONFIG, "filters": [4, 0]})
    with AtlasWriter(out, ATTRS, {**CONFIG, "filters": None, "batch": 8}) as w:
        assert w.begin_layer("l1", 6, [0, 1, 4, 5, 1], HW, STEPS) == [1, 5]
        w.write_chunk("l1", make_rows("l1", [1, 5]))
    with h5py.File(out, "r") as f:
        assert [s for s, _, _ in json.loads(f["layers/l1"].attrs["segments"])] == [
            "l1.000001.h5",
            "l1.000002.h5",
        ]
    with open_atlas(out) as atlas:
        l1 = atlas.layers["l1"]
        np.testing.assert_array_equal(l1.filters, [4, 0, 1, 5])
        assert l1.done.all()
        assert atlas.config["filters"] == [4, 0]  # the file keeps the first run's settings
    assert_rows_equal(done_rows_h5(out), {"l1": {f: expected_row("l1", f) for f in (0, 1, 4, 5)}})


def test_next_writer_removes_what_killed_writers_left(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [0])})
    folder = vizjax.atlas.data_dir(out)
    litter = [folder / ".tmp-l1.000008.h5", tmp_path / "atlas.h5.tmp-99"]
    for p in litter:
        p.write_bytes(b"torn")
    # A segment a killed writer of this atlas made (its id) goes; one of another atlas (an index
    # moved away) and a file that is not a segment stay: a writer deletes only its own files.
    with h5py.File(out, "r") as f:
        atlas_id = f.attrs["atlas_id"]
    geometry = (6, 1, HW, STEPS, 3)
    _create_segment(folder / "l1.000007.h5", "l1", geometry, np.array([3]), atlas_id)
    litter.append(folder / "l1.000007.h5")
    foreign = [folder / "l1.000005.h5", folder / "l1.000006.h5"]
    _create_segment(foreign[0], "l1", geometry, np.array([3]), "another-atlas")
    foreign[1].write_bytes(b"torn")
    keep = sidecar_path(out, "exemplars.state.npz")
    keep.write_bytes(b"state of another module")
    with AtlasWriter(out, ATTRS, CONFIG) as w:
        assert w.begin_layer("l1", 6, [0, 1], HW, STEPS) == [1]
    assert not any(p.exists() for p in litter) and keep.exists()
    assert all(p.exists() for p in foreign)
    for p in foreign:
        p.unlink()
    referenced_only(out)
    with h5py.File(out, "r") as f:  # numbering goes on after the highest name seen
        assert json.loads(f["layers/l1"].attrs["segments"])[1][0] == "l1.000009.h5"
    for bad in ("l1.000001.h5", "exemplars.l1.h5", ".tmp-x", "a/b", ""):
        with pytest.raises(ValueError):
            sidecar_path(out, bad)


def test_shape_mismatches_refused(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [0, 1])})
    with AtlasWriter(out, ATTRS, CONFIG) as w:
        with pytest.raises(AtlasError, match="layer l1 .* 8x8 images, k=1, 3 steps.* 16x16 images"):
            w.begin_layer("l1", 6, [2], (16, 16), STEPS)
        with pytest.raises(AtlasError, match="has filters 0..5; got 6"):
            w.begin_layer("l1", 6, [6], HW, STEPS)
        # Any text is a layer name (tests/test_names.py); only one that cannot be stored is not.
        with pytest.raises(AtlasError, match="must not be empty"):
            w.begin_layer("", 6, [0], HW, STEPS)


def test_config_mismatch_refused_and_file_untouched(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [0])}, config={**CONFIG, "steps": 20})
    before = out.read_bytes()
    with pytest.raises(
        AtlasError,
        match=r"refusing to mix runs in .*atlas.h5: steps 20 in the atlas, 3 now; write to another",
    ):
        AtlasWriter(out, ATTRS, CONFIG).__enter__()
    with pytest.raises(AtlasError, match=r": lr 0.05 in the atlas, \(unset\) now;"):
        AtlasWriter(
            out, ATTRS, {k: v for k, v in CONFIG.items() if k != "lr"} | {"steps": 20}
        ).__enter__()
    other_weights = {**ATTRS, "weights_sha256": "cd" * 32}
    sha = r"weights_sha256 abababababab\.\.\. in the atlas, cdcdcdcdcdcd\.\.\. now; write"
    with pytest.raises(AtlasError, match=f"refusing to mix runs in .*: {sha}"):
        AtlasWriter(out, other_weights, {**CONFIG, "steps": 20}).__enter__()
    assert out.read_bytes() == before
    # Volatile keys may differ; and the refusals above released the lock.
    with AtlasWriter(out, ATTRS, {**CONFIG, "steps": 20, "batch": 64, "quiet": True}):
        pass


def test_non_atlas_and_unwritable_paths_refused(tmp_path):
    text = tmp_path / "notes.h5"
    text.write_text("not hdf5")
    with pytest.raises(AtlasError, match=r"notes.h5 exists and is not a vizjax atlas"):
        AtlasWriter(text, ATTRS, CONFIG).__enter__()
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["x"] = 1
    with pytest.raises(AtlasError, match="exists and is not a vizjax atlas"):
        AtlasWriter(other, ATTRS, CONFIG).__enter__()
    assert text.read_text() == "not hdf5"
    with pytest.raises(AtlasError, match="cannot write atlas .*directory .* does not exist"):
        AtlasWriter(tmp_path / "nope" / "atlas.h5", ATTRS, CONFIG).__enter__()
    (tmp_path / "file").write_text("")
    with pytest.raises(AtlasError, match="cannot write atlas .*is not a directory"):
        AtlasWriter(tmp_path / "file" / "atlas.h5", ATTRS, CONFIG).__enter__()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_read_only_directory_refused(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        with pytest.raises(AtlasError, match="cannot write atlas .*Permission denied"):
            AtlasWriter(ro / "atlas.h5", ATTRS, CONFIG).__enter__()
    finally:
        ro.chmod(0o755)


def test_second_writer_refused(tmp_path):
    out = tmp_path / "atlas.h5"
    with AtlasWriter(out, ATTRS, CONFIG):
        with pytest.raises(
            AtlasError, match=rf"being written by another process \(pid {os.getpid()}\)"
        ):
            AtlasWriter(out, ATTRS, CONFIG).__enter__()
        with pytest.raises(AtlasError, match="being written by another process"):
            merge_atlases(out, [out])
    with AtlasWriter(out, ATTRS, CONFIG):  # released on exit
        pass


PAUSED_WRITER = """
import sys
import vizjax.atlas as A
import vizjax.durable
from atlas_scenarios import ATTRS, CONFIG, HW, STEPS, make_rows

def pause(point):  # between a chunk's synced data and its done bytes
    if point == "chunk.synced":
        print("paused", flush=True)
        sys.stdin.readline()

with A.AtlasWriter(sys.argv[1], ATTRS, CONFIG) as w:
    todo = w.begin_layer("l1", 6, range(6), HW, STEPS)
    w.write_chunk("l1", make_rows("l1", todo[:2]))
    vizjax.durable._fault = pause
    w.write_chunk("l1", make_rows("l1", todo[2:4]))
"""


def test_reader_during_a_write_sees_only_complete_rows(tmp_path):
    out = tmp_path / "atlas.h5"
    proc = run_python(
        PAUSED_WRITER, str(out), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "paused"
        with pytest.raises(
            AtlasError, match=rf"being written by another process \(pid {proc.pid}\)"
        ):
            AtlasWriter(out, ATTRS, CONFIG).__enter__()
        # Rows 2 and 3 hold their data but are not done: readers do not see them.
        early = open_atlas(out)
        np.testing.assert_array_equal(early.layers["l1"].completed(), [0, 1])
        assert_rows_equal(done_rows_h5(out), {"l1": {f: expected_row("l1", f) for f in (0, 1)}})
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.wait(timeout=60) == 0
    finally:
        proc.kill()
        proc.wait()
    np.testing.assert_array_equal(early.layers["l1"].completed(), [0, 1])  # its snapshot
    early.close()
    with open_atlas(out) as atlas:
        np.testing.assert_array_equal(atlas.layers["l1"].completed(), [0, 1, 2, 3])


# ---------------------------------------------------------------------------------------------
# exemplars


def exemplar_arrays(c: int = 6, top: int = 3, s: int = 4) -> tuple[dict, dict]:
    rng = np.random.default_rng(5)
    paths = np.array([[f"img{i}_{j}.jpg" for j in range(top)] for i in range(c)], dtype=object)
    paths[1, 2] = ""  # fewer images than top for channel 1
    arrays = {
        "paths": paths,
        "activation": np.sort(rng.random((c, top)).astype(np.float32))[:, ::-1],
        "position": rng.integers(0, 14, (c, top, 2)).astype(np.int32),
        "box": rng.integers(0, 224, (c, top, 4)).astype(np.int32),
        "crops": rng.integers(0, 256, (c, top, s, s, 3)).astype(np.uint8),
    }
    attrs = {
        "images_dir": "/data/imgs",
        "listing_sha256": "ef" * 32,
        "n_images": 18,
        "n_skipped": 1,
        "top": top,
        "input_size": 224,
        "receptive_field": 5,
        "crop_size": s,
    }
    return arrays, attrs


def test_exemplars(tmp_path):
    out = tmp_path / "atlas.h5"
    write_run(out, plan={"l1": (6, [0, 1])})
    arrays, attrs = exemplar_arrays()
    got = write_exemplars(out, "l1", arrays, attrs)
    assert got == vizjax.atlas.data_dir(out) / "exemplars.l1.h5"
    with h5py.File(out, "r") as f:  # plain h5py through the external link
        assert f["layers/l1/exemplars/paths"][0, 1].decode() == "img0_1.jpg"
        assert f["layers/l1/exemplars"].attrs["top"] == 3
    with open_atlas(out) as atlas:
        e = atlas.layers["l1"].exemplars(1)
        assert e["paths"] == ["img1_0.jpg", "img1_1.jpg"] and e["images_dir"] == "/data/imgs"
        np.testing.assert_array_equal(e["crops"], arrays["crops"][1, :2])
        np.testing.assert_array_equal(e["box"], arrays["box"][1, :2])
        assert atlas.layers["l1"].exemplar_attrs["n_skipped"] == 1
    # Through an open writer (its lock), and kept by later index rewrites.
    with AtlasWriter(out, ATTRS, CONFIG) as w:
        arrays["activation"][:] = 0
        w.write_exemplars("l1", arrays, attrs)
        w.begin_layer("l1", 6, [2], HW, STEPS)
    with open_atlas(out) as atlas:
        assert (atlas.layers["l1"].exemplars(3)["activation"] == 0).all()
    with pytest.raises(AtlasError, match=r"missing fields \['crops'\]"):
        write_exemplars(out, "l1", {k: v for k, v in arrays.items() if k != "crops"}, attrs)
    with pytest.raises(AtlasError, match="5 channels, the layer has 6"):
        write_exemplars(out, "l1", exemplar_arrays(c=5)[0], attrs)
    with pytest.raises(AtlasError, match=r"missing attributes \['n_images'\]"):
        write_exemplars(out, "l1", arrays, {k: v for k, v in attrs.items() if k != "n_images"})
    with pytest.raises(AtlasError, match="no atlas at"):
        write_exemplars(tmp_path / "none.h5", "l1", arrays, attrs)
