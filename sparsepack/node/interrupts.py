"""Signal handling around a start: SIGTERM raised like Ctrl-C so the JVMs just launched are stopped, and no second
signal aborting that stop."""

from __future__ import annotations

import contextlib
import signal
import threading


@contextlib.contextmanager
def _signal_handlers(handlers: dict):
    """``{signal: handler}`` for the block, the previous ones restored after. Only the main thread can set handlers:
    elsewhere (a start from another thread) the block runs with the process's own."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def interrupts_deferred():
    """A second Ctrl-C (or SIGTERM) while the JVMs are being stopped would abort the stop and orphan them: both are
    ignored until the stop is done (the first one is already being handled)."""
    return _signal_handlers({signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_IGN})


class Terminated(KeyboardInterrupt):
    """SIGTERM during a start (a CI job cancelled, `timeout`, systemd): handled like Ctrl-C, so the cleanup runs."""


def _raise_terminated(signum, frame):
    raise Terminated(f"signal {signum}")


def termination_as_interrupt():
    """Python's default SIGTERM ends the process at once, skipping the ``except`` that stops the JVMs just launched;
    a handler that raises lets it run."""
    return _signal_handlers({signal.SIGTERM: _raise_terminated})
