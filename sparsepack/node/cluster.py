"""Run a local OpenSearch cluster (1..N nodes on loopback) as a non-root user."""
from __future__ import annotations

import contextlib
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import ClusterError, SparsepackError
from .assemble import ensure_install, seed_dirs
from . import secure as secure_mod
from .plan import NodePlan, plan_for

SERVICE_USER = os.environ.get("SPARSEPACK_NODE_USER", "sparsepack")
STATE_FILE = "cluster.json"

# The cluster-settings template with the values a local test node needs: no breakers, any node may serve,
# URL registration allowed (its default trusted_url_regex admits file://).
NODE_ML_SETTINGS = {"only_run_on_ml_node": False, "native_memory_threshold": 100, "jvm_heap_memory_threshold": 100,
                    "disk_free_space_threshold": -1, "allow_custom_deployment_plan": True,
                    "allow_registering_model_via_url": True}


def default_home() -> Path:
    """Node files live where the non-root service user can read them: never under root's home."""
    env = os.environ.get("SPARSEPACK_HOME")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/sparsepack")
    return Path.home() / ".cache" / "sparsepack"


def default_cache() -> Path:
    env = os.environ.get("SPARSEPACK_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "sparsepack"


@dataclass
class NodeInfo:
    name: str
    http_port: int
    transport_port: int
    roles: list[str]
    attrs: dict[str, str]
    pid: int = 0


@dataclass
class ClusterState:
    version: str
    home: str
    nodes: list[NodeInfo] = field(default_factory=list)
    secure: bool = False

    @property
    def url(self) -> str:
        return f"{'https' if self.secure else 'http'}://127.0.0.1:{self.nodes[0].http_port}"


def cluster_dir(home: Path, port: int) -> Path:
    return home / "clusters" / str(port)


def load_state(home: Path, port: int) -> ClusterState | None:
    path = cluster_dir(home, port) / STATE_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return ClusterState(raw["version"], raw["home"], [NodeInfo(**n) for n in raw["nodes"]], raw.get("secure", False))


def _save_state(state: ClusterState, port: int) -> None:
    path = cluster_dir(Path(state.home), port) / STATE_FILE
    path.write_text(json.dumps(asdict(state), indent=2))


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


PIDFILE = "opensearch.pid"
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
    for flag, value in zip(argv, argv[1:]):
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


def _ensure_user() -> tuple[int, int] | None:
    """As root: the dedicated service user (created once). Otherwise: None, the node runs as the caller."""
    if os.geteuid() != 0:
        return None
    try:
        pw = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        proc = subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SparsepackError(f"cannot create the service user {SERVICE_USER}: {proc.stderr.strip()}; "
                                  f"create it or set SPARSEPACK_NODE_USER to an existing non-root user")
        pw = pwd.getpwnam(SERVICE_USER)
    return pw.pw_uid, pw.pw_gid


def _chown_tree(path: Path, ids: tuple[int, int] | None) -> None:
    if ids is None:
        return
    for root, dirs, files in os.walk(path):
        os.chown(root, *ids)
        for name in files:
            os.chown(os.path.join(root, name), *ids, follow_symlinks=False)


def _make_readable(path: Path) -> None:
    """As root: every parent of ``path`` must be traversable by the service user."""
    if os.geteuid() != 0:
        return
    home = Path.home()
    for parent in [path, *path.parents]:
        if parent == Path("/"):
            break
        mode = parent.stat().st_mode
        if mode & 0o001:
            continue
        if home != Path("/") and parent == home:
            raise SparsepackError(f"{path} lies under {home}, which the service user cannot read; "
                                  f"set SPARSEPACK_HOME to e.g. /var/lib/sparsepack")
        parent.chmod(mode | 0o055)


def _node_config(plan: NodePlan, node: NodeInfo, all_nodes: list[NodeInfo], ndir: Path, cluster_name: str) -> str:
    lines = [
        f"cluster.name: {cluster_name}",
        f"node.name: {node.name}",
        f"path.data: {ndir / 'data'}",
        f"path.logs: {ndir / 'logs'}",
        "network.host: 127.0.0.1",
        f"http.port: {node.http_port}",
        f"transport.port: {node.transport_port}",
        "cluster.routing.allocation.disk.threshold_enabled: false",
        f"node.roles: [{', '.join(node.roles)}]",
    ]
    lines += [f"node.attr.{k}: \"{v}\"" for k, v in node.attrs.items()]
    if len(all_nodes) == 1:
        lines.append("discovery.type: single-node")
    else:
        seeds = ", ".join(f'"127.0.0.1:{n.transport_port}"' for n in all_nodes)
        lines.append(f"discovery.seed_hosts: [{seeds}]")
        lines.append(f"cluster.initial_cluster_manager_nodes: [\"{all_nodes[0].name}\"]")
    return "\n".join(lines) + "\n"


def _jvm_options(heap: str, plan: NodePlan) -> str:
    # Offline DJL: no downloads, no telemetry call to 169.254.169.254; on 2.x only -D reaches DJL (Security Manager).
    return (f"-Xms{heap}\n-Xmx{heap}\n-Dai.djl.offline=true\n-DOPT_OUT_TRACKING=true\n")


def _absolute_jvm_paths(jvm_options: Path, ndir: Path) -> None:
    """jvm.options names gc logs, heap dumps and error files relative to the (read-only) install; point them here."""
    text = jvm_options.read_text()
    text = text.replace("file=logs/", f"file={ndir}/logs/").replace("HeapDumpPath=data", f"HeapDumpPath={ndir}/data")
    text = text.replace("ErrorFile=logs/", f"ErrorFile={ndir}/logs/")
    jvm_options.write_text(text)


def _seed_data_dir(install: Path, plan: NodePlan, data: Path) -> None:
    src = install / "libtorch"
    for name in seed_dirs(plan):
        dst = data / "ml_cache" / "pytorch" / name
        if dst.exists():
            continue
        dst.mkdir(parents=True)
        for f in src.iterdir():
            try:
                os.link(f, dst / f.name)  # hard links: the 0.4-0.5 GB libtorch is stored once
            except OSError:
                shutil.copy2(f, dst / f.name)


def http_json(url: str, method: str = "GET", body: dict | None = None, timeout: float = 10.0,
              access: secure_mod.Access | None = None):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **(access.headers() if access else {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout, context=access.context() if access else None) as resp:
        return json.loads(resp.read() or b"null")


def start(version: str = "3.6.0", port: int = 9200, heap: str = "1g", nodes: int = 1, home: Path | None = None,
          cache: Path | None = None, timeout: float = 240.0, ml_attr: str = "gpu=true", fresh: bool = False,
          secure: bool = False, log=print) -> ClusterState:
    """Start (or restart) a local cluster. A restart with the same version and node count keeps its data, so
    registered models survive ``stop``/``start``; ``fresh`` (or another version) starts from empty data.

    ``timeout`` bounds everything after the install is ready: the launchers, every JVM's pid file and the cluster's
    health. Whatever goes wrong after a launch (a timeout, an error, Ctrl-C) stops every JVM this start launched."""
    plan = plan_for(version, secure)
    home = home or default_home()
    cache = cache or default_cache()
    if nodes < 1 or nodes > 4:
        raise SparsepackError(f"--nodes {nodes}: use 1 to 4 (each node takes its heap plus ~0.5 GB off-heap here)")
    cdir = cluster_dir(home, port)
    existing = load_state(home, port)
    running = running_nodes(cdir)
    if running:
        recorded = (existing is not None and set(running) == {n.name for n in existing.nodes}
                    and _healthy(existing.url, access=secure_mod.node_access(cdir)))
        if recorded and existing.version == plan.version and len(existing.nodes) == nodes and existing.secure == secure:
            log(f"OpenSearch {existing.version} already running at {existing.url}")
            return existing
        if recorded:
            raise SparsepackError(f"a sparsepack cluster (OpenSearch {existing.version}, {len(existing.nodes)} node(s)) "
                                  f"already runs on port {port}; `sparsepack node stop --port {port}` first")
        pids = ", ".join(f"{name} pid {p.pid}" for name, p in sorted(running.items()))
        why = "no cluster.json records it" if existing is None else "not the healthy cluster cluster.json records"
        log(f"port {port} is held by OpenSearch left over from an earlier sparsepack start ({pids}; {why}); stopping it")
        stop_processes(cdir)
    infos = []
    attr_key, _, attr_val = ml_attr.partition("=")
    for i in range(nodes):
        roles = ["cluster_manager", "data", "ingest", "ml"] if nodes == 1 else (["cluster_manager", "data", "ingest"] if i == 0 else ["ml"])
        attrs = {} if i == 0 else {attr_key: attr_val or "true"}
        infos.append(NodeInfo(f"node-{i}", port + i, port + 100 + i, roles, attrs))
    for info in infos:
        for p in (info.http_port, info.transport_port):
            if not _port_free(p):
                raise SparsepackError(f"port {p} on 127.0.0.1 is taken; {_port_owner_hint(p)}")
    java_home = plan.java_home()
    home.mkdir(parents=True, exist_ok=True)
    install = ensure_install(plan, home, cache, log=log)
    ids = _ensure_user()
    _make_readable(install)
    keep = (not fresh and existing is not None and existing.version == plan.version and len(existing.nodes) == nodes
            and existing.secure == secure)
    if not keep:
        shutil.rmtree(cdir, ignore_errors=True)  # another version or shape: its data cannot be reused
    state = ClusterState(plan.version, str(home), infos, secure)
    creds = secure_mod.prepare(cdir, state.url, reuse=keep) if secure else None
    cluster_name = f"sparsepack-{port}"
    for info in infos:
        ndir = cdir / info.name
        conf = ndir / "config"
        shutil.rmtree(conf, ignore_errors=True)  # configuration is always rewritten; data and logs are kept
        shutil.copytree(install / "config", conf)
        _absolute_jvm_paths(conf / "jvm.options", ndir)
        extra = secure_mod.configure_node(conf, cdir, creds) if secure else ["plugins.security.disabled: true"] if plan.securable else []
        (conf / "opensearch.yml").write_text(_node_config(plan, info, infos, ndir, cluster_name) + "".join(f"{l}\n" for l in extra))
        (conf / "jvm.options.d").mkdir(exist_ok=True)
        (conf / "jvm.options.d" / "sparsepack.options").write_text(_jvm_options(heap, plan))
        (ndir / "logs").mkdir(parents=True, exist_ok=True)
        (ndir / PIDFILE).unlink(missing_ok=True)  # a killed JVM leaves its pid file behind
        _seed_data_dir(install, plan, ndir / "data")
    _chown_tree(cdir, ids)
    secure_mod.protect(cdir)
    _make_readable(cdir)
    _save_state(state, port)  # before any launch: an interrupted start stays visible to `node status` / `node stop`
    # The cleanup below polls through the registry client: import it before any JVM exists. An interrupt landing in
    # the middle of that first import would leave half-initialised modules behind, and the cleanup would then fail
    # on its own import with the JVMs still running.
    _waiter(port)
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        with _termination_as_interrupt():
            for info in infos:
                _launch(install, java_home, cdir / info.name, ids, deadline)
            _wait_started(state, cdir, deadline, timeout)
            _save_state(state, port)
            log(f"OpenSearch {plan.version} ({nodes} node{'s' if nodes > 1 else ''}) up at {state.url} in {time.monotonic() - t0:.0f}s")
            apply_node_settings(state.url, secure_mod.node_access(cdir))
    except BaseException:  # KeyboardInterrupt included: no JVM of this start outlives it
        with _interrupts_deferred():
            stop_processes(cdir)
        raise
    return state


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


def _interrupts_deferred():
    """A second Ctrl-C (or SIGTERM) while the JVMs are being stopped would abort the stop and orphan them: both are
    ignored until the stop is done (the first one is already being handled)."""
    return _signal_handlers({signal.SIGINT: signal.SIG_IGN, signal.SIGTERM: signal.SIG_IGN})


class _Terminated(KeyboardInterrupt):
    """SIGTERM during a start (a CI job cancelled, `timeout`, systemd): handled like Ctrl-C, so the cleanup runs."""


def _raise_terminated(signum, frame):
    raise _Terminated(f"signal {signum}")


def _termination_as_interrupt():
    """Python's default SIGTERM ends the process at once, skipping the ``except`` that stops the JVMs just launched;
    a handler that raises lets it run."""
    return _signal_handlers({signal.SIGTERM: _raise_terminated})


def _port_owner_hint(port: int) -> str:
    """The exact command when a sparsepack node of another home (SPARSEPACK_HOME) holds ``port``."""
    for proc in node_processes():
        index = proc.node_dir.name.removeprefix("node-")
        if proc.jvm and proc.port is not None and index.isdigit() and port in (proc.port + int(index), proc.port + 100 + int(index)):
            home = proc.node_dir.parent.parent.parent
            return (f"a sparsepack node under {home} holds it: `SPARSEPACK_HOME={home} sparsepack node stop "
                    f"--port {proc.port}`, or pass another --port")
    return "stop what uses it or pass --port"


def apply_node_settings(url: str, access: secure_mod.Access | None = None) -> dict:
    """PUT the cluster-settings template, rendered for this node's version with test-node values."""
    from ..templates import render

    version = http_json(url, access=access)["version"]["number"]
    body = render("cluster-settings", None, version, **NODE_ML_SETTINGS)
    http_json(f"{url}/_cluster/settings", "PUT", body, access=access)
    return body


def _launch(install: Path, java_home: Path, ndir: Path, ids, deadline: float) -> None:
    """Run the daemonizing launcher. It returns once the JVM process exists; the JVM writes its pid file later (seconds,
    or much longer on a busy machine), which :func:`_wait_started` waits for."""
    env = {"PATH": "/usr/bin:/bin", "OPENSEARCH_JAVA_HOME": str(java_home), "OPENSEARCH_PATH_CONF": str(ndir / "config"),
           "HOME": str(ndir), "LANG": "C.UTF-8"}
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
            proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  cwd=str(ndir), timeout=max(1.0, deadline - time.monotonic()), start_new_session=True)
        except subprocess.TimeoutExpired:
            raise ClusterError(f"the OpenSearch launcher of {ndir.name} did not return within the start timeout; raise "
                               f"--timeout or see {launcher_log}") from None
    if proc.returncode != 0:
        lines = [l for l in launcher_log.read_text(errors="replace").splitlines() if l.strip() and "no-jdk" not in l]
        tail = " | ".join(lines[-4:])
        raise SparsepackError(f"OpenSearch failed to start: {tail or 'no output'}; see {ndir / 'logs'}")


def _read_pid(ndir: Path) -> int:
    try:
        return int((ndir / PIDFILE).read_text().strip() or 0)
    except (OSError, ValueError):
        return 0


def _health(url: str, access: secure_mod.Access | None = None) -> dict | None:
    try:
        return http_json(f"{url}/_cluster/health", timeout=3, access=access)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def _healthy(url: str, nodes: int = 1, access: secure_mod.Access | None = None) -> bool:
    health = _health(url, access) or {}
    return health.get("status") in ("green", "yellow") and health.get("number_of_nodes", 0) >= nodes


def _waiter(port: int):
    """A Cluster handle for its bounded polling (Cluster.wait_for); the node module's own checks use http_json."""
    from ..registry.connection import ConnectionOptions, connect

    return connect(ConnectionOptions(url=f"http://127.0.0.1:{port}", timeout=3, retries=0))


def _wait_started(state: ClusterState, cdir: Path, deadline: float, timeout: float) -> None:
    """Until ``deadline``: every node's JVM alive with its pid file written, and the cluster healthy with all nodes."""

    def started() -> bool:
        procs = node_processes(cdir)
        for info in state.nodes:
            mine = [p for p in procs if p.node_dir.name == info.name]
            if not mine:
                raise ClusterError(f"OpenSearch node {info.name} exited during start-up; last log lines: "
                                   f"{log_tail(cdir / info.name, 6)}")
            pid = _read_pid(cdir / info.name)
            info.pid = pid if any(p.jvm and p.pid == pid for p in mine) else 0
        return all(n.pid for n in state.nodes) and _healthy(state.url, len(state.nodes), secure_mod.node_access(cdir))

    try:
        _waiter(state.nodes[0].http_port).wait_for(started, max(0.0, deadline - time.monotonic()), "the node")
    except ClusterError as exc:
        if "timed out" not in str(exc):
            raise
        waiting = [n.name for n in state.nodes if not n.pid]
        what = f"no pid file yet from {', '.join(waiting)}" if waiting else "not healthy"
        raise ClusterError(f"OpenSearch not up after {timeout:.0f}s ({what}); raise --timeout on a busy machine, or see "
                           f"the last log lines: {log_tail(cdir / (waiting or [state.nodes[0].name])[0], 6)}") from None


def log_file(ndir: Path) -> Path | None:
    logs = sorted((ndir / "logs").glob("sparsepack-*.log"))
    logs = [p for p in logs if "_" not in p.name] or logs
    return logs[0] if logs else None


def log_tail(ndir: Path, n: int = 40) -> str:
    path = log_file(ndir)
    if path is None:
        return "(no log written)"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])


