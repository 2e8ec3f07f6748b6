"""Where a model is really loaded, as opposed to what its stored state says.

ML Commons keeps ``model_state: DEPLOYED`` in the model index across a node restart (auto-redeploy loads it again
some seconds later, predict answering HTTP 400 meanwhile) and across the loss of a node (a deploy-to-all model's
planned nodes shrink to the nodes still there). The profile API lists the nodes that hold a predictor, and the deploy
tasks list the nodes a model was deployed on: those two, with the stored record, say whether a model can answer."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import ClusterError
from .connection import Cluster

BASE = "/_plugins/_ml"
STORED_DEPLOYED = {"DEPLOYED", "PARTIALLY_DEPLOYED", "LOADED", "PARTIALLY_LOADED"}
AUTO_REDEPLOY = "plugins.ml_commons.model_auto_redeploy.enable"
AUTO_REDEPLOY_RETRIES = "plugins.ml_commons.model_auto_redeploy.lifetime_retry_times"
# How long an auto-redeploy in progress is waited for before sparsepack deploys the model itself (never past the
# operation's own timeout). Measured on a 3.6.0 node: 10-20 s from healthy to loaded.
AUTO_REDEPLOY_GRACE_SECONDS = 60.0


@dataclass(frozen=True)
class Deployment:
    """One model's deployment truth. ``expected`` is the nodes of its latest deploy (a node lost since included) plus
    the nodes ML Commons plans for it now; ``missing`` is what of that holds no predictor."""

    model_id: str
    stored_state: str | None
    loaded_on: tuple[str, ...] = ()
    planned: tuple[str, ...] = ()
    expected: tuple[str, ...] = ()
    node_names: dict[str, str] = field(default_factory=dict)  # id -> name, for the nodes in the cluster now
    auto_redeploy: bool | None = None  # None: the cluster settings could not be read
    redeploy_retries: int = 0
    redeploy_retry_limit: int | None = None

    @property
    def stored_deployed(self) -> bool:
        return self.stored_state in STORED_DEPLOYED

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(n for n in self.expected if n not in self.loaded_on)

    @property
    def missing_here(self) -> tuple[str, ...]:
        """Missing on nodes that are in the cluster now (a node back from a crash or a restart)."""
        return tuple(n for n in self.missing if n in self.node_names)

    @property
    def usable(self) -> bool:
        """Predict can be answered: some node holds the model."""
        return bool(self.loaded_on)

    @property
    def redeploy_pending(self) -> bool:
        """Stored as deployed (or DEPLOYING: auto-redeploy at work), loaded nowhere: a restart that auto-redeploy is
        (or should be) loading again."""
        return (self.stored_deployed or self.stored_state == "DEPLOYING") and not self.loaded_on

    @property
    def auto_redeploy_active(self) -> bool:
        """Auto-redeploy is on and has not used up its retries on this model."""
        if self.auto_redeploy is False:
            return False
        return self.redeploy_retry_limit is None or self.redeploy_retries < self.redeploy_retry_limit

    def name(self, node_id: str) -> str:
        label = self.node_names.get(node_id)
        return f"{label} ({node_id})" if label else f"{node_id} (not in the cluster now)"

    def summary(self) -> str:
        """'loaded on 1 of 2 nodes, missing node-1 (id)'."""
        total = len(set(self.expected) | set(self.loaded_on))
        text = f"loaded on {len(self.loaded_on)} of {total} node{'s' if total != 1 else ''}"
        if self.missing:
            text += ", missing " + ", ".join(self.name(n) for n in self.missing)
        return text

    def as_dict(self) -> dict:
        return {
            "model_id": self.model_id,
            "stored_state": self.stored_state,
            "loaded_on": list(self.loaded_on),
            "loaded_on_names": [self.node_names.get(n) for n in self.loaded_on],
            "planned": list(self.planned),
            "expected": list(self.expected),
            "missing": list(self.missing),
            "missing_names": [self.name(n) for n in self.missing],
            "loaded": self.summary(),
            "auto_redeploy": self.auto_redeploy,
            "auto_redeploy_retries": self.redeploy_retries,
            "auto_redeploy_retry_limit": self.redeploy_retry_limit,
        }


def loaded_nodes(cluster: Cluster, model_id: str) -> list[str]:
    """Nodes that hold a predictor for the model (a node that only routed predict requests lists the model too,
    with request stats but no predictor)."""
    prof = (
        cluster.call(
            f"GET {BASE}/profile/models/{model_id}", cluster.ml.get_profile_models, model_id=model_id, ok_404=True
        )
        or {}
    )
    return sorted(
        nid for nid, node in prof.get("nodes", {}).items() if node.get("models", {}).get(model_id, {}).get("predictor")
    )


def last_deployed_on(cluster: Cluster, model_id: str, since_ms: int | None) -> set[str]:
    """Worker nodes of the model's latest completed deploy task after ``since_ms`` (its last undeploy): where it
    was loaded last, a node since lost included. Empty where the task index cannot be read (a least-privilege user)."""
    flt: list[dict[str, Any]] = [
        {"term": {"model_id": model_id}},
        {"term": {"task_type": "DEPLOY_MODEL"}},
        {"term": {"state": "COMPLETED"}},
    ]
    if since_ms:
        flt.append({"range": {"create_time": {"gt": since_ms}}})
    body = {"size": 1, "sort": [{"create_time": {"order": "desc"}}], "query": {"bool": {"filter": flt}}}
    try:
        res = cluster.call(f"POST {BASE}/tasks/_search", cluster.ml.search_tasks, body=body, ok_404=True) or {}
    except ClusterError:
        return set()
    return {n for hit in res.get("hits", {}).get("hits", []) for n in hit["_source"].get("worker_node") or []}


def loaded_everywhere(cluster: Cluster) -> dict[str, list[str]]:
    """model id -> nodes holding a predictor for it, for every model, from one profile call."""
    prof = cluster.call(f"GET {BASE}/profile/models", cluster.ml.get_profile_models, ok_404=True) or {}
    out: dict[str, list[str]] = {}
    for nid, node in prof.get("nodes", {}).items():
        for mid, entry in node.get("models", {}).items():
            if entry.get("predictor"):
                out.setdefault(mid, []).append(nid)
    return {mid: sorted(nodes) for mid, nodes in out.items()}


def node_names(cluster: Cluster) -> dict[str, str]:
    # node_id given: with a metric alone the client asks for /_nodes/_none, a node filter that matches no node
    nodes = (
        cluster.call("GET /_nodes/_all/_none", cluster.client.nodes.info, node_id="_all", metric="_none", ok_404=True)
        or {}
    )
    return {nid: n.get("name", nid) for nid, n in nodes.get("nodes", {}).items()}


def auto_redeploy_settings(cluster: Cluster) -> tuple[bool | None, int | None]:
    """(enabled, lifetime retry limit) from the cluster settings, defaults included; (None, None) if unreadable."""
    try:
        s = cluster.call(
            "GET /_cluster/settings",
            cluster.client.cluster.get_settings,
            params={"include_defaults": "true", "flat_settings": "true"},
        )
    except ClusterError:
        return None, None
    merged = {**s.get("defaults", {}), **s.get("persistent", {}), **s.get("transient", {})}
    enabled = merged.get(AUTO_REDEPLOY)
    limit = merged.get(AUTO_REDEPLOY_RETRIES)
    return (None if enabled is None else str(enabled).lower() == "true"), (int(limit) if limit is not None else None)


def read(
    cluster: Cluster,
    model_id: str,
    settings: tuple[bool | None, int | None] | None = None,
    names: dict[str, str] | None = None,
    model: dict | None = None,
    loaded: list[str] | None = None,
) -> Deployment:
    """The model's deployment truth now. The other arguments, when given, save calls while reading many models."""
    if model is None:
        model = (
            cluster.call(f"GET {BASE}/models/{model_id}", cluster.ml.get_model, model_id=model_id, ok_404=True) or {}
        )
    state = model.get("model_state")
    if loaded is None:
        loaded = loaded_nodes(cluster, model_id) if model else []
    planned = sorted(model.get("planning_worker_nodes") or [])
    expected: set[str] = set()
    if state in STORED_DEPLOYED | {"DEPLOYING", "DEPLOY_FAILED"}:  # DEPLOY_FAILED: what ML Commons' sync says of a
        # deployed model that no node loaded again after a restart
        expected = set(planned) | last_deployed_on(cluster, model_id, model.get("last_undeployed_time"))
    enabled, limit = settings if settings is not None else auto_redeploy_settings(cluster)
    return Deployment(
        model_id,
        state,
        tuple(loaded),
        tuple(planned),
        tuple(sorted(expected)),
        names if names is not None else node_names(cluster),
        enabled,
        int(model.get("auto_redeploy_retry_times") or 0),
        limit,
    )


