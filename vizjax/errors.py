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
    ``by``: in a multi-process run, the (0-based) process that got the signal, when it was
    another one (this process stopped because it did).
    """

    def __init__(self, signum: int, summary: dict | None = None, by: int | None = None) -> None:
        import signal

        self.signum = signum
        self.summary = summary or {}
        self.by = by
        name = signal.Signals(signum).name
        if by is None:
            super().__init__(f"interrupted by {name}")
        elif signum == signal.SIGKILL:  # no word from it: its heartbeat stopped
            super().__init__(
                f"stopped because process {by} of the run is gone (killed, or its host lost)"
            )
        else:
            super().__init__(f"stopped because process {by} of the run was interrupted by {name}")
