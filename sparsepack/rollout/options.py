"""What a release run is asked to do."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..contract.naming import default_group_name


@dataclass
class ReleaseOptions:
    group: str | None = None
    clear_previous: bool = False
    node_ids: list[str] = field(default_factory=list)
    node_attr: str | None = None
    timeout: float = 300.0
    keep_on_failure: bool = False
    keep: bool = False
    apply_settings: bool = False
    smoke: bool = True
    field_type: str = "rank_features"  # the smoke index's field: rank_features, or sparse_vector (SEISMIC, 3.3+)
    progress: bool = True
    switch_pipelines: list[str] = field(default_factory=list)  # ["all"] or pipeline names
    lease_ttl: float | None = None  # seconds; None: $SPARSEPACK_LEASE_TTL or 60 (see registry/lease.py)
    artifact_base_url: str | None = None  # register each zip from BASE/<file> (hosted package) instead of uploading
    artifact_format: str | None = (
        None  # torchscript | onnx: which document artifact to register (None: the package's first)
    )
    access_mode: str | None = None  # public | private | restricted: a new model group's access (model access control)
    backend_roles: list[str] = field(default_factory=list)  # restricted groups: who may see and deploy the models
    migrate_aliases: list[str] = field(default_factory=list)  # aliases moved onto the new version (blue/green)
    allow_mixed_vectors: bool = False  # switch pipelines of indices whose documents another model encoded

    def group_name(self, manifest: dict) -> str:
        return self.group or default_group_name(manifest["name"])

    def plans_upgrade(self) -> bool:
        return self.clear_previous or bool(self.switch_pipelines) or bool(self.migrate_aliases)
