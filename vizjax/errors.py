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
