"""One 2-node 3.6.0 cluster for the module (one ML node marked gpu=true): deploying on the nodes with an attribute;
a node lost under a deployed model (its JVM SIGKILLed: `list` and `doctor` say the model is loaded on 1 of 2 nodes and
name the node it is missing on) and brought back (the model loaded there again)."""

from __future__ import annotations

import json
import os
import signal

import pytest
from conftest import PORT_BASE, cluster_for, conn, local_cluster

from sparsepack import cli
from sparsepack.node import lifecycle
from sparsepack.registry import deployment
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release

PORT = PORT_BASE + 32  # http 32 and 33, transport +100
OPTS = dict(progress=False, timeout=120)


@pytest.fixture(scope="module")
def two_nodes():
    if os.environ.get("OPENSEARCH_URL"):
        pytest.skip("external cluster: no local node to kill")
    with local_cluster("3.6.0", PORT, nodes=2, heap="768m") as state:
        yield state


@pytest.mark.multinode
def test_deploy_on_nodes_with_attribute(two_nodes, package_factory):
    url = two_nodes.url
    cl = cluster_for(url)
    nodes = cl.request("GET", "/_nodes")["nodes"]
    gpu = sorted(nid for nid, n in nodes.items() if n.get("attributes", {}).get("gpu") == "true")
    assert len(nodes) == 2 and len(gpu) == 1
    report = release(
        str(package_factory("bert-if-log1p")[1]), conn(url), ReleaseOptions(group="t-gpu", node_attr="gpu=true", **OPTS)
    )
    assert report["passed"], report.get("error")
    for role in ("document", "query"):
        assert report["steps"]["deploy"][role]["worker_nodes"] == gpu
        assert report["steps"]["deploy"][role]["profile_worker_nodes"] == gpu
    bad = release(
        str(package_factory("bert-if-log1p")[1]),
        conn(url),
        ReleaseOptions(group="t-gpu", node_attr="gpu=false", **OPTS),
    )
    assert not bad["passed"] and "no node has the attribute gpu=false" in bad["error"]


@pytest.mark.multinode
def test_list_names_the_node_a_model_is_missing_on(two_nodes, package_factory, capsys):
    _, root = package_factory("bert-if-log1p")
    report = release(str(root), conn(two_nodes.url), ReleaseOptions(group="t-lost", progress=False))
    assert report["passed"], report.get("error")
    doc_id = report["model_ids"]["document"]
    assert report["steps"]["deploy"]["document"]["loaded"] == "loaded on 2 of 2 nodes"
    cl = cluster_for(two_nodes.url)
    by_name = {n["name"]: nid for nid, n in cl.request("GET", "/_nodes")["nodes"].items()}
    lost = two_nodes.nodes[1]
    os.kill(lost.pid, signal.SIGKILL)
    cl.wait_for(lambda: len(cl.request("GET", "/_nodes")["nodes"]) == 1, 120, "the cluster to drop the killed node")

    capsys.readouterr()
    assert cli.main(["list", "--url", two_nodes.url, "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["model_id"] == doc_id)
    assert row["missing"] == [by_name[lost.name]]
    assert row["loaded"].startswith("loaded on 1 of 2 nodes, missing ") and by_name[lost.name] in row["loaded"]

    assert cli.main(["doctor", "--url", two_nodes.url, "--json"]) == 4
    findings = json.loads(capsys.readouterr().out)
    model = next(f for f in findings if f["check"] == "model" and doc_id in f["message"])
    assert "loaded on 1 of 2 nodes" in model["message"] and by_name[lost.name] in model["message"]
    assert model["severity"] == "warning"  # still answers from the node left

    # the node comes back as itself (same data, same id): it is named, not "not in the cluster now", and the re-run
    # leaves the model loaded on both nodes again, whether ML Commons' auto-redeploy or sparsepack's deploy loaded it
    lifecycle.start("3.6.0", port=PORT, nodes=2, heap="768m", log=print)
    assert {n["name"] for n in cl.request("GET", "/_nodes")["nodes"].values()} == set(by_name)
    capsys.readouterr()
    assert cli.main(["list", "--url", two_nodes.url, "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out) if r["model_id"] == doc_id)
    assert "not in the cluster now" not in row["loaded"], row["loaded"]
    again = release(str(root), conn(two_nodes.url), ReleaseOptions(group="t-lost", progress=False))
    assert again["passed"], again.get("error")
    assert again["model_ids"]["document"] == doc_id  # the same model, loaded again: nothing uploaded
    step = again["steps"]["deploy"]["document"]
    print("loaded again by", "ML Commons (reused)" if step["reused"] else "sparsepack's deploy")
    assert step["loaded"] == "loaded on 2 of 2 nodes"
    assert set(deployment.read(cl, doc_id).loaded_on) == set(by_name.values())
