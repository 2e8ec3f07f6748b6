"""The smoke test's retrieval check through a semantic field (the node encodes the text itself, 3.1+): a release on
the real 3.6.0 node passes it for a bi-encoder and an inference-free package; before 3.1 it is refused (release checks it in preflight,
before anything is registered)."""

import json

import pytest
from conftest import conn, drop_group

from sparsepack.errors import SparsepackError
from sparsepack.registry import smoke
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release
from sparsepack.templates import render


def test_semantic_is_refused_before_3_1_and_named_as_the_field_type():
    with pytest.raises(SparsepackError, match="3.1") as refused:
        smoke.check_field_type("semantic", "2.19.6")
    assert refused.value.parameter == "field_type"
    smoke.check_field_type("semantic", "3.1.0")


def test_semantic_query_is_a_neural_query_on_the_text_field():
    body = render("query", None, "3.6.0", field_type="semantic", model_id="Q", query_text="rain", size=3)
    assert body["query"] == {"neural": {"text": {"query_text": "rain"}}}
    with pytest.raises(SparsepackError, match="3.1"):
        render("query", None, "2.19.6", field_type="semantic", model_id="Q", query_text="rain")


@pytest.mark.cluster
@pytest.mark.parametrize("name", ["bert-bi-relu", "bert-if-log1p"])
def test_release_smoke_through_a_semantic_field(node_3x, package_factory, name):
    from conftest import cluster_for

    group = f"t-semantic-{name}"
    try:
        rep = release(
            str(package_factory(name)[1]),
            conn(node_3x),
            ReleaseOptions(group=group, field_type="semantic", progress=False, timeout=180),
        )
        retrieval = rep["steps"].get("smoke_retrieval", {})
        summary = {k: v for k, v in retrieval.items() if k != "resources"}
        assert rep["passed"], json.dumps(summary)[:3000]
        assert retrieval["field_type"] == "semantic" and retrieval["mapping"]["type"] == "semantic"
        assert retrieval["mapping"]["model_id"] == rep["model_ids"]["document"]
        assert retrieval["mapping"].get("search_model_id") == rep["model_ids"].get("query")
        assert retrieval["ingest_matches_local"] and retrieval["checked_queries"] > 0
        assert all(q["got"] == q["expected"] for q in retrieval["queries"] if q["checkable"])
    finally:
        drop_group(cluster_for(node_3x), group)
