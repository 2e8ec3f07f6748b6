"""Issue 10: every query weight sparsepack lets reach the cluster lies in neural-search's (0, 64].

Zero IDF is floored, IDF above 64 is scaled by a power of two, bad IDF is refused; the rule is recorded in the manifest
and the query proof runs encode_query under it; the query template and the bi-encoder battery are checked the same
way; on real 3.6.0 and 2.19.6 nodes a zero-IDF model releases and a query made only of zero-IDF tokens is answered.
"""

import json
import math

import pytest
import torch
from conftest import cluster_for, conn

from sparsepack.contract.limits import MAX_QUERY_WEIGHT
from sparsepack.demo import DemoSpec, build_demo_model
from sparsepack.errors import ClusterError, SparsepackError
from sparsepack.packaging import parity
from sparsepack.packaging.archive import read_zip
from sparsepack.packaging.introspect import load_model
from sparsepack.packaging.package import package
from sparsepack.packaging.query_weights import apply_idf_rule, undo_rule
from sparsepack.registry import models
from sparsepack.registry.smoke import lucene_feature
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release
from sparsepack.templates import render

ZERO_IDF = ("the", "a", "of", "in", "is", "and")


def query_zip(manifest, root):
    art = next(a for a in manifest["artifacts"] if a["role"] == "query")
    entries = read_zip(root / art["file"])
    return json.loads(entries["tokenizer.json"]), json.loads(entries["idf.json"])


def remove_release(cl, report):
    for model_id in (report.get("model_ids") or {}).values():
        models.delete(cl, model_id)
    gid = report["steps"].get("register", {}).get("model_group_id")
    if gid:
        models.delete_group(cl, gid)


def test_zero_idf_is_floored_below_every_real_weight():
    weights = torch.tensor([0.0, 0.0, 0.37, 5.0, 0.0, 12.5])
    names = {1: "the", 2: "rain", 3: "city", 4: "a", 5: "york"}  # id 0: a special token, never sent
    ruled, record = apply_idf_rule(weights, names)
    floor = record["floor"]
    assert floor == 2.0**-11  # 0.37 -> largest power of two below it is 2^-2, times 2^-9
    assert floor <= 0.37 * 2.0**-9 and math.frexp(floor)[0] == 0.5  # a power of two: exact as float32 and in JSON
    assert ruled[1] == ruled[4] == floor and ruled[0] == 0.0
    assert torch.equal(ruled[[2, 3, 5]], weights[[2, 3, 5]])
    assert record["floored_tokens"] == 2 and record["floored_examples"] == ["a", "the"] and record["scale"] == 1.0
    assert all(0 < float(ruled[i]) <= MAX_QUERY_WEIGHT for i in names)


def test_idf_above_64_is_scaled_by_a_power_of_two_and_ranking_is_unchanged():
    gen = torch.Generator().manual_seed(0)
    weights = torch.rand(50, generator=gen) * 200
    weights[7] = 0.0
    names = {i: f"t{i}" for i in range(50)}
    ruled, record = apply_idf_rule(weights, names)
    assert record["scale"] == 0.25 and 0 < float(ruled.min()) and float(ruled.max()) <= MAX_QUERY_WEIGHT
    docs = torch.rand(20, 50, generator=gen)
    queries = (torch.rand(5, 50, generator=gen) > 0.5).float()
    queries[:, 7] = 0.0  # the floored token apart, every score is exactly scale x the original
    assert torch.equal((queries * ruled) @ docs.T, ((queries * weights) @ docs.T) * 0.25)
    assert undo_rule({"t3": float(ruled[3]), "t7": float(ruled[7])}, record) == {"t3": float(weights[3])}


@pytest.mark.parametrize("bad, shown", [(-0.5, "-0.5"), (float("nan"), "nan"), (float("inf"), "inf")])
def test_negative_nan_infinite_idf_refused_with_the_token(bad, shown):
    weights = torch.tensor([0.0, 1.0, bad, 2.0])
    with pytest.raises(SparsepackError, match=f"IDF of token 'weather' \\(id 2\\) is {shown}"):
        apply_idf_rule(weights, {1: "rain", 2: "weather", 3: "city"})


