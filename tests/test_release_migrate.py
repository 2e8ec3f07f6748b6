"""One release onto the real 3.6.0 node that moves a live alias to the new version (--migrate) and clears the
previous versions, keeping the one the alias's old index still uses; switching the pipeline of an index the previous
version's vectors fill is refused (exit 4) naming the migration, and done when mixed vectors are allowed."""

import json
import subprocess
import sys

import pytest
from conftest import cluster_for, drop_group
from test_migrate import V1, V2, drop, production

from sparsepack.registry import index_models, references, smoke
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release

pytestmark = pytest.mark.cluster
GROUP, ALIAS = "t-rel-migrate", "t-relmig"


def cli_release(url: str, pkg, *flags: str, group: str = GROUP) -> tuple[int, dict, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", "release", str(pkg), "--url", url, "--group", group, "--json"]
        + list(flags),
        capture_output=True,
        text=True,
        timeout=900,
    )
    return proc.returncode, json.loads(proc.stdout), proc.stderr


def test_release_migrates_an_alias_and_keeps_the_model_its_old_index_uses(node_3x, package_factory):
    from conftest import conn

    cl = cluster_for(node_3x)
    manifest_v1, pkg_v1 = package_factory(V1)
    _, pkg_v2 = package_factory(V2)
    env = {"cluster": cl, "manifest": manifest_v1}
    try:
        first = release(str(pkg_v1), conn(node_3x), ReleaseOptions(group=GROUP, smoke=False, progress=False))
        assert first["passed"], first.get("error")
        v1 = env["v1"] = first["model_ids"]["document"]
        production(env, ALIAS, docs=60)
        old_index = f"{ALIAS}-v1"

        code, refused, stderr = cli_release(node_3x, pkg_v2, "--switch-pipelines", f"{ALIAS}-ingest")
        assert code == 4, stderr[-2000:]
        assert refused["failed_step"] == "upgrade_plan" and "sparsepack migrate" in refused["error"]
        assert "--allow-mixed-vectors" in refused["error"]
        mixed = refused["steps"]["upgrade_plan"]["mixed_vectors"]
        assert mixed == [
            {
                "index": old_index,
                "documents": 60,
                "vector_model_ids": [v1],
                "recorded_in": f"ingest pipeline {ALIAS}-ingest",
                "kind": "ingest",
                "pipeline": f"{ALIAS}-ingest",
            }
        ]
        assert "register" not in refused["steps"]  # refused before anything was created

        code, report, stderr = cli_release(node_3x, pkg_v2, "--migrate", ALIAS, "--clear-previous")
        assert code == 0, stderr[-2000:]
        v2 = report["model_ids"]["document"]
        order = list(report["steps"])
        assert order.index("smoke_retrieval") < order.index("migrate") < order.index("clear_previous")
        moved = report["steps"]["migrate"]["aliases"][ALIAS]
        assert moved["passed"] and moved["swapped"] and moved["old_index"] == old_index
        assert moved["verification"]["counts"] == {"old": 60, "new": 60, "passed": True}
        new_index = moved["new_index"]
        assert list(cl.client.indices.get_alias(name=ALIAS)) == [new_index]
        assert index_models.index_provenance(cl)[new_index]["document_model_id"] == v2
        cleared = report["steps"]["clear_previous"]
        assert cleared["removed"] == []
        assert old_index in cleared["kept_for_rollback"][v1][0] and ALIAS in cleared["kept_for_rollback"][v1][0]
        assert report["steps"]["upgrade_plan"]["migrate"] == {ALIAS: old_index}
        assert (cl.request("GET", f"/_plugins/_ml/models/{v1}") or {}).get("model_state") == "DEPLOYED"

        listed = subprocess.run(
            [sys.executable, "-m", "sparsepack.cli", "list", "--url", node_3x, "--json"],
            capture_output=True,
            text=True,
            timeout=300,
        )
        rows = {r["model_id"]: r for r in json.loads(listed.stdout)}
        assert new_index in rows[v2]["vector_indices"] and old_index not in rows[v2]["vector_indices"]
    finally:
        drop(env, ALIAS)
        drop_group(cl, GROUP)


def test_allow_mixed_vectors_switches_the_pipeline_and_reports_what_it_mixed(node_3x, package_factory):
    """The same switch, allowed: exit 0, the pipeline names v2 (a new document gets v2's vectors), the old documents
    keep v1's, and the report lists the index it mixed in steps.upgrade_plan.mixed_vectors."""
    from conftest import conn

    group, alias = "t-rel-mixed", "t-relmixed"
    cl = cluster_for(node_3x)
    manifest_v1, pkg_v1 = package_factory(V1)
    _, pkg_v2 = package_factory(V2)
    env = {"cluster": cl, "manifest": manifest_v1}
    try:
        first = release(str(pkg_v1), conn(node_3x), ReleaseOptions(group=group, smoke=False, progress=False))
        assert first["passed"], first.get("error")
        v1 = env["v1"] = first["model_ids"]["document"]
        production(env, alias, docs=20)
        ingest = f"{alias}-ingest"
        before = cl.client.get(index=alias, id="d0")["_source"]["text_sparse"]

        code, report, stderr = cli_release(
            node_3x, pkg_v2, "--switch-pipelines", ingest, "--allow-mixed-vectors", group=group
        )
        assert code == 0 and report["passed"], stderr[-2000:]
        v2 = report["model_ids"]["document"]
        assert v2 != v1
        assert report["steps"]["upgrade_plan"]["mixed_vectors"] == [
            {
                "index": f"{alias}-v1",
                "documents": 20,
                "vector_model_ids": [v1],
                "recorded_in": f"ingest pipeline {ingest}",
                "kind": "ingest",
                "pipeline": ingest,
            }
        ]
        assert [(p["kind"], p["name"]) for p in report["steps"]["switch_pipelines"]["pipelines"]] == [
            ("ingest", ingest)
        ]
        assert references.model_ids_in(cl.request("GET", f"/_ingest/pipeline/{ingest}")[ingest]) == {v2}
        assert cl.client.get(index=alias, id="d0")["_source"]["text_sparse"] == before  # old documents: v1's
        cl.client.index(index=alias, id="new", body={"text": "rain over the city"}, params={"refresh": "true"})
        stored = cl.client.get(index=alias, id="new")["_source"]["text_sparse"]
        want = smoke.predict(cl, v2, ["rain over the city"])
        assert smoke.compare_maps([stored], want, smoke.PREDICT_TOLERANCE)["passed"]  # new documents: v2's
    finally:
        drop(env, alias)
        drop_group(cl, group)
