"""What the release steps hand each other: the package, the cluster, and the ids each step creates or finds."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..registry import lease, models
from ..registry.connection import Cluster, ConnectionOptions
from .options import ReleaseOptions
from .report import Report


@dataclass
class ReleaseContext:
    target: str  # a model (id or path) to package first, or a package directory
    conn: ConnectionOptions
    opts: ReleaseOptions
    report: Report
    package_dir: str | None = None  # where a model is packaged
    package_kwargs: dict = field(default_factory=dict)
    created: models.Created = field(default_factory=models.Created)  # what a rollback may remove
    manifest: dict = field(default_factory=dict)
    encoder: Any = None  # the source model when this run packaged it: the smoke test compares the cluster with it
    version: str = ""  # the cluster's OpenSearch version, from preflight
    group_id: str | None = None
    model_ids: dict[str, str] = field(default_factory=dict)  # by role: document, query
    pipelines_to_switch: list[tuple[str, str]] = field(default_factory=list)  # (kind, name), chosen before registering
    pipelines_switched: list = field(default_factory=list)  # switch.Change of each pipeline now on the new version
    removed_previous: list[str] = field(default_factory=list)
    migration_sources: dict[str, str] = field(default_factory=dict)  # alias -> the index it served from before
    proven: bool = False  # the new version passed every check: a later failure keeps it
    # Set by the steps that connect, lease and load the package; read through the properties below by later steps.
    _cluster: Cluster | None = field(default=None, init=False, repr=False)
    _coord: lease.Coordinator | None = field(default=None, init=False, repr=False)
    _root: Path | None = field(default=None, init=False, repr=False)

    @property
    def connected(self) -> bool:
        return self._cluster is not None

    @property
    def cluster(self) -> Cluster:
        if self._cluster is None:
            raise RuntimeError("no cluster connection yet: the connect step runs before this one")
        return self._cluster

    @cluster.setter
    def cluster(self, value: Cluster) -> None:
        self._cluster = value

    @property
    def coordinating(self) -> bool:
        return self._coord is not None

    @property
    def coord(self) -> lease.Coordinator:
        if self._coord is None:
            raise RuntimeError("no release coordinator yet: the take_lease step runs before this one")
        return self._coord

    @coord.setter
    def coord(self, value: lease.Coordinator) -> None:
        self._coord = value

    @property
    def root(self) -> Path:
        """The package directory."""
        if self._root is None:
            raise RuntimeError("no package yet: the package step runs before this one")
        return self._root

    @root.setter
    def root(self, value: Path) -> None:
        self._root = value

    def require_group_id(self) -> str:
        if self.group_id is None:
            raise RuntimeError("no model group yet: the register step finds or creates it before this one")
        return self.group_id

    @property
    def group_name(self) -> str:
        return self.opts.group_name(self.manifest)

    def query_encoder(self) -> Callable | None:
        """The source model's queries as dense vectors, to hold the cluster's query model to."""
        if self.encoder is None:
            return None
        encoder = self.encoder
        return lambda texts: encoder.encode_query(texts, convert_to_tensor=True).to_dense()
