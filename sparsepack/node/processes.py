"""The processes of local nodes: found from /proc by their command lines, launched, signalled and stopped."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ClusterError, LocalEnvironmentError
from .service_user import SERVICE_USER
from .wait import NodeTimeout, wait_for

PIDFILE = "opensearch.pid"


def node_tmpdir(ndir: Path) -> Path:
    """The JVM's java.io.tmpdir: inside the node folder, so that removing the cluster removes it (OpenSearch's default
    is a new /tmp/opensearch-<random> at every launch, which nothing ever removes)."""
    return ndir / "tmp"


# One JSON line per stop: a node logs only a clean "stopping ...", which does not say who sent the SIGTERM.
STOP_RECORD = "stops.log"
JVM_MAIN = "org.opensearch.bootstrap.OpenSearch"


@dataclass(frozen=True)
class NodeProcess:
    """A live process sparsepack launched for one node folder: the node's JVM or, while it starts, its launcher."""

    pid: int
    node_dir: Path
    jvm: bool
    version: str | None  # from the JVM's -Dopensearch.path.home=.../opensearch-VERSION

    @property
    def port(self) -> int | None:
        name = self.node_dir.parent.name
        return int(name) if name.isdigit() else None


def _process_of_node(pid: int) -> NodeProcess | None:
    """The node a process belongs to, from its command line: sparsepack launches every node (launcher and JVM) with
    ``-p HOME/clusters/PORT/node-N/opensearch.pid``, so that argument names the node folder before any pid file exists."""
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
        argv = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")]
    except (OSError, IndexError):
        return None
    for flag, value in zip(argv, argv[1:], strict=False):
        if flag == "-p" and value.endswith("/" + PIDFILE):
            node_dir = Path(value).parent
            if node_dir.parent.parent.name != "clusters":
                continue
            home = next((a.split("=", 1)[1] for a in argv if a.startswith("-Dopensearch.path.home=")), "")
            version = Path(home).name.removeprefix("opensearch-") if home else None
            return NodeProcess(pid, node_dir, JVM_MAIN in argv, version)
    return None


def node_processes(cdir: Path | None = None) -> list[NodeProcess]:
    """Every live process of a sparsepack node, found from /proc (so without cluster.json, and before the JVM wrote
    its pid file); ``cdir`` keeps those of one cluster folder."""
    want = os.path.realpath(cdir) if cdir is not None else None
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            proc = _process_of_node(int(entry.name))
            if proc and (want is None or os.path.realpath(proc.node_dir.parent) == want):
                found.append(proc)
    return found


def running_nodes(cdir: Path) -> dict[str, NodeProcess]:
    """The cluster folder's live JVMs by node name, whether or not cluster.json records them."""
    return {p.node_dir.name: p for p in node_processes(cdir) if p.jvm}