def stored_models(cluster: Cluster) -> dict[str, dict]:
    """Every model's stored document (id -> source), its upload chunks left out."""
    body = {"size": 1000, "query": {"bool": {"must_not": [{"exists": {"field": "chunk_number"}}]}}}
    res = cluster.call(f"POST {BASE}/models/_search", cluster.ml.search_models, body=body, ok_404=True) or {}
    return {hit["_id"]: hit["_source"] for hit in res.get("hits", {}).get("hits", [])}


def read_many(cluster: Cluster, models: dict[str, dict]) -> dict[str, Deployment]:
    """Deployment truth of many models (id -> stored model document) with one profile call."""
    settings, names, loaded = auto_redeploy_settings(cluster), node_names(cluster), loaded_everywhere(cluster)
    return {mid: read(cluster, mid, settings, names, doc, loaded.get(mid, [])) for mid, doc in models.items()}


class NotLoadedError(ClusterError):
    """A model stored as deployed that no node can answer for."""

    def __init__(self, dep: Deployment, what: str):
        if dep.stored_state is None:  # no stored document: a wrong or deleted id, nothing to deploy again
            message = f"{what}: no model {dep.model_id} on this cluster; check the id (`sparsepack list`)"
        else:
            message = (
                f"{what}: model {dep.model_id} is stored as {dep.stored_state} but {dep.summary()}; deploy it again"
            )
        super().__init__(message)
        self.deployment = dep


