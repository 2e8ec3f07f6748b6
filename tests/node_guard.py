"""End-of-run guard: no OpenSearch node process started by the test session outlives it.

conftest imports these hooks; ``pytest -p node_guard`` loads them on their own. SIGTERM to the run is turned into
KeyboardInterrupt, so a cancelled run still tears its nodes down. Node processes (JVMs and their
launchers) are found from their command lines, under any SPARSEPACK_HOME; those on this suite's ports
(SPARSEPACK_TEST_PORT_BASE .. +99) that were not running when the session began are leaks: they are stopped, and the
run fails. A node whose cluster.json names a live starter outside this session belongs to another test run on the
same ports: it is reported, never stopped, since stopping it takes down that run's nodes mid-run.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from sparsepack.node.processes import NodeProcess, node_processes, stop_processes
from sparsepack.node.state import load_state

PORT_BASE = int(os.environ.get("SPARSEPACK_TEST_PORT_BASE", "9250"))
SUITE_PORTS = range(PORT_BASE, PORT_BASE + 100)
_before: set[int] = set()


def suite_node_processes() -> list[NodeProcess]:
    return [p for p in node_processes() if p.port in SUITE_PORTS]


_terminated: list[int] = []


def pytest_sessionstart(session):
    _before.update(p.pid for p in suite_node_processes())
    # A cancelled CI job (or `timeout`) sends SIGTERM, whose default ends pytest before any fixture teardown: every
    # node of the session would be orphaned. Raised as KeyboardInterrupt, pytest tears down and this guard runs.
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum, frame):
    _terminated.append(signum)
    raise KeyboardInterrupt(f"signal {signum}")


@pytest.hookimpl(trylast=True)
def pytest_runtest_logfinish(nodeid, location):
    # Code under test that maps Ctrl-C to an exit code (the CLI's 130) swallows the KeyboardInterrupt, and the run
    # went on for minutes after SIGTERM; the signal is remembered, so the run stops after the test it interrupted.
    if _terminated:
        raise KeyboardInterrupt(f"signal {_terminated[0]} during {nodeid}")


def _parent(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def starter_elsewhere(cdir: Path) -> dict | None:
    """The live process outside this session (not it, not one of its children) that started ``cdir``'s cluster."""
    try:
        state = load_state(cdir.parent.parent, int(cdir.name))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    starter = (state.started_by or {}) if state else {}
    pid = starter.get("pid", 0)
    if not pid or not os.path.exists(f"/proc/{pid}"):
        return None
    ancestor = pid
    while ancestor > 1:
        if ancestor == os.getpid():
            return None
        ancestor = _parent(ancestor)
    return starter


@pytest.hookimpl(trylast=True)  # after the runner's own sessionfinish has torn down the session fixtures
def pytest_sessionfinish(session):
    new = [p for p in suite_node_processes() if p.pid not in _before]
    foreign = {cdir: starter_elsewhere(cdir) for cdir in {p.node_dir.parent for p in new}}
    leaked = [p for p in new if foreign[p.node_dir.parent] is None]
    lines = [
        f"node_guard: {cdir} was started meanwhile by pid {who['pid']} ({' '.join(who.get('argv', []))[:200]}), "
        f"another run on ports {PORT_BASE}..{PORT_BASE + 99}: left running; give each run its own "
        f"SPARSEPACK_TEST_PORT_BASE"
        for cdir, who in sorted(foreign.items())
        if who is not None
    ]
    if leaked:
        names = ", ".join(f"pid {p.pid} ({'JVM' if p.jvm else 'launcher'} of {p.node_dir})" for p in leaked)
        for cdir in sorted({p.node_dir.parent for p in leaked}):
            stop_processes(cdir, f"node_guard of the test session pid {os.getpid()}: left running by its tests")
        lines.append(f"node_guard: the tests left OpenSearch node processes running (now stopped): {names}")
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    for message in lines:
        if reporter is not None:
            reporter.write_line(message, red=True, bold=True)
        else:
            print(message, flush=True)
    if leaked and session.exitstatus == pytest.ExitCode.OK:  # an interrupted or failed run keeps its own status
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
