"""Run a local OpenSearch cluster (1..N nodes on loopback) as a non-root user."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import SparsepackError
from .assemble import ensure_install, seed_dirs
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

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.nodes[0].http_port}"


def cluster_dir(home: Path, port: int) -> Path:
    return home / "clusters" / str(port)


def load_state(home: Path, port: int) -> ClusterState | None:
    path = cluster_dir(home, port) / STATE_FILE
    if not path.exists():
        return None
    raw = json.loads(path.read_text())
    return ClusterState(raw["version"], raw["home"], [NodeInfo(**n) for n in raw["nodes"]])


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


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie, or a recycled pid that is not an OpenSearch JVM, is not a running node
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
        return b"opensearch" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return True


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


def http_json(url: str, method: str = "GET", body: dict | None = None, timeout: float = 10.0):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read() or b"null")


def start(version: str = "3.6.0", port: int = 9200, heap: str = "1g", nodes: int = 1, home: Path | None = None,
          cache: Path | None = None, timeout: float = 240.0, ml_attr: str = "gpu=true", fresh: bool = False,
          log=print) -> ClusterState:
    """Start (or restart) a local cluster. A restart with the same version and node count keeps its data, so
    registered models survive ``stop``/``start``; ``fresh`` (or another version) starts from empty data."""
    plan = plan_for(version)
    home = home or default_home()
    cache = cache or default_cache()
    if nodes < 1 or nodes > 4:
        raise SparsepackError(f"--nodes {nodes}: use 1 to 4 (each node takes its heap plus ~0.5 GB off-heap here)")
    existing = load_state(home, port)
    if existing and any(_pid_alive(n.pid) for n in existing.nodes):
        if existing.version == plan.version and len(existing.nodes) == nodes and _healthy(existing.url):
            log(f"OpenSearch {existing.version} already running at {existing.url}")
            return existing
        raise SparsepackError(f"a sparsepack cluster already runs on port {port}; `sparsepack node stop --port {port}` first")
    infos = []
    attr_key, _, attr_val = ml_attr.partition("=")
    for i in range(nodes):
        roles = ["cluster_manager", "data", "ingest", "ml"] if nodes == 1 else (["cluster_manager", "data", "ingest"] if i == 0 else ["ml"])
        attrs = {} if i == 0 else {attr_key: attr_val or "true"}
        infos.append(NodeInfo(f"node-{i}", port + i, port + 100 + i, roles, attrs))
    for info in infos:
        for p in (info.http_port, info.transport_port):
            if not _port_free(p):
                raise SparsepackError(f"port {p} on 127.0.0.1 is taken; stop what uses it or pass --port")
    java_home = plan.java_home()
    home.mkdir(parents=True, exist_ok=True)
    install = ensure_install(plan, home, cache, log=log)
    ids = _ensure_user()
    _make_readable(install)
    cdir = cluster_dir(home, port)
    keep = not fresh and existing is not None and existing.version == plan.version and len(existing.nodes) == nodes
    if not keep:
        shutil.rmtree(cdir, ignore_errors=True)  # another version or shape: its data cannot be reused
    state = ClusterState(plan.version, str(home), infos)
    cluster_name = f"sparsepack-{port}"
    for info in infos:
        ndir = cdir / info.name
        conf = ndir / "config"
        shutil.rmtree(conf, ignore_errors=True)  # configuration is always rewritten; data and logs are kept
        shutil.copytree(install / "config", conf)
        _absolute_jvm_paths(conf / "jvm.options", ndir)
        (conf / "opensearch.yml").write_text(_node_config(plan, info, infos, ndir, cluster_name))
        (conf / "jvm.options.d").mkdir(exist_ok=True)
        (conf / "jvm.options.d" / "sparsepack.options").write_text(_jvm_options(heap, plan))
        (ndir / "logs").mkdir(parents=True, exist_ok=True)
        _seed_data_dir(install, plan, ndir / "data")
    _chown_tree(cdir, ids)
    _make_readable(cdir)
    t0 = time.time()
    for info in infos:
        info.pid = _launch(install, java_home, cdir / info.name, ids)
    _save_state(state, port)
    try:
        _wait_healthy(state, nodes, timeout, cdir)
    except SparsepackError:
        stop(port, home, quiet=True)
        raise
    log(f"OpenSearch {plan.version} ({nodes} node{'s' if nodes > 1 else ''}) up at {state.url} in {time.time() - t0:.0f}s")
    apply_node_settings(state.url)
    return state


def apply_node_settings(url: str) -> dict:
    """PUT the cluster-settings template, rendered for this node's version with test-node values."""
    from ..templates import render

    version = http_json(url)["version"]["number"]
    body = render("cluster-settings", None, version, **NODE_ML_SETTINGS)
    http_json(f"{url}/_cluster/settings", "PUT", body)
    return body