def read_pid(ndir: Path) -> int:
    try:
        return int((ndir / PIDFILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def port_owner_hint(port: int) -> str:
    """The exact command when a sparsepack node of another home (SPARSEPACK_HOME) holds ``port``."""
    for proc in node_processes():
        index = proc.node_dir.name.removeprefix("node-")
        if (
            proc.jvm
            and proc.port is not None
            and index.isdigit()
            and port in (proc.port + int(index), proc.port + 100 + int(index))
        ):
            home = proc.node_dir.parent.parent.parent
            return (
                f"a sparsepack node under {home} holds it: `SPARSEPACK_HOME={home} sparsepack node stop "
                f"--port {proc.port}`, or pass another --port"
            )
    return "stop what uses it or pass --port"


def launch_node(install: Path, java_home: Path, ndir: Path, ids: tuple[int, int] | None, deadline: float) -> None:
    """Run the daemonizing launcher. It returns once the JVM process exists; the JVM writes its pid file later (seconds,
    or much longer on a busy machine), which the start waits for."""
    env = {
        "PATH": "/usr/bin:/bin",
        "OPENSEARCH_JAVA_HOME": str(java_home),
        "OPENSEARCH_PATH_CONF": str(ndir / "config"),
        "OPENSEARCH_TMPDIR": str(node_tmpdir(ndir)),
        "HOME": str(ndir),
        "LANG": "C.UTF-8",
    }
    # `-p` names the node folder in the command line of the launcher and the JVM: node_processes() finds them by it.
    cmd = [str(install / "bin" / "opensearch"), "-d", "-p", str(ndir / PIDFILE)]
    if ids is not None:
        cmd = ["runuser", "-u", SERVICE_USER, "--", "env", *[f"{k}={v}" for k, v in env.items()], *cmd]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    launcher_log = ndir / "logs" / "launcher.out"
    # The daemon inherits stdout/stderr: a file, not a pipe, or the call would wait for the node to exit. Its own
    # session: Ctrl-C in the caller's terminal does not reach the node, and the scheduler gives the node its own share
    # of a busy machine (autogroups) instead of a slice of the caller's.
    with open(launcher_log, "w") as out:
        try:
            proc = subprocess.run(
                cmd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=str(ndir),
                timeout=max(1.0, deadline - time.monotonic()),
                start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise ClusterError(
                f"the OpenSearch launcher of {ndir.name} did not return within the start timeout; raise "
                f"--timeout or see {launcher_log}"
            ) from None
    if proc.returncode != 0:
        lines = [
            line
            for line in launcher_log.read_text(errors="replace").splitlines()
            if line.strip() and "no-jdk" not in line
        ]
        tail = " | ".join(lines[-4:])
        raise LocalEnvironmentError(f"OpenSearch failed to start: {tail or 'no output'}; see {ndir / 'logs'}")


def _caller() -> dict:
    """The process asking for a stop, and its parent: enough to tell a test session, a CLI call or a guard apart."""

    def argv(pid: int) -> list[str]:
        try:
            return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        except OSError:
            return []

    return {
        "pid": os.getpid(),
        "argv": sys.argv if sys.argv and sys.argv[0] else argv(os.getpid()),
        "ppid": os.getppid(),
        "parent_argv": argv(os.getppid()),
    }


def _record_stop(cdir: Path, reason: str, procs: list[NodeProcess]) -> None:
    if not procs or not cdir.is_dir():
        return
    entry = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "reason": reason,
        "caller": _caller(),
        "signalled": [{"pid": p.pid, "node": p.node_dir.name, "jvm": p.jvm} for p in procs],
    }
    try:
        with open(cdir / STOP_RECORD, "a") as out:
            out.write(json.dumps(entry) + "\n")
    except OSError:
        pass  # the record explains a stop; it must never prevent one


def stop_processes(cdir: Path, reason: str, timeout: float = 60.0, only: set[str] | None = None) -> int:
    """SIGTERM every process of the cluster folder's nodes (JVMs and launchers), SIGKILL what is left after ``timeout``.
    Scans again until none is left, since a launcher may fork its JVM meanwhile. Returns how many were signalled.
    ``reason`` and the caller (pid, argv) are appended to the folder's stops.log before any signal is sent. ``only``
    names the nodes to stop when not all of them."""
    signalled: set[int] = set()

    def gone(sig=signal.SIGTERM) -> bool:
        procs = [p for p in node_processes(cdir) if only is None or p.node_dir.name in only]
        fresh = [p for p in procs if p.pid not in signalled]
        if fresh:
            _record_stop(cdir, reason if sig == signal.SIGTERM else f"{reason} (SIGKILL after {timeout:.0f}s)", fresh)
        for proc in sorted(procs, key=lambda p: p.node_dir.name, reverse=True):  # the cluster manager last
            if proc.pid not in signalled or sig == signal.SIGKILL:
                signalled.add(proc.pid)
                try:
                    os.kill(proc.pid, sig)
                except ProcessLookupError:
                    pass
        return not procs

    try:
        wait_for(gone, timeout, f"the nodes in {cdir} to stop", interval=0.5)
    except NodeTimeout:
        wait_for(lambda: gone(signal.SIGKILL), 30, f"the nodes in {cdir} to die", interval=0.5)
    return len(signalled)
