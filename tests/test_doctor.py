"""`sparsepack doctor` on a real 3.6.0 node: each problem made real (settings changed and restored, a model stored
DEPLOYED but loaded nowhere after a restart, a lease of a killed run, an index whose vectors come from another model),
and a clean cluster giving exit 0. Preflight refusals before upload: nothing registered. The node is the session's
restartable one (shared with test_lifecycle and test_node, this module using it first, so it starts out clean),
restarted once (data kept); the module removes its group, index and pipeline and puts its settings back when done."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import uuid

import pytest
from conftest import cluster_for, conn, drop_group, put_settings, restart_restartable, start_restartable

from sparsepack import cli
from sparsepack.registry import deployment, doctor, lease, models, preflight, references
from sparsepack.templates import render

PACKAGE = "bert-if-log1p"
ML = preflight.ML


@pytest.fixture(scope="module")
def node(restartable_node):
    return restartable_node


@pytest.fixture(scope="module")
def released(node, package_factory):
    """The package released, its document model used by an ingest pipeline and an index: (manifest, root, ids,
    index, pipeline). All removed when the module is done: the node is shared. The node keeps the settings sparsepack's
    local node starts with, so the clean case also shows that `sparsepack node start` makes a node doctor finds clean."""
    from sparsepack.rollout.options import ReleaseOptions
    from sparsepack.rollout.run import release

    manifest, root = package_factory(PACKAGE)
    report = release(str(root), conn(node), ReleaseOptions(group="t-doctor", progress=False))
    assert report["passed"], report.get("error")
    ids = report["model_ids"]
    cl = cluster_for(node)
    version = cl.info()["version"]["number"]
    index, pipeline = "t-doctor-docs", "t-doctor-ingest"
    cl.request(
        "PUT",
        f"/_ingest/pipeline/{pipeline}",
        body=render("ingest-pipeline", manifest, version, model_id=ids["document"]),
    )
    cl.request("PUT", f"/{index}", body=render("index-mapping", manifest, version, ingest_pipeline=pipeline))
    yield manifest, root, ids, index, pipeline
    cl = cluster_for(node)
    cl.request("DELETE", f"/{index}", ok_404=True)
    cl.request("DELETE", f"/_ingest/pipeline/{pipeline}", ok_404=True)
    drop_group(cl, "t-doctor")


def run_doctor(url: str, capsys) -> tuple[int, list[dict]]:
    capsys.readouterr()
    rc = cli.main(["doctor", "--url", url, "--json"])
    return rc, json.loads(capsys.readouterr().out)


def checks(findings: list[dict]) -> list[str]:
    return [f["check"] for f in findings]


@pytest.mark.cluster
def test_clean_cluster_exits_0_and_says_so(node, released, capsys):
    rc, findings = run_doctor(node, capsys)
    assert (rc, findings) == (0, [])
    assert cli.main(["doctor", "--url", node]) == 0
    assert "nothing found that will break" in capsys.readouterr().out


SETTINGS_CASES = {
    "URL registration open to any host": ({ML + "trusted_url_regex": None}, "url_registration", "admits any host"),
    "native memory breaker under current use": ({ML + "native_memory_threshold": 1}, "memory", "native memory"),
    "heap breaker under current use": ({ML + "jvm_heap_memory_threshold": 1}, "memory", "heap"),
    "max_model_on_node reached": ({ML + "max_model_on_node": 2}, "capacity", "max_model_on_node=2"),
    "auto-redeploy off": ({deployment.AUTO_REDEPLOY: False}, "auto_redeploy", "after a node restart"),
}


@pytest.mark.cluster
@pytest.mark.parametrize("case", list(SETTINGS_CASES))
def test_each_setting_problem_is_one_finding_with_its_fix(node, released, capsys, case):
    values, check, says = SETTINGS_CASES[case]
    previous = put_settings(node, values)
    try:
        rc, findings = run_doctor(node, capsys)
    finally:
        put_settings(node, previous)
    assert rc == 4
    found = [f for f in findings if f["check"] == check]
    assert len(found) == 1 and says in found[0]["message"], findings
    assert found[0]["fix"] and found[0]["severity"] in ("error", "warning")
    assert set(found[0]) == {"check", "severity", "message", "fix"}
    if check == "capacity":  # the release's two models, named
        assert all(mid in found[0]["message"] for mid in released[2].values())
    assert run_doctor(node, capsys) == (0, [])  # restored


def test_only_run_on_ml_node_without_ml_nodes():
    """The local node has the ml role (so the setting breaks nothing there): judged on a data-only cluster's reading."""
    reading = doctor.ClusterReading(
        {ML + "only_run_on_ml_node": "true"},
        {"n1": {"name": "data-0", "roles": ["data", "ingest"]}},
        {},
        {},
        {},
        [],
        [],
    )
    (finding,) = doctor.settings_findings(reading)
    assert finding.check == "ml_nodes" and finding.severity == "error"
    assert '"plugins.ml_commons.only_run_on_ml_node": false' in finding.fix
    reading.nodes["n1"]["roles"].append("ml")
    assert doctor.settings_findings(reading) == []


