"""End-of-run guard: no OpenSearch node process started by the test session outlives it.

conftest imports these hooks; ``pytest -p node_guard`` loads them on their own. SIGTERM to the run is turned into
KeyboardInterrupt, so a cancelled run still tears its nodes down. Node processes (JVMs and their
launchers) are found from their command lines, under any SPARSEPACK_HOME; those on this suite's ports
(SPARSEPACK_TEST_PORT_BASE .. +99) that were not running when the session began are leaks: they are stopped, and the
run fails.
"""
from __future__ import annotations

import os
import signal

import pytest

from sparsepack.node.processes import NodeProcess, node_processes, stop_processes

PORT_BASE = int(os.environ.get("SPARSEPACK_TEST_PORT_BASE", "9250"))
SUITE_PORTS = range(PORT_BASE, PORT_BASE + 100)
_before: set[int] = set()


def suite_node_processes() -> list[NodeProcess]:
    return [p for p in node_processes() if p.port in SUITE_PORTS]


def pytest_sessionstart(session):
    _before.update(p.pid for p in suite_node_processes())
    # A cancelled CI job (or `timeout`) sends SIGTERM, whose default ends pytest before any fixture teardown: every
    # node of the session would be orphaned. Raised as KeyboardInterrupt, pytest tears down and this guard runs.
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.hookimpl(trylast=True)  # after the runner's own sessionfinish has torn down the session fixtures
def pytest_sessionfinish(session):
    leaked = [p for p in suite_node_processes() if p.pid not in _before]
    if not leaked:
        return
    names = ", ".join(f"pid {p.pid} ({'JVM' if p.jvm else 'launcher'} of {p.node_dir})" for p in leaked)
    for cdir in sorted({p.node_dir.parent for p in leaked}):
        stop_processes(cdir)
    message = f"node_guard: the tests left OpenSearch node processes running (now stopped): {names}"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(message, red=True, bold=True)
    else:
        print(message, flush=True)
    if session.exitstatus == pytest.ExitCode.OK:  # an interrupted or failed run keeps its own status
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
