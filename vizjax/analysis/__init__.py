"""Analysis: what is measured of a picture and what is found for a filter beyond its picture.

:mod:`~vizjax.analysis.fidelity` holds the measures written beside every picture (robustness,
high-frequency energy, selectivity, ...), pure functions of one image that the engine, the atlas
reader and the gallery all use; :mod:`~vizjax.analysis.exemplars` finds the dataset examples that
drive each filter most.

What it may import: ``fidelity`` only :mod:`vizjax.images` (the engine imports it, so it sits
below the engine); ``exemplars`` the networks, the engine, the atlas and the run's config
(``tests/test_layout.py`` checks the layers).
"""
