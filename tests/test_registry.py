"""register / deploy / smoke / release against the real node(s); faults injected by a loopback proxy."""

import json
import shutil
import subprocess
import sys
from contextlib import contextmanager

import pytest
from conftest import cluster_for, conn
from faultproxy import Fault, FaultProxy

from sparsepack.errors import ClusterError
from sparsepack.registry import models, preflight
from sparsepack.registry.connection import ConnectionOptions
from sparsepack.registry.predict import wait_until_routed
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release

OPTS = dict(progress=False, timeout=120)


def restore_node_settings(url):
    """Tests that change cluster settings put back what the local test node runs with."""
    from sparsepack.node.config import apply_node_settings

    apply_node_settings(url)


def group_models(url, group_name):
    cl = cluster_for(url)
    cl.request("POST", "/.plugins-ml-model/_refresh", ok_404=True)
    res = cl.request(
        "POST", "/_plugins/_ml/model_groups/_search", body={"query": {"term": {"name.keyword": group_name}}}
    )
    hits = res["hits"]["hits"]
    return models.models_in_group(cl, hits[0]["_id"]) if hits else []


def cleanup_group(url, group_name):
    cl = cluster_for(url)
    for m in group_models(url, group_name):
        models.delete(cl, m["model_id"])
    res = cl.request(
        "POST", "/_plugins/_ml/model_groups/_search", body={"query": {"term": {"name.keyword": group_name}}}
    )
    for hit in res["hits"]["hits"]:
        models.delete_group(cl, hit["_id"])


@pytest.mark.parametrize("fixture", ["bert-if-log1p", "distil-bi-log1p"])
def test_release_passes_and_is_idempotent(any_node, package_factory, fixture, request):
    manifest, pkg = package_factory(fixture)
    group = f"t-release-{fixture}"
    try:
        report = release(str(pkg), conn(any_node), ReleaseOptions(group=group, **OPTS))
        assert report["passed"], report.get("error")
        steps = report["steps"]
        assert steps["smoke_predict"]["document"]["max_abs_diff"] <= 1e-4
        assert steps["smoke_predict"]["document"]["identical_token_sets"] == steps["smoke_predict"]["document"]["texts"]
        assert steps["smoke_predict"]["query"]["passed"]
        retrieval = steps["smoke_retrieval"]
        assert retrieval["passed"] and retrieval["checked_queries"] >= 1 and retrieval["ingest_matches_local"]
        for q in retrieval["queries"]:
            if q["checkable"]:
                assert q["got"] == q["expected"] and q["relative_diff"] <= 1e-3
        roles = {a["role"] for a in manifest["artifacts"]}
        assert set(report["model_ids"]) == roles
        assert all(steps["deploy"][r]["state"] == "DEPLOYED" for r in roles)
        again = release(str(pkg), conn(any_node), ReleaseOptions(group=group, **OPTS))
        assert again["passed"]
        assert again["model_ids"] == report["model_ids"]
        assert all(m["reused"] for m in again["steps"]["register"]["models"].values())
        assert len(group_models(any_node, group)) == len(roles)
        # temporary smoke resources are gone
        cl = cluster_for(any_node)
        assert cl.request("GET", f"/{retrieval['resources']['index']}", ok_404=True) is None
    finally:
        cleanup_group(any_node, group)


def test_release_cli_from_model_json_report(node_3x, model_factory, tmp_path):
    report_file = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsepack.cli",
            "release",
            str(model_factory("distil-if-relu")),
            "--url",
            node_3x,
            "--package-dir",
            str(tmp_path / "pkg"),
            "--group",
            "t-cli-release",
            "--json",
            "--report",
            str(report_file),
        ],
        capture_output=True,
        text=True,
    )
    try:
        assert proc.returncode == 0, proc.stderr[-2000:]
        report = json.loads(proc.stdout)
        assert report == json.loads(report_file.read_text())
        assert report["passed"] and report["steps"]["package"]["passed"]
        assert report["steps"]["smoke_predict"]["query_vs_encode_query"]["passed"]  # the source model was at hand
        assert report["cluster"]["version"].startswith("3.")
        assert (tmp_path / "pkg" / "manifest.json").exists()
        listed = subprocess.run(
            [sys.executable, "-m", "sparsepack.cli", "list", "--url", node_3x, "--json"], capture_output=True, text=True
        )
        ids = {m["model_id"] for m in json.loads(listed.stdout)}
        assert set(report["model_ids"].values()) <= ids
    finally:
        cleanup_group(node_3x, "t-cli-release")