@pytest.mark.cluster
def test_model_ttl_in_deploy_settings_is_reported_and_its_fix_clears_it(node, released, capsys):
    """ML Commons updates deploy settings of remote models only: a remote model with a 60-minute ttl, deployed."""
    cl = cluster_for(node)
    previous = put_settings(node, {ML + "trusted_connector_endpoints_regex": [r"^http://127\.0\.0\.1:1/.*$"]})
    connector = {
        "name": "t-doctor",
        "version": 1,
        "protocol": "http",
        "parameters": {},
        "credential": {"key": "unused"},
        "actions": [{"action_type": "predict", "method": "POST", "url": "http://127.0.0.1:1/x", "request_body": "{}"}],
    }
    body = {
        "name": "t-doctor-ttl",
        "function_name": "remote",
        "deploy_setting": {"model_ttl_minutes": 60},
        "connector": connector,
    }
    model_id = cl.request("POST", "/_plugins/_ml/models/_register", body=body)["model_id"]
    try:
        cl.request("POST", f"/_plugins/_ml/models/{model_id}/_deploy")
        cl.wait_for(
            lambda: (models.get_model(cl, model_id) or {}).get("model_state") == "DEPLOYED", 60, "remote deploy"
        )
        rc, findings = run_doctor(node, capsys)
        assert rc == 4 and checks(findings) == ["model_ttl"], findings
        assert model_id in findings[0]["message"] and "60" in findings[0]["message"]
        method, path, payload = findings[0]["fix"].split(" ", 2)
        cl.request(method, path, body=json.loads(payload))  # the fix as written
        assert run_doctor(node, capsys) == (0, [])
    finally:
        models.delete(cl, model_id, check_references=False)
        put_settings(node, previous)


@pytest.mark.cluster
def test_index_with_vectors_from_another_model_than_its_pipeline(node, released, capsys):
    from sparsepack.migrate.provenance import provenance, write_meta

    manifest, _, ids, index, pipeline = released
    cl = cluster_for(node)
    write_meta(cl, index, provenance(cl, ids["document"], ids.get("query"), None))
    assert run_doctor(node, capsys) == (0, [])  # recorded and used agree
    try:
        # the index's vectors recorded as coming from the query model: its pipeline encodes with the document model
        write_meta(cl, index, provenance(cl, ids["query"], ids["query"], None))
        rc, findings = run_doctor(node, capsys)
        assert rc == 4 and checks(findings) == ["provenance"], findings
        msg = findings[0]["message"]
        assert index in msg and ids["query"] in msg and ids["document"] in msg and "ingest" in msg
        assert "migrate" in findings[0]["fix"]
    finally:
        write_meta(cl, index, provenance(cl, ids["document"], ids.get("query"), None))