def _launch(install: Path, java_home: Path, ndir: Path, ids) -> int:
    pidfile = ndir / "opensearch.pid"
    env = {"PATH": "/usr/bin:/bin", "OPENSEARCH_JAVA_HOME": str(java_home), "OPENSEARCH_PATH_CONF": str(ndir / "config"),
           "HOME": str(ndir), "LANG": "C.UTF-8"}
    cmd = [str(install / "bin" / "opensearch"), "-d", "-p", str(pidfile)]
    if ids is not None:
        cmd = ["runuser", "-u", SERVICE_USER, "--", "env", *[f"{k}={v}" for k, v in env.items()], *cmd]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    launcher_log = ndir / "logs" / "launcher.out"
    # The daemon inherits stdout/stderr: a file, not a pipe, or the call would wait for the node to exit.
    with open(launcher_log, "w") as out:
        proc = subprocess.run(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=str(ndir))
    if proc.returncode != 0:
        lines = [l for l in launcher_log.read_text(errors="replace").splitlines() if l.strip() and "no-jdk" not in l]
        tail = " | ".join(lines[-4:])
        raise SparsepackError(f"OpenSearch failed to start: {tail or 'no output'}; see {ndir / 'logs'}")
    for _ in range(100):
        if pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text().strip())
        time.sleep(0.1)
    raise SparsepackError(f"OpenSearch wrote no pid file in {ndir}; see {ndir / 'logs'}")


def _healthy(url: str) -> bool:
    try:
        return http_json(f"{url}/_cluster/health", timeout=3)["status"] in ("green", "yellow")
    except (urllib.error.URLError, OSError, ValueError, KeyError):
        return False


def _wait_healthy(state: ClusterState, nodes: int, timeout: float, cdir: Path) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        for info in state.nodes:
            if not _pid_alive(info.pid):
                raise SparsepackError(f"OpenSearch node {info.name} exited during start-up; last log lines: {log_tail(cdir / info.name, 6)}")
        try:
            health = http_json(f"{state.url}/_cluster/health", timeout=3)
            if health["status"] in ("green", "yellow") and health["number_of_nodes"] >= nodes:
                return
        except (urllib.error.URLError, OSError, ValueError, KeyError):
            pass
        time.sleep(1.0)
    raise SparsepackError(f"OpenSearch not healthy after {timeout:.0f}s; last log lines: {log_tail(cdir / state.nodes[0].name, 6)}")


def log_file(ndir: Path) -> Path | None:
    logs = sorted((ndir / "logs").glob("sparsepack-*.log"))
    logs = [p for p in logs if "_" not in p.name] or logs
    return logs[0] if logs else None


def log_tail(ndir: Path, n: int = 40) -> str:
    path = log_file(ndir)
    if path is None:
        return "(no log written)"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])


def stop(port: int = 9200, home: Path | None = None, quiet: bool = False, log=print) -> bool:
    home = home or default_home()
    state = load_state(home, port)
    if state is None:
        if not quiet:
            log(f"no sparsepack cluster recorded on port {port}")
        return False
    for info in reversed(state.nodes):
        if _pid_alive(info.pid):
            os.kill(info.pid, signal.SIGTERM)
    deadline = time.time() + 60
    while time.time() < deadline and any(_pid_alive(n.pid) for n in state.nodes):
        time.sleep(0.5)
    for info in state.nodes:
        if _pid_alive(info.pid):
            os.kill(info.pid, signal.SIGKILL)
    if not quiet:
        log(f"stopped OpenSearch {state.version} on port {port}")
    return True


def status(port: int = 9200, home: Path | None = None) -> dict:
    home = home or default_home()
    state = load_state(home, port)
    if state is None:
        return {"running": False, "port": port}
    alive = [n.name for n in state.nodes if _pid_alive(n.pid)]
    out = {"running": bool(alive), "version": state.version, "url": state.url, "nodes": alive, "healthy": False}
    if alive:
        out["healthy"] = _healthy(state.url)
    return out
