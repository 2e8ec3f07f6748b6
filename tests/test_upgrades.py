"""Safe upgrades on the real nodes: v2 of a model replaces v1 that a production pipeline uses, without ever leaving
production without a deployed model."""

import json
import shutil
import subprocess
import sys
from contextlib import contextmanager

import pytest
from conftest import cluster_for, conn, edit_artifact
from faultproxy import Fault, FaultProxy

from sparsepack.registry import models
from sparsepack.registry.connection import ConnectionOptions
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release
from sparsepack.templates import render

FIXTURE = "bert-bi-relu"  # one model per version: the fastest release
OPTS = dict(progress=False, timeout=120)
PROD_INGEST, PROD_SEARCH, PROD_INDEX = "t-up-prod-ingest", "t-up-prod-search", "t-up-prod-index"


@pytest.fixture(scope="module")
def v2_package(model_factory, tmp_path_factory):
    """The same model packaged with another max_length: other hashes, and other vectors for long texts."""
    from sparsepack.packaging.package import package

    out = tmp_path_factory.mktemp("pkg-v2") / "package"
    return package(str(model_factory(FIXTURE)), out, max_length=24, log=lambda m: None), out


@pytest.fixture
def production(any_node, package_factory, request):
    with production_on(any_node, package_factory, request) as prod:
        yield prod


@contextmanager
def production_on(url, package_factory, request):
    """v1 released into a group; an ingest pipeline, a search pipeline and an index using it, as production would."""
    manifest, pkg = package_factory(FIXTURE)
    group = f"t-up-{request.node.name.split('[')[0][5:25]}"
    cl = cluster_for(url)
    version = cl.info()["version"]["number"]
    v1 = release(str(pkg), conn(url), ReleaseOptions(group=group, smoke=False, **OPTS))
    assert v1["passed"], v1.get("error")
    v1_id = v1["model_ids"]["document"]
    cl.request(
        "PUT", f"/_ingest/pipeline/{PROD_INGEST}", body=render("ingest-pipeline", manifest, version, model_id=v1_id)
    )
    cl.request(
        "PUT", f"/_search/pipeline/{PROD_SEARCH}", body=render("search-pipeline", manifest, version, model_id=v1_id)
    )
    cl.request(
        "PUT",
        f"/{PROD_INDEX}",
        body=render("index-mapping", manifest, version, ingest_pipeline=PROD_INGEST, search_pipeline=PROD_SEARCH),
    )
    try:
        yield {"url": url, "cluster": cl, "group": group, "v1": v1_id, "manifest": manifest}
    finally:
        cl.request("DELETE", f"/{PROD_INDEX}", ok_404=True)
        cl.request("DELETE", f"/_search/pipeline/{PROD_SEARCH}", ok_404=True)
        cl.request("DELETE", f"/_ingest/pipeline/{PROD_INGEST}", ok_404=True)
        cleanup_group(cl, group)


def cleanup_group(cl, group):
    group_id = models.find_group(cl, group)
    if group_id:
        for m in models.models_in_group(cl, group_id):
            models.delete(cl, m["model_id"])
        models.delete_group(cl, group_id)


def group_model_ids(cl, group):
    cl.request("POST", "/.plugins-ml-model/_refresh", ok_404=True)
    group_id = models.find_group(cl, group)
    return sorted(m["model_id"] for m in models.models_in_group(cl, group_id)) if group_id else []


def pipeline_model(cl, kind, name):
    body = cl.request("GET", f"/_{kind}/pipeline/{name}")[name]
    if kind == "ingest":
        return body["processors"][0]["sparse_encoding"]["model_id"]
    return body["request_processors"][0]["neural_query_enricher"]["default_model_id"]


def simulate(cl):
    res = cl.request(
        "POST",
        f"/_ingest/pipeline/{PROD_INGEST}/_simulate",
        body={"docs": [{"_source": {"text": "rainy weather in new york"}}]},
    )
    doc = res["docs"][0]
    assert "error" not in doc, doc
    return doc["doc"]["_source"]["text_sparse"]


