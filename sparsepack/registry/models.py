"""ML Commons model lifecycle: group, deploy on chosen nodes, task polling, undeploy, delete (upload: model_upload.py)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from ..errors import ClusterError
from ..templates import render
from . import deployment, references
from .connection import Cluster

BASE = "/_plugins/_ml"
TASK_DONE = {"COMPLETED", "FAILED", "COMPLETED_WITH_ERROR", "CANCELLED", "EXPIRED"}
USABLE = {
    "REGISTERED",
    "DEPLOYED",
    "PARTIALLY_DEPLOYED",
    "DEPLOYING",
    "UNDEPLOYED",
    "DEPLOY_FAILED",
    "LOADED",
    "UPLOADED",
    "PARTIALLY_LOADED",
    "UNLOADED",
    "LOAD_FAILED",
}
DEPLOYED = {"DEPLOYED", "PARTIALLY_DEPLOYED", "LOADED", "PARTIALLY_LOADED"}


@dataclass
class Created:
    """What this run created, so a failure can remove exactly that and nothing else."""

    group_id: str | None = None
    model_ids: list[str] = field(default_factory=list)
    deployed: list[str] = field(default_factory=list)


def find_group(cluster: Cluster, name: str) -> str | None:
    found = cluster.call(
        f"POST {BASE}/model_groups/_search",
        cluster.ml.search_model_group,
        body={"query": {"term": {"name.keyword": name}}, "size": 1},
        ok_404=True,
    )
    hits = (found or {}).get("hits", {}).get("hits", [])
    return hits[0]["_id"] if hits else None


def ensure_group(
    cluster: Cluster,
    name: str,
    version: str,
    created: Created,
    access_mode: str | None = None,
    backend_roles: list[str] | None = None,
) -> tuple[str, bool]:
    """Find the group by name, or create it with ``access_mode`` (an existing group keeps its own access)."""
    group_id = find_group(cluster, name)
    if group_id:
        return group_id, False
    body = render(
        "model-group", None, version, group_name=name, access_mode=access_mode, backend_roles=backend_roles or None
    )
    group_id = cluster.call(f"POST {BASE}/model_groups/_register", cluster.ml.register_model_group, body=body)[
        "model_group_id"
    ]
    created.group_id = group_id
    return group_id, True


def get_group(cluster: Cluster, group_id: str) -> dict | None:
    return cluster.call(
        f"GET {BASE}/model_groups/{group_id}", cluster.ml.get_model_group, model_group_id=group_id, ok_404=True
    )


def get_model(cluster: Cluster, model_id: str) -> dict | None:
    return cluster.call(f"GET {BASE}/models/{model_id}", cluster.ml.get_model, model_id=model_id, ok_404=True)


def search_models(cluster: Cluster, body: dict) -> dict:
    return cluster.call(f"POST {BASE}/models/_search", cluster.ml.search_models, body=body, ok_404=True) or {}


def get_task(cluster: Cluster, task_id: str) -> dict:
    return cluster.call(f"GET {BASE}/tasks/{task_id}", cluster.ml.get_task, task_id=task_id)


def models_in_group(cluster: Cluster, group_id: str) -> list[dict]:
    body = {
        "size": 1000,
        "query": {
            "bool": {
                "filter": [{"term": {"model_group_id": group_id}}],
                "must_not": [{"exists": {"field": "chunk_number"}}],
            }
        },
    }
    res = search_models(cluster, body)
    return [{"model_id": h["_id"], **h["_source"]} for h in res.get("hits", {}).get("hits", [])]


def find_by_hash(cluster: Cluster, group_id: str, sha256: str) -> dict | None:
    for model in models_in_group(cluster, group_id):
        if model.get("model_content_hash_value") == sha256 and model.get("model_state") in USABLE:
            return model
    return None


def stale_uploads(cluster: Cluster, group_id: str, sha256: str) -> list[str]:
    return [
        m["model_id"]
        for m in models_in_group(cluster, group_id)
        if m.get("model_content_hash_value") == sha256 and m.get("model_state") not in USABLE
    ]


def is_group_version_conflict(exc: ClusterError) -> bool:
    """ML Commons bumps the model group's latest version on every register with optimistic concurrency, so two
    registers into one group at the same moment answer 409 "version conflict" to one of them: worth a retry."""
    return exc.status == 409 and "version conflict" in str(exc).lower()


def nodes_with_attr(cluster: Cluster, attr: str) -> list[str]:
    key, sep, value = attr.partition("=")
    if not sep:
        raise ClusterError(f"--node-attr {attr!r} is not KEY=VALUE (e.g. gpu=true)")
    nodes = cluster.call("GET /_nodes", cluster.client.nodes.info)["nodes"]
    chosen = sorted(nid for nid, n in nodes.items() if str(n.get("attributes", {}).get(key)) == value)
    if not chosen:
        raise ClusterError(f"no node has the attribute {key}={value}; set node.attr.{key}: {value} on the GPU/ML nodes")
    return chosen


def wait_task(cluster: Cluster, task_id: str, timeout: float, what: str) -> dict:
    task = cluster.wait_for(lambda: task_done(get_task(cluster, task_id)), timeout, what)
    if task["state"] != "COMPLETED":
        raise ClusterError(f"{what} ended {task['state']}: {node_errors(task)}")
    return task


def task_done(task: dict) -> dict | None:
    return task if task.get("state") in TASK_DONE else None


def task_errors(task: dict) -> dict | str | None:
    """The task's error field: per-node messages (node id -> message) when it parses as such, else the raw text."""
    raw = task.get("error")
    if not raw:
        return None
    try:
        errors = json.loads(raw)
    except (TypeError, json.JSONDecodeError):
        return str(raw)
    return errors if isinstance(errors, dict) else str(errors)


