"""The registry speaks to ML Commons through opensearch-py's typed calls (client.plugins.ml.*, ingest, search_pipeline,
indices...), all run by Cluster.call under one retry/404/error policy. These tests record every call a real release
makes and check which client method carried it."""

from collections import Counter

import pytest
from conftest import cluster_for, conn, drop_group
from faultproxy import Fault, FaultProxy

from sparsepack.errors import ClusterError
from sparsepack.registry import models
from sparsepack.registry.connection import Cluster, ConnectionOptions
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release

OPTS = dict(progress=False, timeout=180)
ML = "/_plugins/_ml"
# The one ML Commons route still sent by hand (connection.py says why): a deploy on chosen nodes carries a body.
RAW_ML_ALLOWED = ("/_deploy",)


@pytest.fixture
def recorded(monkeypatch):
    """(client method, what) for every call of every Cluster in this process."""
    calls: list[tuple[str, str]] = []
    real = Cluster.call

    def record(self, what, fn, *args, **kwargs):
        calls.append((f"{type(fn.__self__).__name__}.{fn.__name__}", what))
        return real(self, what, fn, *args, **kwargs)

    monkeypatch.setattr(Cluster, "call", record)
    return calls


def raw_ml(calls):
    return [what for method, what in calls if method == "Transport.perform_request" and ML in what]


def test_release_and_clear_previous_use_typed_ml_calls(any_node, package_factory, recorded):
    group = "t-ml-api-typed"
    cl = cluster_for(any_node)
    try:
        first = release(str(package_factory("bert-if-log1p")[1]), conn(any_node), ReleaseOptions(group=group, **OPTS))
        assert first["passed"], first.get("error")
        second = release(
            str(package_factory("bert-bi-relu")[1]),
            conn(any_node),
            ReleaseOptions(group=group, clear_previous=True, **OPTS),
        )
        assert second["passed"], second.get("error")
        assert sorted(second["steps"]["clear_previous"]["removed"]) == sorted(first["model_ids"].values())
    finally:
        drop_group(cl, group)

    used = Counter(method for method, _ in recorded)
    # three models uploaded (if-log1p: document + query; bi-relu: one), each through register_meta + chunks
    assert used["MlClient.register_model_meta"] == 3
    assert used["MlClient.upload_chunk"] >= 3
    for method in (
        "MlClient.search_model_group",
        "MlClient.register_model_group",
        "MlClient.get_model",
        "MlClient.search_models",
        "MlClient.deploy_model",
        "MlClient.get_task",
        "MlClient.get_profile_models",
        "MlClient.predict",
        "MlClient.undeploy_model",
        "MlClient.delete_model",
        "IngestClient.put_pipeline",
        "IngestClient.delete_pipeline",
        "IngestClient.get_pipeline",
        "SearchPipelineClient.put",
        "SearchPipelineClient.delete",
        "SearchPipelineClient.get",
        "IndicesClient.create",
        "IndicesClient.delete",
        "OpenSearch.index",
        "OpenSearch.search",
        "OpenSearch.info",
        "NodesClient.info",
        "NodesClient.stats",
        "CatClient.plugins",
        "ClusterClient.get_settings",
    ):
        assert used[method] > 0, f"{method} never ran: {sorted(used)}"
    assert used["MlClient.deploy_model"] == 3
    assert raw_ml(recorded) == []
    assert used["Transport.perform_request"] == 0, [w for m, w in recorded if m == "Transport.perform_request"]


def test_deploy_on_chosen_nodes_is_the_one_raw_ml_route(node_3x, package_factory, recorded):
    cl = cluster_for(node_3x)
    node_id = sorted(cl.request("GET", "/_nodes")["nodes"])[0]
    group = "t-ml-api-nodes"
    try:
        report = release(
            str(package_factory("bert-bi-relu")[1]),
            conn(node_3x),
            ReleaseOptions(group=group, node_ids=[node_id], smoke=False, **OPTS),
        )
        assert report["passed"], report.get("error")
    finally:
        drop_group(cl, group)
    raw = raw_ml(recorded)
    assert raw and all(what.startswith("POST " + ML + "/models/") and what.endswith(RAW_ML_ALLOWED) for what in raw), (
        raw
    )


def test_typed_calls_are_retried_inside_call_under_faults(node_3x, package_factory, recorded):
    """A 503 or 429 on a typed call is retried by Cluster.call itself: the caller issues each call once."""
    group = "t-ml-api-faults"
    proxy = FaultProxy(
        int(node_3x.rsplit(":", 1)[1]),
        [
            Fault("POST", r"upload_chunk/0", "status:503"),
            Fault("POST", r"_deploy", "status:503"),
            Fault("GET", r"/_plugins/_ml/tasks/", "status:429"),
        ],
    ).start()
    try:
        report = release(
            str(package_factory("bert-bi-relu")[1]),
            ConnectionOptions(url=proxy.url, retries=3),
            ReleaseOptions(group=group, smoke=False, **OPTS),
        )
        assert report["passed"], report.get("error")
        assert all(f.hits == f.times for f in proxy.faults)
    finally:
        proxy.stop()
        cl = cluster_for(node_3x)
        drop_group(cl, group)
    faulted = [
        (method, what)
        for method, what in recorded
        # the deploy task by id; a task search (where a model was last deployed) is another route, not faulted here
        if "upload_chunk/0" in what
        or what.endswith("/_deploy")
        or ("/_plugins/_ml/tasks/" in what and "_search" not in what)
    ]
    assert {method for method, _ in faulted} == {"MlClient.upload_chunk", "MlClient.deploy_model", "MlClient.get_task"}
    assert sum(1 for m, _ in faulted if m == "MlClient.upload_chunk") == 1  # the 503'd chunk: one call, retried inside
    assert sum(1 for m, _ in faulted if m == "MlClient.deploy_model") == 1


def test_typed_calls_keep_the_404_and_error_policy(node_3x):
    cl = cluster_for(node_3x)
    assert models.get_model(cl, "no-such-model-id") is None  # ok_404 through the typed get_model
    assert models.get_group(cl, "no-such-group-id") is None
    with pytest.raises(ClusterError) as err:  # no ok_404: one line naming the route and the server's reason
        models.get_task(cl, "no-such-task-id")
    message = str(err.value)
    assert message.startswith(f"GET {ML}/tasks/no-such-task-id failed with HTTP 404") and "\n" not in message
