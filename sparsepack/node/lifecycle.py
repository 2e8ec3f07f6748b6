"""Start, stop and inspect a local OpenSearch cluster (1..N nodes on loopback), run as a non-root user."""

from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path

from ..errors import LocalEnvironmentError, SparsepackError
from . import secure as secure_mod
from .assemble import ensure_install
from .config import apply_node_settings, seed_data_dir, write_node_config
from .interrupts import interrupts_deferred, termination_as_interrupt
from .logs import log_tail
from .plan import plan_for
from .processes import (
    PIDFILE,
    launch_node,
    node_processes,
    port_free,
    port_owner_hint,
    read_pid,
    running_nodes,
    stop_processes,
)
from .rest import is_healthy
from .service_user import chown_tree, ensure_service_user, make_readable
from .state import ClusterState, NodeInfo, cluster_dir, default_cache, default_home, load_state, save_state
from .wait import NodeTimeout, wait_for


def node_layout(port: int, nodes: int, ml_attr: str = "gpu=true") -> list[NodeInfo]:
    """One node holds every role; with more, node-0 is the cluster manager and data node, the others ML-only nodes
    carrying the ``ml_attr`` attribute. Http ports from ``port`` up, transport ports from ``port + 100`` up."""
    attr_key, _, attr_val = ml_attr.partition("=")
    infos = []
    for i in range(nodes):
        if nodes == 1:
            roles = ["cluster_manager", "data", "ingest", "ml"]
        else:
            roles = ["cluster_manager", "data", "ingest"] if i == 0 else ["ml"]
        attrs = {} if i == 0 else {attr_key: attr_val or "true"}
        infos.append(NodeInfo(f"node-{i}", port + i, port + 100 + i, roles, attrs))
    return infos


def start(
    version: str = "3.6.0",
    port: int = 9200,
    heap: str = "1g",
    nodes: int = 1,
    home: Path | None = None,
    cache: Path | None = None,
    timeout: float = 240.0,
    ml_attr: str = "gpu=true",
    fresh: bool = False,
    secure: bool = False,
    log=print,
) -> ClusterState:
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
        recorded = (
            existing is not None
            and set(running) == {n.name for n in existing.nodes}
            and is_healthy(existing.url, access=secure_mod.node_access(cdir))
        )
        if existing is not None and recorded:
            if existing.version == plan.version and len(existing.nodes) == nodes and existing.secure == secure:
                log(f"OpenSearch {existing.version} already running at {existing.url}")
                return existing
            raise SparsepackError(
                f"a sparsepack cluster (OpenSearch {existing.version}, {len(existing.nodes)} node(s)) "
                f"already runs on port {port}; `sparsepack node stop --port {port}` first"
            )
        if existing is not None and not fresh and _same_shape(existing, plan.version, nodes, secure):
            lost = [n for n in existing.nodes if n.name not in running]
            if lost and len(lost) < len(existing.nodes):
                return _bring_back(existing, lost, plan, cdir, cache, timeout, log)
        pids = ", ".join(f"{name} pid {p.pid}" for name, p in sorted(running.items()))
        why = "no cluster.json records it" if existing is None else "not the healthy cluster cluster.json records"
        log(
            f"port {port} is held by OpenSearch left over from an earlier sparsepack start ({pids}; {why}); stopping it"
        )
        stop_processes(cdir, f"start on port {port}: replacing leftover nodes ({pids}; {why})")
    infos = node_layout(port, nodes, ml_attr)
    for info in infos:
        for p in (info.http_port, info.transport_port):
            if not port_free(p):
                raise SparsepackError(f"port {p} on 127.0.0.1 is taken; {port_owner_hint(p)}")
    java_home = plan.java_home()
    home.mkdir(parents=True, exist_ok=True)
    install = ensure_install(plan, home, cache, log=log)
    ids = ensure_service_user()
    make_readable(install)
    keep = (
        not fresh
        and existing is not None
        and existing.version == plan.version
        and len(existing.nodes) == nodes
        and existing.secure == secure
    )
    if not keep:
        shutil.rmtree(cdir, ignore_errors=True)  # another version or shape: its data cannot be reused
    state = ClusterState(plan.version, str(home), infos, secure, started_by={"pid": os.getpid(), "argv": sys.argv})
    creds = secure_mod.prepare(cdir, state.url, reuse=keep) if secure else None
    for info in infos:
        ndir = cdir / info.name
        write_node_config(install, plan, info, infos, cdir, heap, creds)
        (ndir / "logs").mkdir(parents=True, exist_ok=True)
        (ndir / PIDFILE).unlink(missing_ok=True)  # a killed JVM leaves its pid file behind
        seed_data_dir(install, plan, ndir / "data")
    chown_tree(cdir, ids)
    secure_mod.protect(cdir)
    make_readable(cdir)
    save_state(state, port)  # before any launch: an interrupted start stays visible to `node status` / `node stop`
    t0 = time.monotonic()
    deadline = t0 + timeout
    try:
        with termination_as_interrupt():
            for info in infos:
                launch_node(install, java_home, cdir / info.name, ids, deadline)
            _wait_started(state, cdir, deadline, timeout)
            save_state(state, port)
            log(
                f"OpenSearch {plan.version} ({nodes} node{'s' if nodes > 1 else ''}) up at {state.url} in {time.monotonic() - t0:.0f}s"
            )
            apply_node_settings(state.url, secure_mod.node_access(cdir))
    except BaseException:  # KeyboardInterrupt included: no JVM of this start outlives it
        with interrupts_deferred():
            stop_processes(cdir, f"start on port {port} failed or was interrupted after its launch")
        raise
    return state


