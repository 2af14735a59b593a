"""vizjax.errors: what a user sees of a refusal or a stop is one line (the CLI's exit statuses for
them: tests/test_cli.py, tests/test_faults.py)."""

import signal

from vizjax.errors import AtlasError, Interrupted, VizjaxError, WeightsError


def test_user_errors_are_one_family():
    assert issubclass(WeightsError, VizjaxError) and issubclass(AtlasError, VizjaxError)
    assert not issubclass(Interrupted, VizjaxError)  # a stop is not a mistake: exit 128 + signum


def test_interrupted_says_who_stopped_and_keeps_the_summary():
    assert str(Interrupted(signal.SIGINT)) == "interrupted by SIGINT"
    e = Interrupted(signal.SIGTERM, {"done": 5}, by=1)
    assert e.summary == {"done": 5} and e.by == 1
    assert str(e) == "stopped because process 1 of the run was interrupted by SIGTERM"
    gone = Interrupted(signal.SIGKILL, by=2)
    assert str(gone) == "stopped because process 2 of the run is gone (killed, or its host lost)"
    assert Interrupted(signal.SIGINT).summary == {}