def broken_copy(manifest, pkg, dest):
    """A package whose TorchScript file the node cannot load (its deploy fails on the node, for real)."""
    shutil.copytree(pkg, dest)

    def break_model(entries):
        entries[next(n for n in entries if n.endswith(".pt"))] = b"not a torchscript archive"

    return edit_artifact(dest, manifest["artifacts"][0]["file"], break_model)


def test_failed_deploy_of_v2_leaves_v1_serving(production, v2_package, tmp_path):
    cl, group, v1 = production["cluster"], production["group"], production["v1"]
    broken = broken_copy(*v2_package, tmp_path / "broken-v2")
    report = release(
        str(broken),
        conn(production["url"]),
        ReleaseOptions(group=group, clear_previous=True, switch_pipelines=["all"], **OPTS),
    )
    assert not report["passed"] and report["failed_step"] == "deploy", report.get("error")
    assert "clear_previous" not in report["steps"] and "switch_pipelines" not in report["steps"]
    assert report["rollback"]["left"] == []
    assert group_model_ids(cl, group) == [v1]  # v2 rolled back, v1 untouched
    assert models.get_model(cl, v1)["model_state"] == "DEPLOYED"
    assert pipeline_model(cl, "ingest", PROD_INGEST) == v1 and pipeline_model(cl, "search", PROD_SEARCH) == v1
    assert simulate(cl)  # production still encodes documents


def test_clear_previous_refused_while_v1_is_used(production, v2_package):
    cl, group, v1, url = production["cluster"], production["group"], production["v1"], production["url"]
    report = release(str(v2_package[1]), conn(url), ReleaseOptions(group=group, clear_previous=True, **OPTS))
    assert not report["passed"] and report["failed_step"] == "upgrade_plan"
    for user in (
        f"ingest pipeline {PROD_INGEST}",
        f"search pipeline {PROD_SEARCH}",
        f"index {PROD_INDEX} (index.default_pipeline={PROD_INGEST})",
        f"index {PROD_INDEX} (index.search.default_pipeline={PROD_SEARCH})",
    ):
        assert user in report["error"]
    assert "register" not in report["steps"]  # refused before anything was uploaded
    assert group_model_ids(cl, group) == [v1] and models.get_model(cl, v1)["model_state"] == "DEPLOYED"
    # the CLI's delete and undeploy refuse too, with exit 4, and leave the model deployed
    for command in ("delete", "undeploy"):
        proc = subprocess.run(
            [sys.executable, "-m", "sparsepack.cli", command, v1, "--url", url], capture_output=True, text=True
        )
        assert proc.returncode == 4, proc.stderr
        assert f"ingest pipeline {PROD_INGEST}" in proc.stderr and "nothing was" in proc.stderr
    assert models.get_model(cl, v1)["model_state"] == "DEPLOYED"
    assert simulate(cl)
    # a named pipeline that uses no version of the group is bad input, also refused before anything is created
    bad = release(
        str(v2_package[1]), conn(url), ReleaseOptions(group=group, switch_pipelines=["no-such-pipeline"], **OPTS)
    )
    assert (
        bad["failed_step"] == "upgrade_plan"
        and "no ingest or search pipeline is named 'no-such-pipeline'" in bad["error"]
    )


def test_switch_pipelines_moves_production_to_v2_then_clears_v1(production, v2_package):
    cl, group, v1, url = production["cluster"], production["group"], production["v1"], production["url"]
    before = cl.request("GET", f"/_ingest/pipeline/{PROD_INGEST}")[PROD_INGEST]
    report = release(
        str(v2_package[1]),
        conn(url),
        ReleaseOptions(group=group, clear_previous=True, switch_pipelines=["all"], **OPTS),
    )
    assert report["passed"], report.get("error")
    v2 = report["model_ids"]["document"]
    assert list(report["steps"])[-3:] == ["smoke_retrieval", "switch_pipelines", "clear_previous"]
    changes = {(c["kind"], c["name"]): c for c in report["steps"]["switch_pipelines"]["pipelines"]}
    assert set(changes) == {("ingest", PROD_INGEST), ("search", PROD_SEARCH)}
    for change in changes.values():
        assert change["model_ids"] == {"before": [v1], "after": [v2]}
    assert changes[("ingest", PROD_INGEST)]["before"] == before
    assert changes[("ingest", PROD_INGEST)]["verified"]["simulate"] == "passed"
    assert changes[("search", PROD_SEARCH)]["verified"]["test_query"] == "passed"
    # every other field preserved: the body is the old one with only the model id replaced
    after = cl.request("GET", f"/_ingest/pipeline/{PROD_INGEST}")[PROD_INGEST]
    assert json.dumps(after, sort_keys=True) == json.dumps(before, sort_keys=True).replace(v1, v2)
    assert pipeline_model(cl, "search", PROD_SEARCH) == v2
    assert simulate(cl)
    assert report["steps"]["clear_previous"]["removed"] == [v1]
    assert models.get_model(cl, v1) is None and group_model_ids(cl, group) == [v2]
    # max_length 24 vs 64 truncates the battery's long text differently: the report says old documents need reindexing
    comparison = report["steps"]["switch_pipelines"]["output_comparison"][v1]
    assert comparison["compared"] and comparison["same_output"] is False
    warning = report["warnings"][0]
    assert f'"dest": {{"index": "{PROD_INDEX}-v2", "pipeline": "{PROD_INGEST}"}}' in warning
    assert f"POST {PROD_INDEX}/_update_by_query?pipeline={PROD_INGEST}" in warning


