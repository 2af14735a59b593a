"""The progress display: its interval setting and its lines for logs."""

import pytest

from vizjax import progress
from vizjax.errors import VizjaxError


def test_progress_seconds_reads_the_environment_when_asked(monkeypatch):
    monkeypatch.delenv("VIZJAX_PROGRESS_SECONDS", raising=False)
    assert progress.progress_seconds() == progress.PROGRESS_SECONDS
    monkeypatch.setenv("VIZJAX_PROGRESS_SECONDS", "2.5")
    assert progress.progress_seconds() == 2.5
    assert progress.LineProgress(10, "x").interval == 2.5


@pytest.mark.parametrize("bad", ["soon", "nan", "inf", "-1"])
def test_a_bad_progress_interval_is_one_line(monkeypatch, bad):
    monkeypatch.setenv("VIZJAX_PROGRESS_SECONDS", bad)
    with pytest.raises(VizjaxError, match="VIZJAX_PROGRESS_SECONDS"):
        progress.LineProgress(10, "x")


def test_line_progress_prints_rate_and_eta(capsys):
    bar = progress.LineProgress(4, "block1_conv1", interval=0.0)
    bar.update(1)
    bar.update(3)
    bar.close()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("block1_conv1: 1/4 filters, ") and "ETA" in lines[0]
    assert lines[-1].startswith("block1_conv1: 4/4 filters") and "done in" in lines[-1]