DEAD_RUN = textwrap.dedent("""
    import os, sys
    from sparsepack.registry.connection import ConnectionOptions, connect
    from sparsepack.registry.lease import Coordinator
    coord = Coordinator(connect(ConnectionOptions.from_env(url=sys.argv[1])), 30, ttl=1)
    assert coord.acquire("group:t-doctor-dead", "group", lambda r: False, "the group") is None
    print("held", flush=True)
    os.kill(os.getpid(), 9)
""")


@pytest.mark.cluster
def test_lease_of_a_killed_run_is_reported_and_its_fix_clears_it(node, released, capsys):
    proc = subprocess.run([sys.executable, "-c", DEAD_RUN, node], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9 and "held" in proc.stdout, proc.stderr
    cl = cluster_for(node)
    assert cl.wait_for(lambda: lease.expired_leases(cl), 30, "the killed run's lease to expire")
    rc, findings = run_doctor(node, capsys)
    assert rc == 4 and checks(findings) == ["lease"], findings
    assert "group:t-doctor-dead" in findings[0]["message"]
    method, path = findings[0]["fix"].rsplit(" ", 2)[-2:]
    assert method == "DELETE" and path.startswith(f"/{lease.INDEX}/_doc/")
    cl.request(method, path)
    assert run_doctor(node, capsys) == (0, [])


def release_fails_before_upload(node, root, group, **opts) -> dict:
    from sparsepack.rollout.options import ReleaseOptions
    from sparsepack.rollout.run import release

    cl = cluster_for(node)
    before = set(deployment.stored_models(cl))
    report = release(str(root), conn(node), ReleaseOptions(group=group, progress=False, **opts))
    assert not report["passed"]
    assert set(deployment.stored_models(cl)) == before and models.find_group(cl, group) is None, report
    assert "register" not in report["steps"], report["steps"]
    return report


def copy_package(src, dst, **manifest_changes):
    import shutil

    shutil.copytree(src, dst)
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest.update(manifest_changes)
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


@pytest.mark.cluster
def test_sparse_vector_with_a_vocabulary_seismic_cannot_hold_is_refused_before_upload(node, released, tmp_path):
    root = copy_package(released[1], tmp_path / "pkg", vocab_size=105879)
    report = release_fails_before_upload(node, root, f"t-doctor-{uuid.uuid4().hex[:6]}", field_type="sparse_vector")
    assert report["failed_step"] == "preflight" and "105879" in report["error"] and "32768" in report["error"]


@pytest.mark.cluster
def test_sparse_vector_on_a_version_without_it_is_refused_before_upload(node_2x, package_factory):
    _, root = package_factory(PACKAGE)
    report = release_fails_before_upload(node_2x, root, f"t-doctor-{uuid.uuid4().hex[:6]}", field_type="sparse_vector")
    assert report["failed_step"] == "preflight" and "3.3" in report["error"] and "2.19" in report["error"]


@pytest.mark.cluster
def test_gpu_only_package_without_gpu_nodes_is_refused_before_upload(node, released, tmp_path):
    root = copy_package(released[1], tmp_path / "pkg", requires_gpu=True)
    report = release_fails_before_upload(node, root, f"t-doctor-{uuid.uuid4().hex[:6]}")
    assert report["failed_step"] == "verify" and "fp16" in report["error"]
    pf = preflight.run_preflight(cluster_for(node), json.loads((root / "manifest.json").read_text()))
    assert "gpu_targets_missing" in [b.code for b in pf.blockers]


@pytest.mark.cluster
def test_capacity_is_refused_before_upload(node, released, package_factory):
    _, root = package_factory("distil-if-relu")
    previous = put_settings(node, {ML + "max_model_on_node": 3})  # the release's 2 loaded + 2 new > 3
    try:
        report = release_fails_before_upload(node, root, f"t-doctor-{uuid.uuid4().hex[:6]}")
    finally:
        put_settings(node, previous)
    assert report["failed_step"] == "preflight" and "max_model_on_node=3" in report["error"]


@pytest.mark.cluster
def test_url_registration_disabled_is_refused_before_upload(node, released):
    previous = put_settings(node, {ML + "allow_registering_model_via_url": False})
    try:
        report = release_fails_before_upload(
            node, released[1], f"t-doctor-{uuid.uuid4().hex[:6]}", artifact_base_url="http://127.0.0.1:1/pkg"
        )
    finally:
        put_settings(node, previous)
    assert report["failed_step"] == "preflight" and "allow_registering_model_via_url is false" in report["error"]


def test_field_type_rules_before_upload():
    assert "3.3" in preflight.field_type_problem("sparse_vector", "2.19.6", {"vocab_size": 30522})
    assert "32768" in preflight.field_type_problem("sparse_vector", "3.6.0", {"vocab_size": 105879})
    assert "unknown" in preflight.field_type_problem("dense", "3.6.0", None)
    assert preflight.field_type_problem("sparse_vector", "3.6.0", {"vocab_size": 30522}) is None
    assert preflight.field_type_problem("rank_features", "2.19.6", {"vocab_size": 105879}) is None


@pytest.mark.cluster
def test_model_stored_deployed_but_loaded_nowhere_names_its_users_and_takes_no_capacity(node, released, capsys):
    """Last in the module: restarts the node with auto-redeploy off, then deploys the models again."""
    _, _, ids, index, pipeline = released
    previous = put_settings(node, {deployment.AUTO_REDEPLOY: False})
    try:
        restart_restartable()  # data kept
        cl = cluster_for(node)
        rc, findings = run_doctor(node, capsys)
        assert rc == 4
        by_check = {}
        for f in findings:
            by_check.setdefault(f["check"], []).append(f)
        assert set(by_check) == {"model", "auto_redeploy"}, findings
        doc = next(f for f in by_check["model"] if ids["document"] in f["message"])
        assert doc["severity"] == "error" and "loaded on 0 of 1 node" in doc["message"]
        assert f"ingest pipeline {pipeline}" in doc["message"] and f"index {index}" in doc["message"]
        assert f"/_plugins/_ml/models/{ids['document']}/_deploy" in doc["fix"]
        # capacity counts where models are loaded: the stored DEPLOYED ones hold no room on the node
        truth = deployment.read_many(cl, deployment.stored_models(cl))
        assert truth[ids["document"]].stored_state in ("DEPLOYED", "DEPLOY_FAILED")
        node_ids = list(cl.request("GET", "/_nodes")["nodes"])
        assert preflight.models_held(truth, node_ids) == {node_ids[0]: set()}
        for model_id in ids.values():
            cl.request("POST", f"/_plugins/_ml/models/{model_id}/_deploy")
        cl.wait_for(lambda: all(deployment.read(cl, m).usable for m in ids.values()), 120, "the models to load again")
        assert preflight.models_held(deployment.read_many(cl, deployment.stored_models(cl)), node_ids) == {
            node_ids[0]: set(ids.values())
        }
    finally:
        start_restartable()  # running again also when the test failed while it was stopped
        put_settings(node, previous)
    assert run_doctor(node, capsys) == (0, [])


def test_doctor_does_not_import_torch():
    probe = "import sys; from sparsepack.cli import main; main(['doctor', '--url', 'http://127.0.0.1:1']); "
    probe += "print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr


def test_findings_in_reading_order():
    """Model and provenance checks on a reading built by hand: a pipeline naming a model that does not exist."""
    refs = references.find_in(
        {"gone"},
        {"p": {"processors": [{"sparse_encoding": {"model_id": "gone"}}]}},
        {},
        {"i": {"index.default_pipeline": "p"}},
    )
    reading = doctor.ClusterReading({}, {}, {}, {}, {}, refs, [])
    (finding,) = doctor.model_findings(reading)
    assert finding.severity == "error" and "model gone does not exist" in finding.message
    assert "ingest pipeline p" in finding.message and "index i" in finding.message
    assert finding.line().startswith("error: [model] ")
    assert (
        doctor.provenance_findings(refs, {"i": {"document_model_id": "old", "source": "_meta"}})[0].check
        == "provenance"
    )
    assert doctor.provenance_findings(refs, {"i": {"document_model_id": "gone", "source": "_meta"}}) == []
