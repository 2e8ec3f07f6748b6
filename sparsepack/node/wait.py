"""The one bounded poll of the node package: every wait for a JVM, a pid file or a healthy cluster goes through it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ..errors import LocalEnvironmentError


class NodeTimeout(LocalEnvironmentError):
    """A local node did not reach the awaited condition in time; ``what`` names the wait, ``seconds`` its bound."""

    def __init__(self, what: str, seconds: float, message: str | None = None):
        self.what = what
        self.seconds = seconds
        super().__init__(message or f"timed out after {seconds:.0f}s waiting for {what}")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 1.0) -> Any:
    """Call ``predicate`` until it returns something truthy and return that; raise :class:`NodeTimeout` once
    ``timeout`` seconds have passed. The last sleep is cut short at the deadline, so the wait never overruns it by
    more than one call of ``predicate``."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NodeTimeout(what, timeout)
        time.sleep(min(interval, remaining))