def stop_processes(cdir: Path, timeout: float = 60.0) -> int:
    """SIGTERM every process of the cluster folder's nodes (JVMs and launchers), SIGKILL what is left after ``timeout``.
    Scans again until none is left, since a launcher may fork its JVM meanwhile. Returns how many were signalled."""
    signalled: set[int] = set()

    def gone(sig=signal.SIGTERM) -> bool:
        procs = node_processes(cdir)
        for proc in sorted(procs, key=lambda p: p.node_dir.name, reverse=True):  # the cluster manager last
            if proc.pid not in signalled or sig == signal.SIGKILL:
                signalled.add(proc.pid)
                try:
                    os.kill(proc.pid, sig)
                except ProcessLookupError:
                    pass
        return not procs

    waiter = _waiter(int(cdir.name) if cdir.name.isdigit() else 9200)
    try:
        waiter.wait_for(gone, timeout, f"the nodes in {cdir} to stop", interval=0.5)
    except ClusterError:
        waiter.wait_for(lambda: gone(signal.SIGKILL), 30, f"the nodes in {cdir} to die", interval=0.5)
    return len(signalled)


def stop(port: int = 9200, home: Path | None = None, quiet: bool = False, log=print) -> bool:
    """Stop the cluster on ``port``: every node process found under its folder, whether or not cluster.json exists."""
    home = home or default_home()
    cdir = cluster_dir(home, port)
    state = load_state(home, port)
    if state is None and not node_processes(cdir):
        if not quiet:
            log(f"no sparsepack cluster recorded or running on port {port}")
        return False
    count = stop_processes(cdir)
    if not quiet:
        if state is not None:
            log(f"stopped OpenSearch {state.version} on port {port}")
        else:
            log(f"stopped {count} OpenSearch process(es) on port {port} found from their command lines (no cluster.json)")
    return True


def status(port: int = 9200, home: Path | None = None) -> dict:
    """What runs on ``port``, from the node processes themselves; cluster.json adds the version when it exists."""
    home = home or default_home()
    state = load_state(home, port)
    running = running_nodes(cluster_dir(home, port))
    if state is None and not running:
        return {"running": False, "port": port}
    url = state.url if state else f"http://127.0.0.1:{port}"
    version = state.version if state else next((p.version for p in running.values() if p.version), None)
    out = {"running": bool(running), "version": version, "url": url, "nodes": sorted(running),
           "pids": {name: p.pid for name, p in sorted(running.items())}, "healthy": False}
    if state is None:
        out["recorded"] = False
        out["note"] = (f"no cluster.json: found from the node processes' command lines; "
                       f"`sparsepack node stop --port {port}` stops them")
    if running:
        out["healthy"] = _healthy(url, len(running), secure_mod.node_access(cluster_dir(home, port)))
    if secure_mod.credentials_path(cluster_dir(home, port)).exists():
        out["credentials_file"] = str(secure_mod.credentials_path(cluster_dir(home, port)))  # never the passwords
    return out
