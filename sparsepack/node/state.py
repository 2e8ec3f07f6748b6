"""Where a local cluster's files live, and its state file (cluster.json): the version, nodes and ports it was started with."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_FILE = "cluster.json"


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
    # The process that ran the start (pid, argv): tells a guard whether a node is its own or another session's.
    started_by: dict | None = None

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
    return ClusterState(
        raw["version"],
        raw["home"],
        [NodeInfo(**n) for n in raw["nodes"]],
        raw.get("secure", False),
        raw.get("started_by"),
    )


def save_state(state: ClusterState, port: int) -> None:
    path = cluster_dir(Path(state.home), port) / STATE_FILE
    path.write_text(json.dumps(asdict(state), indent=2))
