"""The node package's one bounded poll: what it returns, what it raises, and that it keeps to its timeout."""

import time

import pytest

from sparsepack.errors import ClusterError, LocalEnvironmentError, SparsepackError
from sparsepack.node.wait import NodeTimeout, wait_for


def test_returns_the_first_truthy_value():
    answers = iter([None, 0, {}, {"status": "green"}, {"status": "never reached"}])
    calls = []

    def check():
        calls.append(1)
        return next(answers)

    assert wait_for(check, 5, "the health", interval=0.001) == {"status": "green"}
    assert len(calls) == 4


def test_timeout_is_typed_and_carries_the_figures():
    with pytest.raises(NodeTimeout) as info:
        wait_for(lambda: False, 0.05, "the nodes in /x to stop", interval=0.01)
    exc = info.value
    assert exc.what == "the nodes in /x to stop" and exc.seconds == 0.05
    assert isinstance(exc, LocalEnvironmentError) and isinstance(exc, SparsepackError)
    assert exc.exit_code == LocalEnvironmentError.exit_code == 5
    assert "waiting for the nodes in /x to stop" in str(exc)


def test_a_long_interval_does_not_overrun_the_timeout():
    calls = []
    t0 = time.monotonic()
    with pytest.raises(NodeTimeout):
        wait_for(lambda: calls.append(1), 0.2, "something", interval=30)
    elapsed = time.monotonic() - t0
    assert 0.2 <= elapsed < 2.0, elapsed
    assert len(calls) == 2  # one call at the start, one at the deadline


def test_an_error_in_the_check_ends_the_wait_at_once():
    def check():
        raise ClusterError("node-1 exited during start-up")

    t0 = time.monotonic()
    with pytest.raises(ClusterError, match="exited during start-up") as info:
        wait_for(check, 30, "the node")
    assert not isinstance(info.value, NodeTimeout)
    assert time.monotonic() - t0 < 2.0