def test_clear_previous_removes_older_versions(node_3x, package_factory):
    group = "t-clear-previous"
    try:
        first = release(
            str(package_factory("bert-bi-relu")[1]), conn(node_3x), ReleaseOptions(group=group, smoke=False, **OPTS)
        )
        second = release(
            str(package_factory("distil-bi-log1p")[1]),
            conn(node_3x),
            ReleaseOptions(group=group, smoke=False, clear_previous=True, **OPTS),
        )
        assert first["passed"] and second["passed"]
        assert second["steps"]["clear_previous"]["removed"] == [first["model_ids"]["document"]]
        assert [m["model_id"] for m in group_models(node_3x, group)] == [second["model_ids"]["document"]]
    finally:
        cleanup_group(node_3x, group)


def test_upload_survives_429_503_and_dropped_connections(node_3x, package_factory):
    group = "t-faults"
    port = int(node_3x.rsplit(":", 1)[1])
    proxy = FaultProxy(
        port,
        [
            Fault("POST", r"_register_meta", "drop-after"),  # the node created the model, the client never heard
            Fault("POST", r"upload_chunk/0", "status:429", times=2),
            Fault("POST", r"upload_chunk/0", "status:503"),
            Fault("POST", r"upload_chunk", "drop-before"),
            Fault("POST", r"_deploy", "status:503"),
            Fault("GET", r"/_plugins/_ml/tasks/", "drop-before"),
        ],
    ).start()
    try:
        report = release(
            str(package_factory("bert-if-log1p")[1]),
            ConnectionOptions(url=proxy.url, retries=5),
            ReleaseOptions(group=group, smoke=False, **OPTS),
        )
        assert report["passed"], report.get("error")
        assert report["steps"]["register"]["retries"] >= 5
        assert all(f.hits == f.times for f in proxy.faults)
        assert len(group_models(node_3x, group)) == 2  # no duplicate from the lost _register_meta response
    finally:
        proxy.stop()
        cleanup_group(node_3x, group)


NOT_ROUTED = "Model not ready yet. Please deploy the model first."


def test_release_waits_out_routing_that_lags_behind_the_deploy(node_3x, package_factory):
    """ML Commons completes a deploy task before its message that adds the model's worker nodes reaches the other
    nodes, and its sync-up job rebuilds every node's routing table from reports that can miss a model that just
    loaded. A node that lags refuses predicts, ingests and queries for the model with HTTP 400 "Model not ready yet"
    (a 2-node CI run's smoke test was). The proxy answers so, as a lagging node would: the release waits and passes;
    a refusal that outlasts the wait is named as a routing lag; a model loaded nowhere or another refusal is not waited on."""
    group = "t-routing"
    port = int(node_3x.rsplit(":", 1)[1])
    lagging = [
        Fault("POST", r"/_predict/", "status:400", times=3, reason=NOT_ROUTED),
        Fault("PUT", r"/sparsepack-smoke-[^/]+/_doc/", "status:400", reason=NOT_ROUTED),
        Fault("POST", r"/sparsepack-smoke-[^/]+/_search", "status:400", reason=NOT_ROUTED),
    ]
    proxy = FaultProxy(port, list(lagging)).start()
    try:
        report = release(
            str(package_factory("bert-if-log1p")[1]),
            ConnectionOptions(url=proxy.url),
            ReleaseOptions(group=group, **OPTS),
        )
        assert report["passed"], report.get("error")
        assert [f.hits for f in lagging] == [3, 1, 1]
        assert report["steps"]["deploy"]["document"]["routing_wait_seconds"] > 0  # deployed first, met the refusals
        assert report["steps"]["smoke_predict"]["passed"] and report["steps"]["smoke_retrieval"]["passed"]

        direct = cluster_for(proxy.url)
        doc_id = report["model_ids"]["document"]
        proxy.faults = [Fault("POST", r"/_predict/", "status:400", times=10**6, reason=NOT_ROUTED)]
        with pytest.raises(
            ClusterError, match=f"timed out after 2s waiting for the node to route requests to model {doc_id}"
        ):
            wait_until_routed(direct, doc_id, 2.0)
        proxy.faults = [Fault("POST", r"/_predict/", "status:400", times=10**6, reason=NOT_ROUTED)]
        with pytest.raises(ClusterError, match="not ready yet") as refused:  # loaded nowhere: the real answer
            wait_until_routed(direct, "no-such-model", 60.0)
        assert "timed out" not in str(refused.value) and proxy.faults[0].hits == 1
        proxy.faults = [Fault("POST", r"/_predict/", "status:400", reason="some other refusal")]
        with pytest.raises(ClusterError, match="some other refusal"):
            wait_until_routed(direct, doc_id, 60.0)
        assert proxy.faults[0].hits == 1
    finally:
        proxy.stop()
        cleanup_group(node_3x, group)


