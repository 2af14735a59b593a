"""The engine's one chunk/pad/shard loop (:func:`vizjax.engine.ascent.map_chunks`), and the programs that
run through it: a chunk size that does not divide the rows or the device count changes nothing."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_network

from vizjax.engine import ascent, chunk
from vizjax.engine.execution import Execution
from vizjax.engine.recipe import PRESETS
from vizjax.models import vgg


def random_params(seed: int = 0) -> dict:
    """VGG16's shapes with random weights (see ``tiny_network.params``)."""
    return {"params": tiny_network.params(seed, vgg.WIDTHS)}


def test_map_chunks_pads_shards_and_cuts_the_padding():
    mesh = ascent.local_mesh()  # conftest: 4 CPU devices
    fn = jax.jit(lambda scale, x: {"y": x * scale, "devices": jnp.zeros(x.shape[0]) + x.shape[0]})
    x = np.arange(10, dtype=np.float32)[:, None] + np.zeros((1, 3), np.float32)
    seen = []

    def rows(sl):
        seen.append(sl)
        return (x[sl],)

    out = list(ascent.map_chunks(fn, (np.float32(2),), 10, 8, rows, mesh))
    assert [sl for sl, _ in out] == seen == [slice(0, 8), slice(8, 10)]
    np.testing.assert_array_equal(np.concatenate([o["y"] for _, o in out]), 2 * x)
    assert [o["devices"].tolist() for _, o in out] == [[8.0] * 8, [8.0] * 2]  # padded to 8, cut
    with pytest.raises(ValueError, match="not a multiple of 4 devices"):
        next(ascent.map_chunks(fn, (np.float32(2),), 10, 6, rows, mesh))
    assert chunk.round_to_mesh(5, mesh) == 8 and ascent.round_to_mesh(8, mesh) == 8
    np.testing.assert_array_equal(ascent.padded(np.array([3, 4]), 4), [3, 4, 4, 4])


def test_stored_images_measure_as_they_did_in_the_run():
    """``vizjax fidelity`` (iter_measures on stored images) gives what the run measured on the
    devices, whatever the chunk sizes of each."""
    params = random_params()
    recipe = PRESETS["classic"].replace(steps=1, size=(32, 32))
    filters = [0, 5, 7, 9, 11]
    exe = Execution(batch=4)
    run = ascent.visualize(
        "block1_conv1", filters, recipe, params, vgg.IDENTITY, measure=True, execution=exe
    )
    at = {f: i for i, f in enumerate(run.filters.tolist())}

    def images(fs):
        rows = [at[int(f)] for f in fs]
        return run.raw[rows], run.images[rows]

    for batch in ("auto", 3):
        got = list(
            ascent.iter_measures(
                "block1_conv1",
                filters[::-1],
                images,
                params,
                vgg.IDENTITY,
                recipe.preprocess,
                execution=Execution(batch=batch),
            )
        )
        done = np.concatenate([f for f, _ in got])
        assert sorted(done.tolist()) == sorted(filters)
        rows = [at[int(f)] for f in done]
        for name in ("activation_matrix", "final_activation", "robustness", "hf_energy"):
            measured = np.concatenate([m[name] for _, m in got])
            np.testing.assert_allclose(measured, getattr(run, name)[rows], rtol=1e-5, err_msg=name)