def test_zero_idf_package_records_rule_and_proves_it(package_factory, model_factory):
    manifest, root = package_factory("bert-if-zero-idf")
    rule = manifest["query_weights"]
    assert rule["floored_tokens"] == len(ZERO_IDF) and sorted(rule["floored_examples"]) == sorted(ZERO_IDF)
    assert rule["scale"] == 1.0 and rule["floor"] < rule["min_positive_idf"] * 2**-8
    q_tok, idf = query_zip(manifest, root)
    assert all(0 < w <= MAX_QUERY_WEIGHT for w in idf.values())
    assert {t: idf[t] for t in ZERO_IDF} == {t: rule["floor"] for t in ZERO_IDF}
    proof = manifest["parity"]["query"]
    assert proof["passed"] and "rule applied" in proof["reference"]
    assert proof["texts"] == len(parity.QUERY_BATTERY) + 1  # the battery plus the lowest-weight query
    assert f"{len(ZERO_IDF)} zero-IDF tokens raised to" in (root / "README.md").read_text()  # the model card says so

    # The proof means something: an idf.json that floors differently from the recorded rule fails it.
    spec = load_model(str(model_factory("bert-if-zero-idf")))
    names = parity.server_token_strings(q_tok, spec.vocab_size)
    ruled, record = apply_idf_rule(spec.query_module.weight, names)
    assert record == rule
    wrong = {**idf, "the": rule["floor"] * 2}
    bad = parity.validate_query_tokenize(spec, q_tok, wrong, rule_weights=ruled, rule=record)
    assert not bad["passed"] and any("the" in m["text"].split() for m in bad["mismatches"])
    # and without the rule, the plain encode_query reference differs from the served weights exactly on those tokens
    plain = parity.validate_query_tokenize(spec, q_tok, idf)
    assert not plain["passed"] and {"the", "in"} <= {t for m in plain["mismatches"] for t in m["only_server"]}


def test_large_idf_model_is_scaled_in_the_package(tmp_path):
    model = build_demo_model(
        tmp_path / "model", DemoSpec(mode="inference-free", seed=7, idf_scale=30.0, zero_idf=("the",))
    )
    manifest = package(str(model), tmp_path / "pkg", log=lambda m: None)
    rule = manifest["query_weights"]
    _, idf = query_zip(manifest, tmp_path / "pkg")
    assert rule["scale"] == 0.25 and rule["floored_tokens"] == 1  # IDF up to 150 -> x 2^-2
    assert max(idf.values()) <= MAX_QUERY_WEIGHT and min(idf.values()) == idf["the"] == rule["floor"] > 0
    assert manifest["parity"]["query"]["passed"]


def test_bi_encoder_query_weights_checked_against_64(package_factory, tmp_path):
    manifest, _ = package_factory("bert-bi-relu")
    assert 0 < manifest["query_weights"]["max_weight"] <= MAX_QUERY_WEIGHT
    # sum pooling of log1p(relu(huge logits)): "rain rain rain" sums to ~73. The absolute 1e-5 document parity cannot
    # hold at such magnitudes in float32; the weight check runs on the model's own encode_query before any trace, so
    # the user gets the reason the cluster would refuse, not a parity failure.
    spec = DemoSpec(mode="bi-encoder", activation="relu", pooling="sum", seed=8, logit_scale=1e9)
    model = build_demo_model(tmp_path / "model", spec)
    for prune_ratio in (0.0, 0.01):
        with pytest.raises(SparsepackError, match=r"gives token '.+' the weight .* above 64 \(HTTP 400\)"):
            package(str(model), tmp_path / "pkg", prune_ratio=prune_ratio, log=lambda m: None)
    assert not (tmp_path / "pkg").exists()


@pytest.mark.parametrize(
    "tokens, problem",
    [
        ({"rain": 1.0, "the": 0.0}, "'the' is 0.0"),
        ({"x": -2}, "'x' is -2"),
        ({"x": float("nan")}, "'x' is NaN"),
        ({"x": 64.5}, "64.5, above 64"),
        ({"x": "1.0"}, "not a number"),
        ({"x": 1e-50}, "is 0 as the float"),
    ],
)
def test_query_template_refuses_weights_outside_0_64(tokens, problem):
    manifest = {"name": "m", "mode": "inference-free", "vocab_size": 225}
    with pytest.raises(SparsepackError, match=problem):
        render("query", manifest, "3.6", query_tokens=tokens)
    body = render("query", manifest, "3.6", query_tokens={"rain": 64, "the": 2.0**-20})
    assert body["query"]["neural_sparse"]["text_sparse"]["query_tokens"] == {"rain": 64, "the": 2.0**-20}


def test_cluster_limit_is_0_to_64(any_node):
    """What the rule is for, on the real node: raw weights 0 and > 64 are HTTP 400; a tiny floor and 64 are not."""
    cl = cluster_for(any_node)
    index = "t-idf-limits"
    cl.request("PUT", f"/{index}", body={"mappings": {"properties": {"text_sparse": {"type": "rank_features"}}}})
    try:
        cl.request(
            "PUT", f"/{index}/_doc/1", body={"text_sparse": {"the": 1.5, "rain": 2.0}}, params={"refresh": "true"}
        )

        def query(tokens):  # raw, not through the template, which refuses the bad ones
            body = {"query": {"neural_sparse": {"text_sparse": {"query_tokens": tokens}}}}
            return cl.request("POST", f"/{index}/_search", body=body, retry=False)["hits"]["hits"]

        for bad in (0.0, 64.5):
            with pytest.raises(ClusterError, match=r"weight must be in \(0, 64"):
                query({"the": bad})
        floor = 2.0**-11
        hits = query({"the": floor})
        assert hits and hits[0]["_score"] == pytest.approx(floor * lucene_feature(1.5), rel=1e-6)
        assert query({"rain": 64.0})[0]["_score"] == pytest.approx(64.0 * lucene_feature(2.0), rel=1e-6)
    finally:
        cl.request("DELETE", f"/{index}", ok_404=True)