def test_model_state_written_after_the_deploy_task_is_waited_for(any_node, package_factory):
    """ML Commons completes the deploy task before it writes DEPLOYED: the first model read after the task says
    DEPLOYING (forced here by the proxy, seen for real on a fresh node). The release waits instead of failing."""
    group = "t-up-state-race"
    port = int(any_node.rsplit(":", 1)[1])

    def deploying(data: bytes) -> bytes:
        model = json.loads(data)
        model["model_state"] = "DEPLOYING"
        return json.dumps(model).encode()

    model_read = Fault("GET", r"/_plugins/_ml/models/[^/]+$", "rewrite", times=0, rewrite=deploying)

    def arm_after_completed_task(data: bytes) -> bytes:
        if json.loads(data).get("state") == "COMPLETED" and model_read.times == 0:
            model_read.times = 1  # the next model read, and only that one, says DEPLOYING
        return data

    proxy = FaultProxy(
        port,
        [model_read, Fault("GET", r"/_plugins/_ml/tasks/", "rewrite", times=1000, rewrite=arm_after_completed_task)],
    ).start()
    cl = cluster_for(any_node)
    try:
        report = release(
            str(package_factory(FIXTURE)[1]),
            ConnectionOptions(url=proxy.url),
            ReleaseOptions(group=group, smoke=False, **OPTS),
        )
        assert report["passed"], report.get("error")
        assert model_read.hits == 1  # the release did read DEPLOYING once, then waited
        assert report["steps"]["deploy"]["document"]["state"] == "DEPLOYED"
    finally:
        proxy.stop()
        cleanup_group(cl, group)


def test_failed_switch_puts_pipelines_back_and_keeps_v1(node_3x, package_factory, v2_package, request):
    """The switch's own check fails (the proxy turns the _simulate answer into an error): every pipeline is put back
    on v1, v2 is rolled back, v1 keeps serving. (3.x only: the path is the node-independent switch code.)"""
    with production_on(node_3x, package_factory, request) as production:
        check_failed_switch(node_3x, production, v2_package)


def check_failed_switch(node_3x, production, v2_package):
    cl, group, v1 = production["cluster"], production["group"], production["v1"]
    failing = Fault(
        "POST",
        rf"/_ingest/pipeline/{PROD_INGEST}/_simulate",
        "rewrite",
        rewrite=lambda data: b'{"docs": [{"error": {"type": "injected", "reason": "injected failure"}}]}',
    )
    proxy = FaultProxy(int(node_3x.rsplit(":", 1)[1]), [failing]).start()
    try:
        report = release(
            str(v2_package[1]),
            ConnectionOptions(url=proxy.url),
            ReleaseOptions(
                group=group, clear_previous=True, switch_pipelines=[PROD_SEARCH, PROD_INGEST], smoke=False, **OPTS
            ),
        )
    finally:
        proxy.stop()
    assert not report["passed"] and report["failed_step"] == "switch_pipelines"
    assert "put back as it was" in report["error"] and "injected failure" in report["error"]
    assert failing.hits == 1 and report["rollback"]["left"] == []
    assert pipeline_model(cl, "ingest", PROD_INGEST) == v1 and pipeline_model(cl, "search", PROD_SEARCH) == v1
    assert group_model_ids(cl, group) == [v1] and models.get_model(cl, v1)["model_state"] == "DEPLOYED"
    assert simulate(cl)


