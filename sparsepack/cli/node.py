"""``node start|stop|status|logs``: a local OpenSearch cluster with ML Commons and neural-search."""

from __future__ import annotations

from pathlib import Path

from ..errors import ClusterError, LocalEnvironmentError, SparsepackError
from . import exits
from .flags import add_opensearch_version, add_renamed
from .output import err, print_json

MAX_NODES = 4  # each node takes its heap plus ~0.5 GB off-heap


def add_parser(subparsers) -> None:
    sp = subparsers.add_parser("node", help="a local OpenSearch node with ML Commons and neural-search")
    nsub = sp.add_subparsers(dest="node_command", required=True, help="what to do with the local cluster")
    helps = {
        "start": "start (or restart, keeping its data) a local cluster",
        "stop": "stop the cluster on --port",
        "status": "what runs on --port, as JSON (exit 4 unless healthy)",
        "logs": "the last lines of a node's log",
    }
    for name, text in helps.items():
        n = nsub.add_parser(name, help=text)
        n.add_argument("--port", type=int, default=9200, help="HTTP port of the cluster's first node (default 9200)")
        if name == "start":
            add_opensearch_version(
                n,
                "--version",
                default=None,
                metavar="VERSION",
                help="3.6.0 (default), 2.19.6, or 2.19.1 (the secured line)",
            )
            n.add_argument(
                "--secure",
                action="store_true",
                help="security plugin with TLS and generated users (credentials.json); OpenSearch 2.19.1",
            )
            n.add_argument("--heap", default="1g", help="JVM heap per node, e.g. 512m or 2g (default 1g)")
            add_renamed(
                n,
                "--node-count",
                "--nodes",
                type=int,
                default=1,
                metavar="N",
                help=f"nodes: 1, or 1 + (N-1) dedicated ML nodes with attribute gpu=true (at most {MAX_NODES})",
            )
            n.add_argument("--fresh", action="store_true", help="discard the cluster's data (models, indices) first")
            n.add_argument(
                "--timeout",
                type=float,
                default=240.0,
                help="seconds for the JVMs' pid files and a healthy cluster (default 240)",
            )
            n.add_argument("--json", action="store_true", help="print url, version and nodes as JSON")
        if name == "logs":
            n.add_argument("--node", default="node-0", help="node name, node-0 (default) to node-3")
            n.add_argument("--lines", type=int, default=40, help="how many log lines (default 40)")
    sp.set_defaults(run=run, flag_of={"nodes": "--node-count", "timeout": "--timeout", "port": "--port"})


def run(args) -> int:
    return {"start": start, "stop": stop, "status": status, "logs": logs}[args.node_command](args)


def start_local_cluster(version: str, port: int, **kwargs):
    """A local start that fails is this machine's problem (Java, ports, time), not a remote cluster's: exit 5."""
    from ..node import lifecycle

    try:
        return lifecycle.start(version, port=port, log=err, **kwargs)
    except ClusterError as exc:
        raise LocalEnvironmentError(str(exc)) from exc


def start(args) -> int:
    from ..node.state import cluster_dir

    if not 1 <= args.node_count <= MAX_NODES:
        raise SparsepackError(
            f"--node-count {args.node_count}: use 1 to {MAX_NODES} (each node takes its heap plus "
            f"~0.5 GB off-heap here)"
        )
    state = start_local_cluster(
        args.opensearch_version,
        args.port,
        heap=args.heap,
        nodes=args.node_count,
        fresh=args.fresh,
        timeout=args.timeout,
        secure=args.secure,
    )
    out = {"url": state.url, "version": state.version, "nodes": [n.name for n in state.nodes]}
    if state.secure:
        from ..node import secure

        out["credentials_file"] = str(secure.credentials_path(cluster_dir(Path(state.home), args.port)))
    if args.json:
        print_json(out)
    else:
        print(state.url)
        if state.secure:
            err(f"users and passwords: {out['credentials_file']} (0600); CA: pass --ca-certs to the other commands")
    return exits.OK


def stop(args) -> int:
    from ..node import lifecycle

    return exits.OK if lifecycle.stop(args.port, log=err) else exits.CLUSTER


def status(args) -> int:
    from ..node import lifecycle

    st = lifecycle.status(args.port)
    print_json(st)
    return exits.OK if st.get("healthy") else exits.CLUSTER


def logs(args) -> int:
    from ..node.logs import log_tail
    from ..node.state import cluster_dir, default_home

    ndir = cluster_dir(default_home(), args.port) / args.node
    if not ndir.is_dir():
        raise SparsepackError(
            f"no sparsepack node {args.node} on port {args.port} (no {ndir}); check --port and --node"
        )
    print(log_tail(ndir, args.lines).replace(" | ", "\n"))
    return exits.OK