def test_outage_mid_deploy_then_rerun_without_duplicates(node_3x, package_factory):
    group = "t-outage"
    port = int(node_3x.rsplit(":", 1)[1])
    # after the deploy request, the node is unreachable for everything (as if stopped)
    proxy = FaultProxy(port, [Fault("POST", r"_deploy", "outage")]).start()
    pkg = package_factory("bert-bi-relu")[1]
    try:
        # the first run will not free its lease: a re-run takes it over once it went unrenewed for the lease's own
        # TTL, so a short one spares the re-run the default minute
        report = release(
            str(pkg), ConnectionOptions(url=proxy.url, retries=1), ReleaseOptions(group=group, lease_ttl=5, **OPTS)
        )
        assert not report["passed"] and report["failed_step"] == "deploy"
        assert "cannot connect" in report["error"]
        assert report["rollback"]["left"]  # it could not reach the node to roll back, and says so
        proxy.down = False  # the node is back
        again = release(str(pkg), ConnectionOptions(url=proxy.url), ReleaseOptions(group=group, **OPTS))
        assert again["passed"], again.get("error")
        assert len(group_models(node_3x, group)) == 1
    finally:
        proxy.stop()
        cleanup_group(node_3x, group)


def test_deploy_outlasts_the_sync_up_race(node_3x, package_factory):
    """ML Commons' sync-up job can store DEPLOY_FAILED over a deploy whose task completed, having listed the nodes'
    models before the predictor loaded, and stores DEPLOYED on its next run. The proxy answers that stale state once,
    to the first read after the deploy; the release waits for the truth instead of failing."""
    group = "t-sync-race"
    port = int(node_3x.rsplit(":", 1)[1])
    stale = []

    def deploy_failed_once(data: bytes) -> bytes:
        if stale or b'"model_state":"DEPLOYED"' not in data:
            return data
        stale.append(data)
        return data.replace(b'"model_state":"DEPLOYED"', b'"model_state":"DEPLOY_FAILED"')

    # A model id is an OpenSearch document id, URL-safe base64 that can hold "_" and "-": leaving out every path with a
    # "_" after models/ left the race unplayed whenever the new id held one. Only the search endpoint is left out.
    model_read = r"/_plugins/_ml/models/(?!_search\b)[^/?]+$"
    proxy = FaultProxy(port, [Fault("GET", model_read, "rewrite", 10**6, deploy_failed_once)])
    pkg = package_factory("bert-bi-relu")[1]
    try:
        proxy.start()
        report = release(str(pkg), ConnectionOptions(url=proxy.url), ReleaseOptions(group=group, **OPTS))
        assert stale, f"the proxy never saw the deployed model, so the race was not played: {report.get('error')}"
        assert report["passed"], report.get("error")
        assert report["steps"]["deploy"]["document"]["state"] == "DEPLOYED"
    finally:
        proxy.stop()
        cleanup_group(node_3x, group)