def test_references_found_at_any_depth_and_rewrite_keeps_every_other_field():
    """No cluster: the walk over pipeline bodies that both the refusal and the switch rely on."""
    from sparsepack.registry import references

    ingest = {
        "prod": {
            "description": "d",
            "version": 3,
            "processors": [
                {"text_chunking": {"field_map": {"body": "chunks"}}},
                {
                    "foreach": {
                        "field": "x",
                        "processor": {"sparse_encoding": {"model_id": "v1", "field_map": {"a": "b"}, "batch_size": 4}},
                    }
                },
            ],
            "on_failure": [{"set": {"field": "error", "value": "model_id"}}],
        },
        "outer": {"processors": [{"pipeline": {"name": "prod"}}]},
        "other": {"processors": [{"sparse_encoding": {"model_id": "unrelated", "field_map": {"a": "b"}}}]},
    }
    search = {"s": {"request_processors": [{"neural_query_enricher": {"neural_field_default_id": {"f": "v1"}}}]}}
    settings = {"idx": {"index.final_pipeline": "outer"}, "idx2": {"index.search.default_pipeline": "s"}}
    refs = {r.describe() for r in references.find_in({"v1"}, ingest, search, settings)}
    assert refs == {
        "ingest pipeline prod",
        "ingest pipeline outer",
        "search pipeline s",
        "index idx (index.final_pipeline=outer)",
        "index idx2 (index.search.default_pipeline=s)",
    }
    switched = references.rewrite_model_ids(ingest["prod"], lambda m: "v2" if m == "v1" else m)
    assert json.dumps(switched) == json.dumps(ingest["prod"]).replace('"v1"', '"v2"')  # only the id changed
    assert references.model_ids_in(search["s"]) == {"v1"}


def test_pipeline_created_during_the_release_stops_the_clear_and_keeps_both(node_3x, package_factory, v2_package):
    """A pipeline that starts using v1 after the upgrade plan was checked (created here by the proxy just before the
    clear step reads the pipelines): the clear is refused, nothing is deleted, and the proven v2 is kept, not rolled
    back. (3.x only: node-independent release code.)"""
    manifest, pkg = package_factory(FIXTURE)
    group, late = "t-up-late-pipeline", "t-up-late-pipeline"
    cl = cluster_for(node_3x)
    v1 = release(str(pkg), conn(node_3x), ReleaseOptions(group=group, smoke=False, **OPTS))["model_ids"]["document"]
    version = cl.info()["version"]["number"]
    create = lambda: cl.request(
        "PUT",
        f"/_ingest/pipeline/{late}",  # noqa: E731
        body=render("ingest-pipeline", manifest, version, model_id=v1),
    )
    proxy = FaultProxy(
        int(node_3x.rsplit(":", 1)[1]),
        [
            Fault("GET", r"/_ingest/pipeline$", "rewrite", rewrite=lambda data: data),  # the upgrade plan's read: as is
            Fault(
                "GET", r"/_ingest/pipeline$", "call", before=create
            ),  # the clear step's read: the pipeline appears first
        ],
    ).start()
    try:
        report = release(
            str(v2_package[1]),
            ConnectionOptions(url=proxy.url),
            ReleaseOptions(group=group, clear_previous=True, smoke=False, **OPTS),
        )
        assert not report["passed"] and report["failed_step"] == "clear_previous"
        assert f"{v1} is used by ingest pipeline {late}" in report["error"] and report["exit_code"] == 4
        v2 = report["model_ids"]["document"]
        assert report["kept"]["model_ids"] == {"document": v2} and "rollback" not in report
        assert group_model_ids(cl, group) == sorted([v1, v2])
        assert all(models.get_model(cl, m)["model_state"] == "DEPLOYED" for m in (v1, v2))
    finally:
        proxy.stop()
        cl.request("DELETE", f"/_ingest/pipeline/{late}", ok_404=True)
        cleanup_group(cl, group)
