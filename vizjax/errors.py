"""The one exception type that reaches users as a single line.

Library code raises :class:`VizjaxError` (or a subclass) for anything a user can fix: a bad layer
name, a file that is not what it claims to be, a size too small for a layer. The CLI prints
``vizjax: <message>`` and exits with status 2; it never shows a traceback for these.
"""


class VizjaxError(Exception):
    """A problem with the user's input or files, explained in one line."""


class WeightsError(VizjaxError):
    """Weights that cannot be read, converted or verified."""


class AtlasError(VizjaxError):
    """An atlas file that cannot be written, resumed or read."""


class Interrupted(Exception):
    """A run stopped by SIGINT or SIGTERM after the chunk in flight (everything before is kept).

    Not a :class:`VizjaxError`: the CLI exits with ``128 + signum`` (130, 143), as shells expect.
    ``summary`` is what the run had done when it stopped (see :func:`vizjax.run.run_atlas`).
    """

    def __init__(self, signum: int, summary: dict | None = None) -> None:
        import signal

        self.signum = signum
        self.summary = summary or {}
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