@contextmanager
def released_document_model(url, package_factory, group):
    """A fresh release of the small bi-encoder into ``group``; yields its document model id, removes the group after."""
    try:
        report = release(str(package_factory("bert-bi-relu")[1]), conn(url), ReleaseOptions(group=group, **OPTS))
        assert report["passed"], report.get("error")
        yield report["model_ids"]["document"]
    finally:
        cleanup_group(url, group)


def deploy_again_as_auto_redeploy_does(direct, mid):
    """Load the model again behind the client's back, once the client's own undeploy has taken effect."""
    assert not models.worker_nodes(direct, mid)
    direct.request("POST", f"/_plugins/_ml/models/{mid}/_deploy")
    direct.wait_for(lambda: models.worker_nodes(direct, mid), 120, "the injected deploy to load the model")


def test_undeploy_outlasts_a_deploy_that_lands_after_it(node_3x, package_factory):
    """ML Commons' auto-redeploy, queued at a restart while it was off, loads a model again as soon as it is turned back
    on, which can be right after an undeploy answered (a full-suite run's teardown timed out on that). The proxy lets
    the undeploy through, then deploys the model again on the node before it answers: undeploy must still leave the
    model loaded nowhere, within its timeout."""
    direct = cluster_for(node_3x)
    with released_document_model(node_3x, package_factory, "t-undeploy-race") as mid:

        def deploy_again(data: bytes) -> bytes:
            deploy_again_as_auto_redeploy_does(direct, mid)
            return data

        proxy = FaultProxy(int(node_3x.rsplit(":", 1)[1]), [Fault("POST", r"/_undeploy$", "rewrite", 1, deploy_again)])
        try:
            proxy.start()
            models.undeploy(cluster_for(proxy.url), mid, timeout=120, check_references=False)
        finally:
            proxy.stop()
        assert proxy.faults[0].hits == 1  # the deploy was injected
        assert [p for m, p, _ in proxy.log if m == "POST" and p.endswith("/_undeploy")][1:], "undeploy was not resent"
        assert not models.worker_nodes(direct, mid)
        assert models.get_model(direct, mid)["model_state"] not in models.DEPLOYED


def test_delete_outlasts_a_deploy_that_lands_before_it(node_3x, package_factory):
    """The same auto-redeploy can land between delete's undeploy and its DELETE (a full-suite run's teardown failed
    on that): the node then refuses the DELETE with 400 "cannot be deleted in deploying or deployed state". The proxy
    deploys the model again on the node just before the first DELETE reaches it, so the refusal is the node's own:
    delete must undeploy again and delete, within its timeout."""
    direct = cluster_for(node_3x)
    with released_document_model(node_3x, package_factory, "t-delete-race") as mid:
        fault = Fault(
            "DELETE", rf"/models/{mid}(\?|$)", "call", 1, before=lambda: deploy_again_as_auto_redeploy_does(direct, mid)
        )
        proxy = FaultProxy(int(node_3x.rsplit(":", 1)[1]), [fault])
        try:
            proxy.start()
            models.delete(cluster_for(proxy.url), mid, timeout=120, check_references=False)
        finally:
            proxy.stop()
        assert fault.hits == 1  # the deploy was injected before the first DELETE
        calls = [
            ("DELETE" if m == "DELETE" else "undeploy") for m, p, _ in proxy.log if m == "DELETE" or "_undeploy" in p
        ]
        assert calls[:3] == ["undeploy", "DELETE", "undeploy"] and calls[-1] == "DELETE", calls
        assert models.get_model(direct, mid) is None
        assert not models.worker_nodes(direct, mid)


def test_deploy_failure_shows_node_error_and_rolls_back(node_3x, package_factory, tmp_path):
    manifest, pkg = package_factory("bert-bi-relu")
    from test_upgrades import broken_copy

    broken = broken_copy(manifest, pkg, tmp_path / "broken")
    group = "t-deploy-fails"
    report = release(str(broken), conn(node_3x), ReleaseOptions(group=group, **OPTS))
    assert not report["passed"] and report["failed_step"] == "deploy"
    assert "ended FAILED: node " in report["error"]  # the per-node message, verbatim, not a bare "failed"
    assert report["rollback"]["left"] == []
    assert group_models(node_3x, group) == []


