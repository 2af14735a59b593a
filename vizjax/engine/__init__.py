"""The engine: how one filter's picture is made, and how many filters run as one program.

Lucid's vocabulary, one module each, every one written for ONE filter's image:
:mod:`~vizjax.engine.param` (how the image is represented), :mod:`~vizjax.engine.transform`
(robustness), :mod:`~vizjax.engine.objectives` (what is maximized), :mod:`~vizjax.engine.optim`
(optax steps), :mod:`~vizjax.engine.recipe` (the frozen dataclass of all four, with presets) and
:mod:`~vizjax.engine.render` (the loop for one filter). Then how a run executes, apart from what
picture it makes: :mod:`~vizjax.engine.execution` (dtype, convolution, loop, chunk),
:mod:`~vizjax.engine.chunk` (filters per program), :mod:`~vizjax.engine.cost` (how much work),
:mod:`~vizjax.engine.ascent` (the one ``vmap``, the one ``jit``, the mesh),
:mod:`~vizjax.engine.ahead` (the next layer compiling while this one runs) and
:mod:`~vizjax.engine.tuning` (which settings this machine runs fastest, measured and kept).

What it may import: :mod:`vizjax.errors`, :mod:`vizjax.images`, the networks
(:mod:`vizjax.models`), the measures it computes beside every picture
(:mod:`vizjax.analysis.fidelity`) and :mod:`vizjax.durable` for its one file, the tuning
table beside the compilation cache; never the atlas, the gallery, the CLI or any other file I/O
(``tests/test_layout.py`` checks it).
"""