def node_errors(task: dict) -> str:
    """The task's per-node errors, verbatim."""
    errors = task_errors(task)
    if errors is None:
        return "no error reported by the server"
    if isinstance(errors, dict):
        return "; ".join(f"node {nid}: {msg}" for nid, msg in errors.items())
    return errors


def time_left(deadline: float) -> float:
    return max(deadline - time.monotonic(), 1.0)


def state_in(cluster: Cluster, model_id: str, states: set[str]) -> str | None:
    state = (get_model(cluster, model_id) or {}).get("model_state")
    return state if state in states else None


def worker_nodes(cluster: Cluster, model_id: str) -> list[str]:
    """Nodes that hold a predictor for the model (see deployment.loaded_nodes)."""
    return deployment.loaded_nodes(cluster, model_id)


def undeploy(cluster: Cluster, model_id: str, timeout: float = 60.0, check_references: bool = True) -> None:
    """Undeploy and wait until the model is loaded nowhere and its stored state says so; refused while a pipeline
    or index uses the model. An auto-redeploy in progress is waited out first, or it would load the model again
    right after the undeploy; a deploy that still lands after it is undeployed again."""
    if check_references:
        references.refuse_if_used(cluster, [model_id], f"undeploy {model_id}")
    deadline = time.monotonic() + timeout
    dep = deployment.read(cluster, model_id)
    if dep.redeploy_pending:
        deployment.wait_for_auto_redeploy(cluster, model_id, timeout / 2)

    def send() -> None:
        cluster.call(
            f"POST {BASE}/models/{model_id}/_undeploy", cluster.ml.undeploy_model, model_id=model_id, ok_404=True
        )

    def gone() -> bool:
        model = get_model(cluster, model_id)
        if model is None:
            return True
        state, loaded = model.get("model_state"), deployment.loaded_nodes(cluster, model_id)
        if state in DEPLOYED and loaded:
            # The undeploy answers once every node has dropped its predictor, so a predictor now is a deploy that
            # landed after it: ML Commons' auto-redeploy, queued at a restart while it was off, runs as soon as it is
            # turned on again.
            send()
            return False
        return state not in DEPLOYED | {"DEPLOYING"} and not loaded

    send()
    cluster.wait_for(gone, time_left(deadline), f"model {model_id} to undeploy")