def test_tampered_zip_refused_before_upload(node_3x, package_factory, tmp_path):
    manifest, pkg = package_factory("bert-bi-relu")
    copy = tmp_path / "pkg"
    shutil.copytree(pkg, copy)
    (copy / manifest["artifacts"][0]["file"]).write_bytes(b"PK tampered")
    proc = subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", "release", str(copy), "--url", node_3x, "--group", "t-tampered"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2  # bad input, refused before anything reached the cluster
    assert "was modified" in proc.stderr and "verify" in proc.stderr
    assert group_models(node_3x, "t-tampered") == []


def test_incompatible_manifest_refused(node_3x, package_factory, tmp_path):
    manifest, pkg = package_factory("bert-bi-relu")
    copy = tmp_path / "pkg"
    shutil.copytree(pkg, copy)
    m = json.loads((copy / "manifest.json").read_text())
    m["compatible_opensearch"] = ["2.x"]
    (copy / "manifest.json").write_text(json.dumps(m))
    report = release(str(copy), conn(node_3x), ReleaseOptions(group="t-incompatible", **OPTS))
    assert report["failed_step"] == "preflight"
    assert "does not load on OpenSearch 3.x" in report["error"]
    assert group_models(node_3x, "t-incompatible") == []


def test_cluster_without_ml_commons_refused(node_3x, package_factory):
    def strip_ml(data: bytes) -> bytes:
        rows = [r for r in json.loads(data) if r["component"] != "opensearch-ml"]
        return json.dumps(rows).encode()

    port = int(node_3x.rsplit(":", 1)[1])
    proxy = FaultProxy(port, [Fault("GET", r"_cat/plugins", "rewrite", times=100, rewrite=strip_ml)]).start()
    try:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sparsepack.cli",
                "release",
                str(package_factory("bert-bi-relu")[1]),
                "--url",
                proxy.url,
                "--group",
                "t-no-ml",
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 4
        assert "ML Commons (opensearch-ml) is not installed" in proc.stderr
        assert not any("_register" in path for _, path, _ in proxy.log)
    finally:
        proxy.stop()


# A wrong password (the plugin's real 401) and a private CA (TLS verification, --ca-certs, --insecure) are tested
# against the real security plugin in tests/test_secure.py; the fault proxy stays for 429/503/dropped connections.


def test_preflight_names_blocking_setting_and_apply_fixes_it(node_3x):
    cl = cluster_for(node_3x)
    key = "plugins.ml_commons.allow_registering_model_via_local_file"
    cl.request("PUT", "/_cluster/settings", body={"persistent": {key: False}})
    try:
        pf = preflight.run_preflight(cl)
        assert not pf.ok and any(key in b.message for b in pf.blockers)
        with pytest.raises(ClusterError, match=key):
            preflight.require_ok(pf)
        sent = preflight.apply_settings(cl, pf.version, native_memory_threshold=100, jvm_heap_memory_threshold=100)
        assert sent["persistent"][key] is True
        assert preflight.run_preflight(cl).ok
    finally:
        restore_node_settings(node_3x)


def test_undeploy_and_delete_cli(node_3x, package_factory):
    report = release(
        str(package_factory("bert-bi-relu")[1]),
        conn(node_3x),
        ReleaseOptions(group="t-cli-delete", smoke=False, **OPTS),
    )
    mid = report["model_ids"]["document"]
    base = [sys.executable, "-m", "sparsepack.cli"]
    assert subprocess.run(base + ["undeploy", mid, "--url", node_3x], capture_output=True).returncode == 0
    assert subprocess.run(base + ["delete", mid, "--url", node_3x], capture_output=True).returncode == 0
    assert models.get_model(cluster_for(node_3x), mid) is None
    for command in ("undeploy", "delete"):  # the id just deleted, and one that starts with '-': refused, not "done"
        gone = subprocess.run(
            base + [command, mid, "-NoSuchModelAbCdEf12", "--url", node_3x], capture_output=True, text=True
        )
        assert gone.returncode == 2, gone.stderr
        assert (
            f"no model {mid}, -NoSuchModelAbCdEf12 on this cluster" in gone.stderr and "sparsepack list" in gone.stderr
        )
        assert f"{command}ed" not in gone.stdout and "deleted" not in gone.stdout
    cleanup_group(node_3x, "t-cli-delete")


