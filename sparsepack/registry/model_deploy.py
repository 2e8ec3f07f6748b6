"""Deploying a model, and knowing when it is really deployed: ML Commons completes the deploy task before it stores
the model's state, its sync-up job can store a stale state over a fresh deploy, and its auto-redeploy can be loading
the same model when a deploy arrives. The profile API (where a predictor is loaded) decides, and a deploy ends once
the node sparsepack talks to routes predicts to the model (ML Commons syncs that after the task completes)."""

from __future__ import annotations

import time

from ..errors import ClusterError
from . import deployment
from .connection import Cluster
from .models import (
    BASE,
    DEPLOYED,
    USABLE,
    Created,
    get_model,
    get_task,
    node_errors,
    state_in,
    task_done,
    task_errors,
    time_left,
)
from .predict import SYNC_UP_WAIT, wait_until_routed

# Where a deploy ends. ML Commons completes the deploy task before it writes the model's state, so a read right after
# the task can still say DEPLOYING (or the state before the deploy).
DEPLOY_ENDED = DEPLOYED | {"DEPLOY_FAILED", "LOAD_FAILED"}


def deploy(cluster: Cluster, model_id: str, node_ids: list[str] | None, timeout: float, created: Created) -> dict:
    """Deploy the model unless it is really loaded where asked; a model stored as deployed but loaded nowhere (a
    restart that auto-redeploy is loading again) is waited for, or deployed again when auto-redeploy will not."""
    deadline = time.monotonic() + timeout
    model = get_model(cluster, model_id) or {}
    if model.get("model_state") == "DEPLOYING":  # a deploy already under way (another run's): see where it ends first
        cluster.wait_for(
            lambda: state_in(cluster, model_id, USABLE - {"DEPLOYING"}),
            timeout,
            f"model {model_id} to finish the deploy under way",
        )
    dep = deployment.read(cluster, model_id)
    if (dep.stored_deployed or dep.stored_state == "DEPLOYING") and (not dep.loaded_on or dep.missing_here):
        dep = deployment.wait_for_auto_redeploy(cluster, model_id, time_left(deadline), everywhere=not node_ids)
    if dep.stored_state == "DEPLOYED" and dep.usable and _on_targets(dep, node_ids):
        return {
            "model_id": model_id,
            "state": dep.stored_state,
            "worker_nodes": list(dep.loaded_on),
            "reused": True,
            "loaded": dep.summary(),
            "deployment": dep.as_dict(),
            "routing_wait_seconds": wait_until_routed(cluster, model_id, time_left(deadline)),
        }
    why = _redeploy_reason(dep) if dep.stored_deployed else None
    body = {"node_ids": node_ids} if node_ids else None
    if body:  # ml.deploy_model sends no body, so a deploy on chosen nodes is a route by hand
        task_id = cluster.request("POST", f"{BASE}/models/{model_id}/_deploy", body=body)["task_id"]
    else:
        task_id = cluster.call(f"POST {BASE}/models/{model_id}/_deploy", cluster.ml.deploy_model, model_id=model_id)[
            "task_id"
        ]
    created.deployed.append(model_id)
    task = cluster.wait_for(lambda: task_done(get_task(cluster, task_id)), time_left(deadline), f"deploy of {model_id}")
    raced = _only_duplicate_deploys(task)
    if task["state"] != "COMPLETED" and not raced:
        raise ClusterError(f"deploy of {model_id} ended {task['state']}: {node_errors(task)}")
    state = cluster.wait_for(
        lambda: state_in(cluster, model_id, DEPLOY_ENDED),
        time_left(deadline),
        f"model {model_id} to leave DEPLOYING after its deploy task completed",
    )
    if state == "DEPLOY_FAILED" and not task.get("error"):
        state = _outlast_sync_race(cluster, model_id, time_left(deadline))
    if state not in DEPLOYED:
        raise ClusterError(f"deploy of {model_id} left it {state}: {node_errors(task)}")
    if state.startswith("PARTIALLY"):
        raise ClusterError(f"deploy of {model_id} is PARTIALLY_DEPLOYED: {node_errors(task)}")
    dep = cluster.wait_for(
        lambda: _loaded_dep(cluster, model_id, raced, node_ids),
        time_left(deadline),
        f"model {model_id} to hold a predictor on {'its nodes' if raced else 'a node'} after its deploy",
    )
    out = {
        "model_id": model_id,
        "state": state,
        "worker_nodes": sorted(task.get("worker_node") or []),
        "task_id": task_id,
        "reused": False,
        "loaded": dep.summary(),
        "deployment": dep.as_dict(),
        # the task completes before ML Commons' routing sync reaches every node: a predict or an ingest sent now
        # could still be refused
        "routing_wait_seconds": wait_until_routed(cluster, model_id, time_left(deadline)),
    }
    if why:
        out["redeployed_because"] = why
    return out


def _outlast_sync_race(cluster: Cluster, model_id: str, timeout: float) -> str:
    """ML Commons' sync-up job can list the nodes' loaded models before a deploy finished loading, then store
    DEPLOY_FAILED over a deploy whose task completed with no error; its next run, once it sees the predictor, stores
    DEPLOYED again. Wait for that run while a predictor is really loaded; without one the failure is real."""
    if not deployment.read(cluster, model_id).loaded_on:
        return "DEPLOY_FAILED"
    try:
        return cluster.wait_for(
            lambda: state_in(cluster, model_id, DEPLOYED),
            min(timeout, SYNC_UP_WAIT),
            f"ML Commons' sync-up job to store model {model_id} as deployed again",
        )
    except ClusterError:
        return "DEPLOY_FAILED"


def _on_targets(dep: deployment.Deployment, node_ids: list[str] | None) -> bool:
    """Loaded on every chosen node; with none chosen, on every node it should be on that is still in the cluster
    (a node gone from the cluster is reported, not waited for)."""
    if node_ids:
        return set(node_ids) <= set(dep.loaded_on)
    return not dep.missing_here


def _redeploy_reason(dep: deployment.Deployment) -> str:
    where = dep.summary()
    if dep.auto_redeploy is False:
        return f"stored as {dep.stored_state} but {where}, and auto-redeploy is off ({deployment.AUTO_REDEPLOY})"
    if not dep.auto_redeploy_active:
        return (
            f"stored as {dep.stored_state} but {where}, and auto-redeploy gave up after {dep.redeploy_retries} "
            f"tries ({deployment.AUTO_REDEPLOY_RETRIES})"
        )
    return f"stored as {dep.stored_state} but {where} after waiting for auto-redeploy"


def _only_duplicate_deploys(task: dict) -> bool:
    """The deploy failed only on nodes where a deploy of the model was already running: ML Commons' auto-redeploy,
    started as a node rejoined. Those nodes load the model all the same."""
    errors = task_errors(task)
    return (
        task.get("state") == "COMPLETED_WITH_ERROR"
        and isinstance(errors, dict)
        and bool(errors)
        and all("Duplicate deploy" in str(m) for m in errors.values())
    )


def _loaded_dep(
    cluster: Cluster, model_id: str, on_targets: bool = False, node_ids: list[str] | None = None
) -> deployment.Deployment | None:
    """The reading once a node holds the model (``on_targets``: once it is loaded on its targets too)."""
    dep = deployment.read(cluster, model_id)
    if not dep.usable or (on_targets and not _on_targets(dep, node_ids)):
        return None
    return dep