def require_loaded(cluster: Cluster, model_id: str, timeout: float, what: str) -> Deployment:
    """The model's reading once some node holds it, waiting within ``timeout`` for an auto-redeploy in progress."""
    dep = read(cluster, model_id)
    if dep.redeploy_pending:
        dep = wait_for_auto_redeploy(cluster, model_id, timeout)
    if not dep.usable:
        raise NotLoadedError(dep, what)
    return dep


def wait_for_auto_redeploy(cluster: Cluster, model_id: str, timeout: float, everywhere: bool = False) -> Deployment:
    """Wait, within ``timeout``, while the model is stored as deployed, loaded nowhere (``everywhere``: missing on a
    node in the cluster, one that came back), and auto-redeploy may still load it. Returns the last reading: loaded,
    or the reason to deploy it by hand (auto-redeploy off or given up, or the grace used up). A deploy sent while
    auto-redeploy loads the model fails on that node with "Duplicate deploy model task"."""
    deadline = time.monotonic() + min(timeout, AUTO_REDEPLOY_GRACE_SECONDS)
    settings = auto_redeploy_settings(cluster)
    while True:
        dep = read(cluster, model_id, settings)
        gap = dep.missing_here if everywhere else ()
        # a predictor appears a moment before the stored state leaves DEPLOYING: settled is both
        settled = dep.usable and dep.stored_state != "DEPLOYING" and not gap
        pending = dep.redeploy_pending or (dep.stored_deployed and bool(gap))
        waiting_on_it = pending and (dep.auto_redeploy_active or dep.stored_state == "DEPLOYING")
        loading = dep.usable and dep.stored_state == "DEPLOYING"
        if settled or not (waiting_on_it or loading) or time.monotonic() >= deadline:
            return dep
        time.sleep(1.0)