def test_opensearch_py_ml_registers_our_zip(node_3x, package_factory):
    from opensearch_py_ml.ml_commons import MLCommonClient
    from opensearchpy import OpenSearch

    manifest, pkg = package_factory("bert-bi-relu")
    art = manifest["artifacts"][0]
    client = MLCommonClient(OpenSearch(hosts=[node_3x]))
    cl = cluster_for(node_3x)
    group_id, _ = models.ensure_group(cl, "t-py-ml", "3.6", models.Created())
    model_id = client.register_model(
        str(pkg / art["file"]),
        str(pkg / art["bodies"]["model-config"]),
        model_group_id=group_id,
        deploy_model=True,
        isVerbose=False,
    )
    try:
        assert models.get_model(cl, model_id)["model_state"] == "DEPLOYED"
        res = cl.request(
            "POST", f"/_plugins/_ml/_predict/sparse_encoding/{model_id}", body={"text_docs": ["hello world"]}
        )
        assert res["inference_results"][0]["output"][0]["name"] == "output"
    finally:
        models.delete(cl, model_id)
        models.delete_group(cl, group_id)


@pytest.mark.parametrize(
    "flags, env, expect",
    [
        (["--username", "admin", "--password", "pw-123"], {}, "Basic "),
        (["--api-key", "key-123"], {}, "ApiKey key-123"),
        (
            ["--aws-region", "eu-west-1"],
            {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret-123"},
            "AWS4-HMAC-SHA256",
        ),
    ],
)
def test_auth_modes_send_the_right_header_and_never_print_secrets(node_3x, flags, env, expect, monkeypatch):
    """The proxy sees what the client sends; the node (no security plugin) ignores the header."""
    import os

    port = int(node_3x.rsplit(":", 1)[1])
    proxy = FaultProxy(port).start()
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "sparsepack.cli", "preflight", "--url", proxy.url, "--json", *flags],
            capture_output=True,
            text=True,
            env={**os.environ, **env},
        )
        assert proc.returncode == 0, proc.stderr
        sent = [next((v for k, v in h.items() if k.lower() == "authorization"), "") for h in proxy.headers]
        assert sent and all(a.startswith(expect) for a in sent)
        for secret in ("pw-123", "secret-123"):
            assert secret not in proc.stdout + proc.stderr
    finally:
        proxy.stop()


def test_smoke_cli_against_released_models(node_3x, package_factory, model_factory, tmp_path):
    report = release(
        str(package_factory("bert-if-log1p")[1]),
        conn(node_3x),
        ReleaseOptions(group="t-smoke-cli", smoke=False, **OPTS),
    )
    try:
        ids = report["model_ids"]
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "sparsepack.cli",
                "smoke",
                str(package_factory("bert-if-log1p")[1]),
                "--document-model",
                ids["document"],
                "--query-model",
                ids["query"],
                "--model",
                str(model_factory("bert-if-log1p")),
                "--url",
                node_3x,
                "--json",
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-1500:]
        smoke = json.loads(proc.stdout)
        assert smoke["passed"]
        assert smoke["steps"]["smoke_predict"]["query_vs_encode_query"]["passed"]  # server vs the source model itself
        wrong = subprocess.run(
            [
                sys.executable,
                "-m",
                "sparsepack.cli",
                "smoke",
                str(package_factory("bert-if-log1p")[1]),
                "--document-model",
                ids["query"],
                "--url",
                node_3x,
                "--json",
            ],
            capture_output=True,
            text=True,
        )
        assert wrong.returncode == 4 and json.loads(wrong.stdout)["failed_step"] == "smoke_predict"
    finally:
        cleanup_group(node_3x, "t-smoke-cli")


def test_preflight_flags_memory_threshold(node_3x):
    cl = cluster_for(node_3x)
    key = "plugins.ml_commons.native_memory_threshold"
    cl.request("PUT", "/_cluster/settings", body={"persistent": {key: 1}})
    try:
        pf = preflight.run_preflight(cl)
        assert any("native memory" in b.message and key in b.message for b in pf.blockers)
    finally:
        restore_node_settings(node_3x)
