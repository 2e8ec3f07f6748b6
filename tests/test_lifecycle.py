"""Deployed means loaded: after a node restart ML Commons keeps model_state DEPLOYED while no node holds the model
(auto-redeploy loads it again some seconds later, predict answering HTTP 400 meanwhile). A release re-run, list,
smoke and ingest must go by where the model is really loaded. The node is the session's restartable one (shared with
test_doctor and test_node), stopped and started (data kept) and always left running; the module's own models, index and
pipeline are the only ones it looks at, and it removes them and puts auto-redeploy back as it found it."""

from __future__ import annotations

import time
import uuid

import pytest
from conftest import cluster_for, drop_group, put_settings, restart_restartable, start_restartable

from sparsepack.errors import ClusterError
from sparsepack.registry import deployment, models
from sparsepack.registry.smoke_corpus import CORPUS
from sparsepack.templates import render

PACKAGE = "bert-if-log1p"


@pytest.fixture(scope="module")
def node(restartable_node):
    return restartable_node


def release_once(url: str, root, group: str) -> dict:
    from sparsepack.registry.connection import ConnectionOptions
    from sparsepack.rollout.options import ReleaseOptions
    from sparsepack.rollout.run import release

    return release(str(root), ConnectionOptions.from_env(url=url), ReleaseOptions(group=group, progress=False))


@pytest.fixture(scope="module")
def released(node, package_factory):
    """The package released once: (manifest, package dir, group, model ids by role); its group removed when the module
    is done."""
    manifest, root = package_factory(PACKAGE)
    group = f"t-life-{uuid.uuid4().hex[:6]}"
    report = release_once(node, root, group)
    assert report["passed"], report.get("error")
    assert report["steps"]["deploy"]["document"]["loaded"] == "loaded on 1 of 1 node"
    assert report["steps"]["deploy"]["document"]["deployment"]["loaded_on_names"] == ["node-0"]  # named, not unknown
    yield manifest, root, group, report["model_ids"]
    drop_group(cluster_for(node), group)


def test_summary_names_missing_nodes_and_when_auto_redeploy_gave_up():
    lost = deployment.Deployment(
        "m", "DEPLOYED", loaded_on=("a",), planned=("a",), expected=("a", "b"), node_names={"a": "node-0"}
    )
    assert lost.usable and not lost.redeploy_pending and lost.missing == ("b",)
    assert lost.summary() == "loaded on 1 of 2 nodes, missing b (not in the cluster now)"
    restarted = deployment.Deployment(
        "m",
        "DEPLOYED",
        expected=("a",),
        node_names={"a": "node-0"},
        auto_redeploy=True,
        redeploy_retries=3,
        redeploy_retry_limit=3,
    )
    assert restarted.redeploy_pending and not restarted.usable and not restarted.auto_redeploy_active
    assert restarted.summary() == "loaded on 0 of 1 node, missing node-0 (a)"
    assert deployment.Deployment("m", "DEPLOYED", auto_redeploy=True, redeploy_retry_limit=3).auto_redeploy_active
    assert not deployment.Deployment("m", "DEPLOYED", auto_redeploy=False).auto_redeploy_active


@pytest.mark.cluster
def test_rerun_right_after_a_restart_reuses_the_models_once_auto_redeploy_loads_them(node, released):
    _, root, group, ids = released
    try:
        restart_restartable()
        t0 = time.monotonic()
        again = release_once(node, root, group)  # at once: auto-redeploy is still loading the models
    finally:
        start_restartable()  # running again also when the restart failed half-way
    assert again["passed"], again.get("error")
    cl = cluster_for(node)
    gid = models.find_group(cl, group)
    assert sorted(m["model_id"] for m in models.models_in_group(cl, gid)) == sorted(ids.values())  # no new model
    for role, model_id in ids.items():
        step = again["steps"]["deploy"][role]
        assert step["model_id"] == model_id and step["reused"] is True
        assert step["loaded"] == "loaded on 1 of 1 node" and step["deployment"]["loaded_on"]
    assert again["steps"]["smoke_predict"]["passed"] and again["steps"]["smoke_retrieval"]["passed"]
    assert set(again["steps"]["smoke_predict"]["loaded"].values()) == {"loaded on 1 of 1 node"}
    print(f"re-run after restart passed in {time.monotonic() - t0:.1f} s")


@pytest.mark.cluster
def test_with_auto_redeploy_off_list_shows_unloaded_ingest_refuses_and_rerun_redeploys(node, released):
    manifest, root, group, ids = released
    cl = cluster_for(node)
    version = cl.info()["version"]["number"]
    suffix = uuid.uuid4().hex[:6]
    index, pipeline = f"t-life-{suffix}", f"t-life-ingest-{suffix}"
    cl.request(
        "PUT",
        f"/_ingest/pipeline/{pipeline}",
        body=render("ingest-pipeline", manifest, version, model_id=ids["document"]),
    )
    cl.request("PUT", f"/{index}", body=render("index-mapping", manifest, version, ingest_pipeline=pipeline))
    previous = put_settings(node, {deployment.AUTO_REDEPLOY: False})
    try:
        restart_restartable()
        rows = {r["model_id"]: r for r in models.list_models(cl)}
        for model_id in ids.values():
            assert rows[model_id]["loaded"] == "loaded on 0 of 1 node, missing " + rows[model_id]["missing_names"][0]
            assert rows[model_id]["missing"] and rows[model_id]["state"] in ("DEPLOYED", "DEPLOY_FAILED")
        # Ingest while no node holds the document model: every document refused with the node's error, none
        # indexed without its vector.
        refused = []
        for i, text in enumerate(CORPUS):
            try:
                cl.call(f"PUT /{index}/_doc/{i}", cl.client.index, index=index, id=i, body={"text": text}, retry=False)
            except ClusterError as exc:
                refused.append(str(exc))
        cl.request("POST", f"/{index}/_refresh")
        docs = cl.request("POST", f"/{index}/_search", body={"size": 100})["hits"]["hits"]
        assert all(d["_source"].get("text_sparse") for d in docs), [d["_id"] for d in docs]
        assert len(docs) + len(refused) == len(CORPUS)
        assert refused and all("HTTP 400" in e or "HTTP 500" in e for e in refused), refused
        assert all(ids["document"] in e or "not ready" in e.lower() or "deploy" in e.lower() for e in refused), refused

        again = release_once(node, root, group)
        assert again["passed"], again.get("error")
        step = again["steps"]["deploy"]["document"]
        assert step["reused"] is False and step["model_id"] == ids["document"]
        assert step["loaded"] == "loaded on 1 of 1 node"
        if "redeployed_because" in step:  # stored DEPLOYED still; ML Commons' sync may already have said DEPLOY_FAILED
            assert "auto-redeploy is off" in step["redeployed_because"]
        cl.call(
            f"PUT /{index}/_doc/after",
            cl.client.index,
            index=index,
            id="after",
            body={"text": CORPUS[0]},
            params={"refresh": "true"},
        )
        assert cl.request("GET", f"/{index}/_doc/after")["_source"]["text_sparse"]
    finally:
        start_restartable()  # running again also when the test failed while it was stopped
        put_settings(node, previous)
        cl.request("DELETE", f"/{index}", ok_404=True)
        cl.request("DELETE", f"/_ingest/pipeline/{pipeline}", ok_404=True)