def delete(cluster: Cluster, model_id: str, timeout: float = 60.0, check_references: bool = True) -> None:
    """Undeploy if needed, then delete; refused while a pipeline or index uses the model. A deploy that lands
    between the undeploy and the delete (ML Commons' auto-redeploy after a restart) is undeployed again."""
    model = get_model(cluster, model_id)
    if model is None:
        return
    if check_references:
        references.refuse_if_used(cluster, [model_id], f"delete {model_id}")
    deadline = time.monotonic() + timeout

    def delete_once() -> bool:
        try:
            cluster.call(f"DELETE {BASE}/models/{model_id}", cluster.ml.delete_model, model_id=model_id, ok_404=True)
            return True
        except ClusterError as exc:
            if not is_refused_while_deployed(exc):
                raise
        undeploy(cluster, model_id, time_left(deadline), check_references=False)
        return False

    if model.get("model_state") in DEPLOYED | {"DEPLOYING"}:
        undeploy(cluster, model_id, timeout, check_references=False)
    cluster.wait_for(delete_once, time_left(deadline), f"model {model_id} to delete")


def is_refused_while_deployed(exc: ClusterError) -> bool:
    """ML Commons answers 400 "Model cannot be deleted in deploying or deployed state" to a DELETE of a model that
    is loaded somewhere."""
    return exc.status == 400 and "deployed state" in str(exc)


def delete_group(cluster: Cluster, group_id: str, timeout: float = 30.0) -> None:
    """Deleted models linger in the group's search view for a refresh interval; wait them out."""
    cluster.wait_for(lambda: not models_in_group(cluster, group_id), timeout, f"model group {group_id} to empty")

    def delete_once() -> bool:
        try:
            cluster.call(
                f"DELETE {BASE}/model_groups/{group_id}",
                cluster.ml.delete_model_group,
                model_group_id=group_id,
                ok_404=True,
            )
            return True
        except ClusterError as exc:  # 409 while the deleted models' chunks (removed asynchronously) still count
            if exc.status == 409:
                return False
            raise

    cluster.wait_for(delete_once, timeout, f"model group {group_id} to have no model versions left")


def rollback(cluster: Cluster, created: Created) -> list[str]:
    """Remove what this run created; return what could not be removed (never raises)."""
    left = []
    for model_id in reversed(created.model_ids):
        try:
            delete(cluster, model_id)
        except Exception as exc:  # noqa: BLE001 - keep rolling back the rest
            left.append(f"model {model_id}: {exc}")
    for model_id in created.deployed:
        if model_id not in created.model_ids:
            try:
                undeploy(cluster, model_id)
            except Exception as exc:  # noqa: BLE001
                left.append(f"undeploy {model_id}: {exc}")
    if created.group_id:
        try:
            delete_group(cluster, created.group_id)
        except Exception as exc:  # noqa: BLE001
            left.append(f"group {created.group_id}: {exc}")
    return left


def list_models(cluster: Cluster, group: str | None = None) -> list[dict]:
    """Every model with its stored state and where it is really loaded ('loaded on 1 of 2 nodes, missing ...')."""
    docs = {
        mid: src
        for mid, src in deployment.stored_models(cluster).items()
        if not group or src.get("model_group_id") == group
    }
    truth = deployment.read_many(cluster, docs)
    out = []
    for model_id, src in docs.items():
        dep = truth[model_id]
        out.append(
            {
                "model_id": model_id,
                "name": src.get("name"),
                "version": src.get("model_version"),
                "function_name": src.get("algorithm") or src.get("function_name"),
                "state": src.get("model_state"),
                "group": src.get("model_group_id"),
                "sha256": src.get("model_content_hash_value"),
                "loaded": dep.summary(),
                "loaded_on": list(dep.loaded_on),
                "missing": list(dep.missing),
                "missing_names": [dep.name(n) for n in dep.missing],
            }
        )
    return sorted(out, key=lambda m: (m["name"] or "", m["version"] or ""))
