"""Exit codes, each with one meaning, mapped here (and only here) from the library's typed errors."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import traceback

from ..errors import ClusterError, LocalEnvironmentError, ParityError, QualityGateError, SparsepackError
from .output import err

OK = 0
UNEXPECTED = 1  # a bug or an unforeseen failure: one line, the traceback with SPARSEPACK_DEBUG=1
BAD_INPUT = 2  # the user can fix the command line, the files or the model
GATE = 3  # parity or quality gate failed: the artifact does not do what the model does
CLUSTER = 4  # the cluster refused or failed a step
LOCAL_ENVIRONMENT = 5  # this machine lacks Java, a compiler, ...; or a local node did not start
INTERRUPTED = 130  # Ctrl-C or SIGTERM

# First match wins: subclasses before their bases.
_BY_TYPE: tuple[tuple[type[BaseException], int], ...] = (
    (LocalEnvironmentError, LOCAL_ENVIRONMENT),
    (ParityError, GATE),
    (QualityGateError, GATE),
    (ClusterError, CLUSTER),
    (SparsepackError, BAD_INPUT),
    (KeyboardInterrupt, INTERRUPTED),
)


def exit_code_for(exc: BaseException) -> int:
    for kind, code in _BY_TYPE:
        if isinstance(exc, kind):
            return code
    return UNEXPECTED


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so every cleanup that handles Ctrl-C (stopping JVMs, rollback) runs."""


def _raise_terminated(signum, frame):
    raise Terminated(f"signal {signum}")


@contextlib.contextmanager
def sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_mapped(command, args) -> int:
    """Run one command; turn whatever it raises into a one-line message and its exit code."""
    try:
        with sigterm_as_interrupt():
            return command(args)
    except SparsepackError as exc:
        err(f"error: {with_flag_hint(exc, args)}")
        return exit_code_for(exc)
    except KeyboardInterrupt:
        err("interrupted")
        return INTERRUPTED
    except BrokenPipeError:  # output piped into head & co.
        sys.stderr.close()
        return OK
    except Exception as exc:  # noqa: BLE001 - one line for users, the traceback on request
        if os.environ.get("SPARSEPACK_DEBUG"):
            traceback.print_exc()
        first = str(exc).splitlines()[0] if str(exc) else ""
        err(f"unexpected error: {type(exc).__name__}: {first} (rerun with SPARSEPACK_DEBUG=1 for the traceback)")
        return UNEXPECTED


def with_flag_hint(exc: SparsepackError, args) -> str:
    """The library names the argument (``exc.parameter``); the CLI knows which flag sets it in this command."""
    return message_with_flag(str(exc), exc.parameter, args)


def message_with_flag(message: str, parameter: str | None, args) -> str:
    flag = getattr(args, "flag_of", {}).get(parameter) if parameter else None
    if flag is None and parameter:
        flag = "--" + parameter.replace("_", "-")
    if flag and flag not in message:
        message = f"{message} (flag {flag})"
    return message