def test_zero_idf_model_releases_and_zero_idf_query_answers(any_node, model_factory, tmp_path):
    group = "t-zero-idf"
    cl = cluster_for(any_node)
    index = "t-zero-idf-direct"
    report = release(
        str(model_factory("bert-if-zero-idf")),
        conn(any_node),
        ReleaseOptions(group=group, progress=False, timeout=120),
        package_dir=str(tmp_path / "pkg"),
    )
    try:
        assert report["passed"], report.get("error")
        manifest = json.loads((tmp_path / "pkg" / "manifest.json").read_text())
        floor = manifest["query_weights"]["floor"]
        smoke_predict = report["steps"]["smoke_predict"]
        assert smoke_predict["query"]["passed"] and smoke_predict["query_vs_encode_query"]["passed"]
        probe = report["steps"]["smoke_retrieval"]["low_weight_probe"]
        assert probe["accepted"] and probe["passed"] and len(probe["tokens"]) == 3
        assert set(probe["tokens"]) <= set(ZERO_IDF) and set(probe["tokens"].values()) == {floor}

        # A neural_sparse query made only of zero-IDF tokens, through the deployed SPARSE_TOKENIZE model.
        query_model = report["model_ids"]["query"]
        cl.request("PUT", f"/{index}", body={"mappings": {"properties": {"text_sparse": {"type": "rank_features"}}}})
        cl.request("PUT", f"/{index}/_doc/1", body={"text_sparse": {"the": 1.5, "rain": 2.0}})
        cl.request("PUT", f"/{index}/_doc/2", body={"text_sparse": {"rain": 3.0}}, params={"refresh": "true"})
        body = render("query", manifest, report["cluster"]["version"], model_id=query_model, query_text="the of a")
        hits = cl.request("POST", f"/{index}/_search", body=body)["hits"]["hits"]
        assert [h["_id"] for h in hits] == ["1"]  # only the document holding a zero-IDF token, with a tiny score
        assert hits[0]["_score"] == pytest.approx(floor * lucene_feature(1.5), rel=1e-6)
    finally:
        cl.request("DELETE", f"/{index}", ok_404=True)
        remove_release(cl, report)


def test_without_the_rule_the_smoke_test_names_token_and_weight(node_3x, model_factory, tmp_path, monkeypatch):
    """Negative control: a package that keeps zero IDF (the rule switched off) fails the smoke test, which names the
    tokens and weights: in _predict's output, and in the cluster's rejection of the lowest-weight query."""
    import sparsepack.packaging.query_artifact as packaging
    from sparsepack.registry import smoke
    from sparsepack.registry.local_package import LocalPackage

    def keep_zeros(weights, names):
        _, record = apply_idf_rule(weights, names)
        return weights.detach().float().clone(), {**record, "floor": 0.0, "floored_tokens": 0}

    monkeypatch.setattr(packaging, "apply_idf_rule", keep_zeros)
    manifest = package(str(model_factory("bert-if-zero-idf")), tmp_path / "pkg", log=lambda m: None)
    assert query_zip(manifest, tmp_path / "pkg")[1]["the"] == 0.0
    group = "t-zero-idf-no-rule"
    cl = cluster_for(node_3x)
    refused = release(str(tmp_path / "pkg"), conn(node_3x), ReleaseOptions(group=group, progress=False, timeout=120))
    assert refused["failed_step"] == "verify" and "idf.json weight of" in refused["error"]  # stopped before upload
    # What the smoke test says when such weights reach a cluster anyway (registered by another tool, an old release)
    from sparsepack.contract import package_dir

    monkeypatch.setattr(package_dir, "check_idf_weights", lambda *args: None)
    report = release(
        str(tmp_path / "pkg"),
        conn(node_3x),
        ReleaseOptions(group=group, progress=False, timeout=120, keep_on_failure=True),
    )
    try:
        assert not report["passed"] and report["failed_step"] == "smoke_predict"
        out_of_range = report["steps"]["smoke_predict"]["query_weights_in_range"]["out_of_range"]
        assert out_of_range and set(out_of_range) <= set(ZERO_IDF) and set(out_of_range.values()) == {0.0}
        local = LocalPackage(manifest, tmp_path / "pkg")
        ids = report["model_ids"]
        with pytest.raises(
            ClusterError,
            match=r"rejected the query .*tokens weighted outside \(0, 64\]: '(the|a|of|in|is|and)' 0"
            r".*weight must be in \(0, 64",
        ):
            smoke.check_retrieval(cl, local, report["cluster"]["version"], ids["document"], ids["query"])
    finally:
        remove_release(cl, report)
