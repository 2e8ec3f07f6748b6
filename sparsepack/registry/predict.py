"""Asking a deployed model for token weights, through a cluster whose nodes may not know yet where it runs.

A node routes a predict (or the predict inside an ingest or a ``neural_sparse`` query) by its own routing table, and
ML Commons updates that table by messages that can lag behind the model: it marks a deploy task COMPLETED while the
message that adds the model's worker nodes is still on its way to the other nodes, and its sync-up job (every
``plugins.ml_commons.sync_up_job_interval_in_seconds``, 10 s) clears and rebuilds every node's table from what the
nodes reported, which can miss a model that finished loading just after. Meanwhile the node answers HTTP 400 "Model
not ready yet" although the profile API lists the model's predictors. Such a refusal is waited out here, for a model
that some node holds; for a model loaded nowhere it is the real answer and is raised at once."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from ..errors import ClusterError
from .connection import Cluster
from .deployment import BASE, loaded_nodes

T = TypeVar("T")
NOT_ROUTED = "not ready yet"  # ML Commons: "Model not ready yet. Please deploy the model first."
# a few sync-up runs on a busy node
SYNC_UP_WAIT = 60.0
ROUTING_POLL_SECONDS = 0.5
PROBE_TEXT = "sparsepack"


def is_not_routed(exc: ClusterError) -> bool:
    return exc.status == 400 and NOT_ROUTED in str(exc).lower()


def _loaded_somewhere(cluster: Cluster, model_id: str) -> bool:
    try:
        return bool(loaded_nodes(cluster, model_id))
    except ClusterError:  # the profile cannot be read (a least-privilege user): the refusal stands
        return False


def when_routed(cluster: Cluster, model_id: str, fn: Callable[[], T], timeout: float = SYNC_UP_WAIT) -> T:
    """``fn()``, a call that uses the model, run again while the node refuses it as "not ready" although some node
    holds the model, within ``timeout``."""

    def attempt() -> list[T] | None:  # the result in a list: a falsy one is an answer too
        try:
            return [fn()]
        except ClusterError as exc:
            if not is_not_routed(exc) or not _loaded_somewhere(cluster, model_id):
                raise
            return None

    return cluster.wait_for(
        attempt,
        timeout,
        f"the node to route requests to model {model_id}, loaded but still refused as not ready (ML Commons' routing "
        "sync has not reached that node: see its sync-up job in the node's log)",
        interval=ROUTING_POLL_SECONDS,
    )[0]


def predict(
    cluster: Cluster, model_id: str, texts: list[str], token_ids: bool = False, timeout: float = SYNC_UP_WAIT
) -> list[dict[str, float]]:
    """The model's token weights for each text, keyed by token string; ``token_ids``: keyed by token id, as the
    sparse_encoding processor writes them into a sparse_vector field (ML Commons' TOKEN_ID format, 3.2+)."""
    body: dict[str, Any] = {"text_docs": texts}
    if token_ids:
        body["parameters"] = {"sparse_embedding_format": "TOKEN_ID"}
    res = when_routed(
        cluster,
        model_id,
        lambda: cluster.call(
            f"POST {BASE}/_predict/sparse_encoding/{model_id}",
            cluster.ml.predict,
            algorithm_name="sparse_encoding",
            model_id=model_id,
            body=body,
        ),
        timeout,
    )
    return [r["output"][0]["dataAsMap"]["response"][0] for r in res["inference_results"]]


def wait_until_routed(cluster: Cluster, model_id: str, timeout: float) -> float:
    """Wait, within ``timeout``, until a predict reaches the loaded model; returns the seconds waited."""
    t0 = time.monotonic()
    predict(cluster, model_id, [PROBE_TEXT], timeout=timeout)
    return round(time.monotonic() - t0, 3)
