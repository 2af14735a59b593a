"""vizjax.distributed without starting it: each process's share of the filters, the checks of
the multi-process arguments, the heartbeat setting. (Two real processes under jax.distributed:
tests/test_cli.py.)"""

import numpy as np
import pytest

from vizjax import distributed
from vizjax.errors import VizjaxError


def test_shares_are_disjoint_cover_everything_and_balanced():
    filters = list(range(10))
    shares = [distributed.share(filters, i, 3) for i in range(3)]
    assert [s.tolist() for s in shares] == [[0, 3, 6, 9], [1, 4, 7], [2, 5, 8]]
    assert sorted(np.concatenate(shares).tolist()) == filters
    assert distributed.share(filters, 0, 1).tolist() == filters


@pytest.mark.parametrize(
    "coordinator,n,pid,auto",
    [
        (None, None, None, False),
        (None, None, None, True),
        ("localhost:1234", 2, 0, False),
        ("localhost:1234", 2, 1, False),
    ],
)
def test_accepted_arguments(coordinator, n, pid, auto):
    distributed.check(coordinator, n, pid, auto)


@pytest.mark.parametrize(
    "coordinator,n,pid,says",
    [
        (None, 2, 0, "need --coordinator"),
        ("localhost:1234", None, 0, "needs --num-processes and --process-id"),
        ("localhost:1234", 2, 2, "--process-id must be in 0..1"),
        ("localhost:1234", 0, 0, "--process-id must be in"),
    ],
)
def test_refused_arguments_in_one_line(coordinator, n, pid, says):
    with pytest.raises(VizjaxError, match=says) as e:
        distributed.check(coordinator, n, pid, False)
    assert "\n" not in str(e.value)


def test_heartbeat_setting(monkeypatch):
    monkeypatch.delenv("VIZJAX_HEARTBEAT_SECONDS", raising=False)
    assert distributed.heartbeat_seconds() == distributed.HEARTBEAT_S
    monkeypatch.setenv("VIZJAX_HEARTBEAT_SECONDS", "5")
    assert distributed.heartbeat_seconds() == 5
    for bad in ("0", "3601", "five", ""):
        monkeypatch.setenv("VIZJAX_HEARTBEAT_SECONDS", bad)
        with pytest.raises(VizjaxError, match="1..3600"):
            distributed.heartbeat_seconds()
