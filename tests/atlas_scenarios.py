"""Fake atlas runs shared by tests/test_atlas*.py and the writer subprocesses that
tests/test_atlas_crash.py kills: kept out of the test modules so that a subprocess does not pay for
importing pytest."""

from __future__ import annotations

import json

import numpy as np

from vizjax import schema
from vizjax.atlas import AtlasWriter

HW = (8, 8)
STEPS = 3
ATTRS = {
    "model": "vgg16",
    "weights": "test-weights",
    "weights_sha256": "ab" * 32,
    "preprocessing": json.dumps({"name": "caffe", "bgr": True}),
}
CONFIG = {"steps": STEPS, "size": 8, "lr": 0.05, "batch": 2, "layers": ["l1"], "out": "x.h5"}
#: layer -> (num_filters, filters to compute), in network order.
PLAN = {"l1": (6, [0, 1, 2, 3, 4, 5]), "l2": (4, [0, 1, 2, 3])}
#: Every field a caller may pass (all but filters and done).
FIELDS = [f.name for f in schema.ROW_FIELDS if f.name not in ("filters", "done")]


def make_rows(layer: str, filters, k: int = 1, num_filters: int | None = None) -> dict:
    """Deterministic fake results with every field: each filter's values depend on (layer, f)."""
    filters = np.asarray(list(filters), dtype=np.int64)
    c = num_filters or PLAN.get(layer, (6,))[0]
    h, w = HW
    gens = [np.random.default_rng([len(layer), ord(layer[-1]), int(f), k]) for f in filters]

    def stack(make, shape, dtype):
        return np.stack([make(g) for g in gens]) if gens else np.zeros((0, *shape), dtype)

    final = stack(lambda g: g.random(k).astype(np.float32), (k,), np.float32)
    final[filters % 3 == 0] = 0  # some dead filters
    return {
        "filters": filters,
        "images": stack(lambda g: g.integers(0, 256, (k, h, w, 3), np.uint8), (k, h, w, 3), "u1"),
        "raw": stack(lambda g: g.standard_normal((k, h, w, 3), np.float32), (k, h, w, 3), "f4"),
        "objective": stack(lambda g: g.standard_normal(STEPS + 1, np.float32), (STEPS + 1,), "f4"),
        "zero_start_grad": filters % 3 == 0,
        "nonfinite": filters % 4 == 1,
        "final_activation": final,
        "activation_matrix": stack(lambda g: g.random((k, c), np.float32), (k, c), "f4"),
        "robustness": stack(lambda g: g.random(k).astype(np.float32), (k,), "f4"),
        "hf_energy": stack(lambda g: g.random(k).astype(np.float32), (k,), "f4"),
    }


def expected_row(layer: str, f: int) -> dict:
    """Every stored field of filter ``f``'s row, ``dead`` included (derived by the writer)."""
    r = {k: v[0] for k, v in make_rows(layer, [f]).items() if k != "filters"}
    r["dead"] = bool(np.all(r["final_activation"] == 0))
    return r


def write_run(path, plan=PLAN, config=CONFIG, chunk=2, finish=True) -> None:
    """An uninterrupted run: every layer of ``plan``, ``chunk`` filters at a time."""
    with AtlasWriter(path, ATTRS, config) as w:
        for layer, (n, filters) in plan.items():
            todo = w.begin_layer(layer, n, filters, HW, STEPS)
            for i in range(0, len(todo), chunk):
                w.write_chunk(layer, make_rows(layer, todo[i : i + chunk]))
            if finish:
                w.finish_layer(layer)


def two_sessions(path) -> None:
    """The kill campaigns' scenario: a first run does part of l1, a second resumes and adds l2."""
    write_run(path, plan={"l1": (6, [3, 0, 1, 2])})
    write_run(path, plan=PLAN)