def _same_shape(state: ClusterState, version: str, nodes: int, secure: bool) -> bool:
    return state.version == version and len(state.nodes) == nodes and state.secure == secure


def _bring_back(
    state: ClusterState, lost: list[NodeInfo], plan, cdir: Path, cache: Path, timeout: float, log
) -> ClusterState:
    """Launch the recorded nodes that are down (a crash, a kill) with their data, leaving the live ones running: the
    nodes rejoin as themselves (same ids), which is what ML Commons needs to load their models there again."""
    names = ", ".join(n.name for n in lost)
    log(f"bringing back {names} of the OpenSearch {state.version} cluster on port {state.nodes[0].http_port}")
    install = ensure_install(plan, Path(state.home), cache, log=log)
    ids = ensure_service_user()
    deadline = time.monotonic() + timeout
    try:
        with termination_as_interrupt():
            for info in lost:
                (cdir / info.name / PIDFILE).unlink(missing_ok=True)  # a killed JVM leaves its pid file behind
                launch_node(install, plan.java_home(), cdir / info.name, ids, deadline)
            _wait_started(state, cdir, deadline, timeout)
    except BaseException:
        with interrupts_deferred():
            stop_processes(cdir, f"bringing back {names} failed or was interrupted", only={n.name for n in lost})
        raise
    save_state(state, state.nodes[0].http_port)
    log(f"{names} back in the cluster at {state.url}")
    return state


def _wait_started(state: ClusterState, cdir: Path, deadline: float, timeout: float) -> None:
    """Until ``deadline``: every node's JVM alive with its pid file written, and the cluster healthy with all nodes."""

    def started() -> bool:
        procs = node_processes(cdir)
        for info in state.nodes:
            mine = [p for p in procs if p.node_dir.name == info.name]
            if not mine:
                raise LocalEnvironmentError(
                    f"OpenSearch node {info.name} exited during start-up; last log lines: "
                    f"{log_tail(cdir / info.name, 6)}"
                )
            pid = read_pid(cdir / info.name)
            info.pid = pid if any(p.jvm and p.pid == pid for p in mine) else 0
        return all(n.pid for n in state.nodes) and is_healthy(state.url, len(state.nodes), secure_mod.node_access(cdir))

    try:
        wait_for(started, max(0.0, deadline - time.monotonic()), "the node")
    except NodeTimeout:
        waiting = [n.name for n in state.nodes if not n.pid]
        what = f"no pid file yet from {', '.join(waiting)}" if waiting else "not healthy"
        raise NodeTimeout(
            "OpenSearch to come up",
            timeout,
            f"OpenSearch not up after {timeout:.0f}s ({what}); raise --timeout on a busy machine, or see "
            f"the last log lines: {log_tail(cdir / (waiting or [state.nodes[0].name])[0], 6)}",
        ) from None


def stop(port: int = 9200, home: Path | None = None, quiet: bool = False, log=print) -> bool:
    """Stop the cluster on ``port``: every node process found under its folder, whether or not cluster.json exists."""
    home = home or default_home()
    cdir = cluster_dir(home, port)
    state = load_state(home, port)
    if state is None and not node_processes(cdir):
        if not quiet:
            log(f"no sparsepack cluster recorded or running on port {port}")
        return False
    count = stop_processes(cdir, f"stop(port={port})")
    if not quiet:
        if state is not None:
            log(f"stopped OpenSearch {state.version} on port {port}")
        else:
            log(
                f"stopped {count} OpenSearch process(es) on port {port} found from their command lines (no cluster.json)"
            )
    return True


def status(port: int = 9200, home: Path | None = None) -> dict:
    """What runs on ``port``, from the node processes themselves; cluster.json adds the version when it exists."""
    home = home or default_home()
    cdir = cluster_dir(home, port)
    state = load_state(home, port)
    running = running_nodes(cdir)
    if state is None and not running:
        return {"running": False, "port": port}
    url = state.url if state else f"http://127.0.0.1:{port}"
    version = state.version if state else next((p.version for p in running.values() if p.version), None)
    out = {
        "running": bool(running),
        "version": version,
        "url": url,
        "nodes": sorted(running),
        "pids": {name: p.pid for name, p in sorted(running.items())},
        "healthy": False,
    }
    if state is None:
        out["recorded"] = False
        out["note"] = (
            f"no cluster.json: found from the node processes' command lines; "
            f"`sparsepack node stop --port {port}` stops them"
        )
    if running:
        out["healthy"] = is_healthy(url, len(running), secure_mod.node_access(cdir))
    if secure_mod.credentials_path(cdir).exists():
        out["credentials_file"] = str(secure_mod.credentials_path(cdir))  # never the passwords
    return out
