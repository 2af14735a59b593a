"""schema: the one table of what an atlas holds: shapes from symbols, fill values, `dead`, the
per-layer selectivity/specificity, and the generated documentation."""

import math
import re

import numpy as np
import pytest

from vizjax import schema

DIMS = {"K": 2, "H": 8, "W": 6, "D": 3, "T": 5, "C": 3, "top": 4, "S": 7}


def test_row_shapes_from_symbols():
    f = schema.ROW_FIELD
    assert schema.row_shape(f["filters"], DIMS) == ()
    assert schema.row_shape(f["images"], DIMS) == (2, 8, 6, 3)
    assert schema.row_shape(f["raw"], {**DIMS, "D": 1}) == (2, 8, 6, 1)  # a grayscale model's
    assert schema.row_shape(f["objective"], DIMS) == (6,)  # T + 1
    assert schema.row_shape(f["activation_matrix"], DIMS) == (2, 3)
    assert schema.row_shape(schema.EXEMPLAR_FIELD["crops"], DIMS) == (4, 7, 7, 3)
    assert schema.row_shape(schema.EXEMPLAR_FIELD["box"], DIMS) == (4, 4)
    with pytest.raises(KeyError):
        schema.row_shape(f["images"], {"K": 1})  # a missing symbol is an error, not a guess


def test_fill_arrays_have_the_fields_dtype_and_fill():
    f = schema.ROW_FIELD
    raw = schema.fill_array(f["raw"], 3, DIMS)
    assert raw.shape == (3, 2, 8, 6, 3) and raw.dtype == np.float32 and np.isnan(raw).all()
    filters = schema.fill_array(f["filters"], 2, DIMS)
    assert filters.dtype == np.int32 and filters.tolist() == [-1, -1]
    done = schema.fill_array(f["done"], 2, DIMS)
    assert done.dtype == np.bool_ and not done.any()
    assert schema.fill_array(f["images"], 0, DIMS).shape == (0, 2, 8, 6, 3)


def test_the_tables_are_consistent():
    symbols = {"K", "H", "W", "D", "T", "T+1", "C", "top", "S"}
    for table in (schema.ROW_FIELDS, schema.INDEX_DATASETS, schema.EXEMPLAR_FIELDS):
        names = [f.name for f in table]
        assert len(names) == len(set(names))
        for f in table:
            assert all(s.isdigit() or s in symbols for s in f.shape), f
            assert f.dtype == "str" or np.dtype(f.dtype).name == f.dtype  # a real numpy dtype
    assert schema.WRITER_FIELDS <= set(schema.ROW_FIELD)
    assert [f.name for f in schema.ROW_FIELDS][:2] == ["filters", "done"]
    # Every v1 field but `dead` (renamed zero_start_grad) is a v2 field of the same dtype.
    for f in schema.V1_ROW_FIELDS:
        if f.name != "dead":
            assert schema.ROW_FIELD[f.name].dtype == f.dtype and f.since == 1
    assert {a.name for a in schema.SEGMENT_ATTRS} >= {
        "layer",
        "num_filters",
        "steps",
        "image_channels",
    }


def test_dead_means_exactly_zero_on_every_image():
    fa = np.array([[0.0, 0.0], [0.0, 1e-30], [np.nan, 0.0], [-0.0, 0.0]], np.float32)
    assert schema.derive_dead(fa).tolist() == [True, False, False, True]


def test_selectivity_and_specificity_by_hand():
    # Rows of filters 0, 1, 2 (k=0 image each) and a row not done; C = 3 channels.
    filters = np.array([0, 1, 2, 0])
    done = np.array([True, True, True, False])
    m = np.full((4, 1, 3), np.nan, np.float32)
    m[0, 0] = [4.0, 1.0, 1.0]  # filter 0's image: channel 0 highest of all images -> selective
    m[1, 0] = [1.0, 1.0, 2.0]  # filter 1's image: channel 1 = 1, image 2 has 3 -> not selective
    m[2, 0] = [2.0, 3.0, 2.0]  # filter 2's image: channel 2 = 2, a tie with image 1 -> not
    got = schema.index_datasets(filters, done, m)
    assert got["selectivity"].tolist() == [True, False, False, False]
    spec = got["specificity"]
    assert spec.dtype == np.float32
    np.testing.assert_allclose(spec[:3], [4 / 1.5, 1 / 2, 2 / 1.5], rtol=1e-6)
    assert math.isnan(spec[3])  # not done


def test_selectivity_is_undefined_without_two_done_rows_or_a_measure():
    m = np.ones((2, 1, 3), np.float32)
    one = schema.index_datasets(np.array([0, 1]), np.array([True, False]), m)
    assert not one["selectivity"].any() and np.isnan(one["specificity"]).all()
    m[1, 0] = np.nan  # the second row's matrix was never measured
    two = schema.index_datasets(np.array([0, 1]), np.array([True, True]), m)
    assert not two["selectivity"].any() and np.isnan(two["specificity"]).all()
    zeros = np.zeros((2, 1, 3), np.float32)  # the others' mean is 0: no ratio
    z = schema.index_datasets(np.array([0, 1]), np.array([True, True]), zeros)
    assert np.isnan(z["specificity"]).all()


def test_markdown_documents_every_field_and_attribute():
    text = schema.markdown()
    assert text.startswith(f"Schema (version {schema.FORMAT_VERSION}).")
    for table in (schema.ROW_FIELDS, schema.INDEX_DATASETS, schema.EXEMPLAR_FIELDS):
        for f in table:
            assert re.search(rf"`{f.name}`", text), f.name
    for a in (*schema.LAYER_ATTRS, *schema.ROOT_ATTRS, *schema.EXEMPLAR_ATTRS):
        assert f"`{a.name}`" in text, a.name
    assert "(n, K, H, W, D)" in text and "(n, T+1)" in text
