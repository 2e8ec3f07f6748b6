"""Every variant of every template, generated from the feature table (sparsepack/templates/versions.py), applied to
the real 3.6.0 and 2.19.6 nodes: a body counts as working only when the node does with it what it is for (a mapping
finds the document ingested through the pipeline first, a query finds the locally best document, a pipeline encodes a
document), not merely when it is accepted. A feature added to the table is tried here by construction."""

from __future__ import annotations

import functools
import http.server
import os
import threading
import uuid

import pytest
from conftest import NODE_2X, NODE_3X, cluster_for

from sparsepack.errors import ClusterError, SparsepackError
from sparsepack.node.config import NODE_ML_SETTINGS
from sparsepack.registry import models, smoke, smoke_corpus
from sparsepack.registry.local_package import LocalPackage
from sparsepack.templates import TEMPLATES, render
from sparsepack.templates.versions import (
    DOCUMENT_MODEL,
    FEATURES,
    QUERY_MODEL,
    QUERY_TOKENS,
    features_for,
    fmt,
    parse_version,
)

NODES = {"3x": NODE_3X, "2x": NODE_2X}
PACKAGE = "bert-if-log1p"  # inference-free: a SPARSE_ENCODING document model and a SPARSE_TOKENIZE query model
BERT_VOCAB = 30522


def cases():
    """(node, feature, template, values) for every variant the node's version allows."""
    out = []
    for node, version in NODES.items():
        allowed = features_for(parse_version(version))
        for feature, spec in FEATURES.items():
            for i, (template, values) in enumerate(spec.variants):
                if allowed[feature]:
                    out.append(pytest.param(node, feature, template, values, id=f"{node}-{feature}-{i}-{template}"))
    return out


def test_every_feature_has_variants_and_every_template_is_covered():
    """A feature without a variant would ship untried; so would a template no variant uses."""
    assert all(spec.variants for spec in FEATURES.values()), [n for n, s in FEATURES.items() if not s.variants]
    used = {template for spec in FEATURES.values() for template, _ in spec.variants}
    assert used == set(TEMPLATES)
    tried = {f for node in NODES.values() for f, ok in features_for(parse_version(node)).items() if ok}
    assert set(FEATURES) - tried == {"model_config_stub"}  # 2.11 only: no node of that line is assembled


class NodeEnv:
    """One node with the package's models deployed, and indices of each field shape filled through the pipeline."""

    def __init__(self, url: str, manifest: dict, root):
        from sparsepack.registry.connection import ConnectionOptions
        from sparsepack.rollout.options import ReleaseOptions
        from sparsepack.rollout.run import release

        self.url, self.manifest, self.root = url, manifest, root
        self.cluster = cluster_for(url)
        self.version = self.cluster.info()["version"]["number"]
        report = release(
            str(root),
            ConnectionOptions.from_env(url=url),
            ReleaseOptions(group=f"t-accept-{uuid.uuid4().hex[:6]}", smoke=False, progress=False),
        )
        assert report["passed"], report.get("error")
        self.ids = report["model_ids"]
        self.local = LocalPackage(manifest, root)
        self.doc_vectors = self.local.encode_documents(smoke_corpus.CORPUS)
        self.indices: dict[tuple[str, bool], str] = {}
        self.created: list[str] = []

    def fill(self, values: dict) -> dict:
        fills = {DOCUMENT_MODEL: self.ids["document"], QUERY_MODEL: self.ids.get("query", self.ids["document"])}
        return {k: fills.get(v, v) if isinstance(v, str) else v for k, v in values.items()}

    def index(self, field_type: str, chunking: bool) -> str:
        """A corpus index of this shape, documents encoded by the node's ingest pipeline."""
        key = (field_type, chunking)
        if key not in self.indices:
            name = f"t-accept-{field_type.replace('_', '-')}-{int(chunking)}-{uuid.uuid4().hex[:6]}"
            pipeline = f"{name}-ingest"
            self.cluster.request(
                "PUT",
                f"/_ingest/pipeline/{pipeline}",
                body=render(
                    "ingest-pipeline", self.manifest, self.version, model_id=self.ids["document"], chunking=chunking
                ),
            )
            self.cluster.request(
                "PUT",
                f"/{name}",
                body=render(
                    "index-mapping",
                    self.manifest,
                    self.version,
                    ingest_pipeline=pipeline,
                    field_type=field_type,
                    chunking=chunking,
                ),
            )
            for i, text in enumerate(smoke_corpus.CORPUS):
                self.cluster.request("PUT", f"/{name}/_doc/{i}", body={"text": text})
            self.cluster.request("POST", f"/{name}/_refresh")
            self.created += [name, pipeline]
            self.indices[key] = name
        return self.indices[key]

    def checkable_query(self) -> tuple[str, dict, int]:
        """A query whose locally best document is clearly ahead of the second."""
        queries = smoke_corpus.QUERIES + smoke_corpus.expansion_queries(self.doc_vectors)
        for text, vec in zip(queries, self.local.encode_queries(queries)):
            scores = sorted(((smoke._dot(vec, d), i) for i, d in enumerate(self.doc_vectors)), reverse=True)
            if scores[0][0] > 0 and scores[0][0] - scores[1][0] > 0.05 * scores[0][0]:
                return text, vec, scores[0][1]
        pytest.fail("no query has a clear locally best document")

    def close(self) -> None:
        for name in self.created:
            path = f"/_ingest/pipeline/{name}" if name.endswith("-ingest") else f"/{name}"
            self.cluster.request("DELETE", path, ok_404=True)
        for model_id in self.ids.values():
            models.delete(self.cluster, model_id)


@pytest.fixture(scope="module")
def envs(request, package_factory):
    made: dict[str, NodeEnv] = {}

    def get(node: str) -> NodeEnv:
        if node not in made:
            manifest, root = package_factory(PACKAGE)
            made[node] = NodeEnv(request.getfixturevalue(f"node_{node}"), manifest, root)
            if parse_version(made[node].version) != parse_version(NODES[node]):
                pytest.skip(f"the {node} cluster runs {made[node].version}, the table was expanded for {NODES[node]}")
        return made[node]

    yield get
    for env in made.values():
        env.close()


def _top(hits: list[dict]) -> int | None:
    return int(hits[0]["_id"]) if hits else None


def apply_index_mapping(env: NodeEnv, values: dict) -> None:
    """The retrieval check of the smoke test on an index with exactly this mapping."""
    values = dict(values)
    field_type, chunking = values.pop("field_type", "rank_features"), values.pop("chunking", False)
    result = smoke.check_retrieval(
        env.cluster,
        env.local,
        env.version,
        env.ids["document"],
        env.ids.get("query"),
        keep=field_type == "sparse_vector",
        field_type=field_type,
        chunking=chunking,
        mapping_values=values,
    )
    try:
        failed = [q for q in result["queries"] if q["checkable"] and not q["passed"]]
        assert result["ingest_matches_local"], "the stored keys differ from the local vector's (format of the field?)"
        assert result["passed"], failed
        if field_type == "sparse_vector":
            assert_node_seismic_mapping(env.cluster, result, values, chunking)
    finally:
        if result["kept"]:
            smoke.cleanup(env.cluster, result["resources"])


def assert_node_seismic_mapping(cluster, result: dict, values: dict, chunking: bool) -> None:
    """The mapping the node holds (read back, not the body sparsepack sent): a SEISMIC sparse_vector field with the
    asked parameters."""
    index = result["resources"]["index"]
    field = cluster.request("GET", f"/{index}/_mapping")[index]["mappings"]["properties"]["text_sparse"]
    if chunking:
        assert field["type"] == "nested"
        field = field["properties"]["sparse_encoding"]
    assert field["type"] == "sparse_vector" and field["method"]["name"] == "seismic", field
    params = field["method"].get("parameters", {})
    for key, want in values.items():
        if want is not None:
            assert key in params and float(params[key]) == float(want), (key, want, params)


def apply_query(env: NodeEnv, values: dict) -> None:
    values = env.fill(values)
    field_type, chunking = values.get("field_type", "rank_features"), values.get("chunking", False)
    index = env.index(field_type, chunking)
    text, vec, best = env.checkable_query()
    if values.get("query_tokens") == QUERY_TOKENS:
        values["query_tokens"] = smoke.as_field_vector(env.local, vec, field_type)
    if values.get("model_id") or values.get("query_tokens"):
        body = render("query", env.manifest, env.version, query_text=text, size=3, **values)
        hits = env.cluster.request("POST", f"/{index}/_search", body=body, params={"search_pipeline": "_none"})["hits"][
            "hits"
        ]
        assert _top(hits) == best, (text, hits)
        return
    apply_analyzer_query(env, index, text, values)


def apply_analyzer_query(env: NodeEnv, index: str, text: str, values: dict) -> None:
    """A built-in analyzer tokenizes with bert-base-uncased's vocabulary and weights, not the model's: the hits must
    be exactly the documents whose stored vector holds one of the tokens the node's analyzer makes of the query."""
    analyzer = values.get("analyzer") or "bert-uncased"  # 3.1+: no model_id and no analyzer means bert-uncased
    if values.get("analyzer"):  # sparsepack refuses the analyzer for a model of another vocabulary...
        with pytest.raises(
            SparsepackError, match=f"{BERT_VOCAB}-token vocabulary, the model has {env.manifest['vocab_size']}"
        ):
            render("query", env.manifest, env.version, query_text=text, size=3, **values)
    same_vocab = {**env.manifest, "vocab_size": BERT_VOCAB}  # ...and renders it for one of bert-base-uncased's
    body = render("query", same_vocab, env.version, query_text=text, size=len(smoke_corpus.CORPUS), **values)
    tokens = {
        t["token"]
        for t in env.cluster.request("POST", "/_analyze", body={"analyzer": analyzer, "text": text})["tokens"]
    }
    field_type = values.get("field_type", "rank_features")
    expected = {
        i for i, d in enumerate(env.doc_vectors) if set(smoke.as_field_vector(env.local, d, field_type)) & tokens
    }
    hits = env.cluster.request("POST", f"/{index}/_search", body=body, params={"search_pipeline": "_none"})["hits"][
        "hits"
    ]
    assert expected, f"no corpus document holds a token of {sorted(tokens)}: the query checks nothing"
    assert {int(h["_id"]) for h in hits} == expected, (text, sorted(tokens), hits)


def local_prune(vector: dict, prune_type: str, ratio: float) -> set[str]:
    """The tokens neural-search's PruneUtils keeps (the two-phase processor's phase-one tokens)."""
    ranked = sorted(vector.items(), key=lambda kv: -kv[1])
    if prune_type == "max_ratio":
        return {t for t, w in ranked if w >= ranked[0][1] * ratio}
    if prune_type == "abs_value":
        return {t for t, w in ranked if w >= ratio}
    if prune_type == "top_k":
        return {t for t, _ in ranked[: int(ratio)]}
    assert prune_type == "alpha_mass"
    total, running, kept = sum(vector.values()), 0.0, set()
    for t, w in ranked:  # cumulative mass <= ratio x total: a query whose top token outweighs that keeps nothing
        running += w
        if running <= ratio * total:
            kept.add(t)
    return kept


def apply_ingest_pipeline(env: NodeEnv, values: dict) -> None:
    values = env.fill(values)
    full = env.doc_vectors[0]
    weights = sorted(full.values())
    if values.get("prune_type"):  # a ratio that prunes this model's output about in half, whatever the table's example
        values["prune_ratio"] = {
            "max_ratio": weights[len(weights) // 2] / weights[-1],
            "abs_value": weights[len(weights) // 2],
            "top_k": len(weights) // 2,
            "alpha_mass": 0.5,
        }[values["prune_type"]]
    name = f"t-accept-ingest-{uuid.uuid4().hex[:6]}"
    env.cluster.request(
        "PUT", f"/_ingest/pipeline/{name}", body=render("ingest-pipeline", env.manifest, env.version, **values)
    )
    try:
        doc = {
            "_index": env.index("rank_features", False),
            "_id": "simulated",
            "_source": {"text": smoke_corpus.CORPUS[0]},
        }
        out = env.cluster.request("POST", f"/_ingest/pipeline/{name}/_simulate", body={"docs": [doc]})["docs"][0]
        assert "error" not in out, out
        keys = smoke.stored_keys(out["doc"]["_source"], "text_sparse", values.get("chunking", False))
        if not values.get("prune_type"):
            assert keys == set(full)
            return
        assert keys and keys < set(full), f"prune_type {values['prune_type']} kept {len(keys)} of {len(full)} tokens"
        assert keys == local_prune(full, values["prune_type"], values["prune_ratio"])
    finally:
        env.cluster.request("DELETE", f"/_ingest/pipeline/{name}", ok_404=True)


def apply_search_pipeline(env: NodeEnv, values: dict) -> None:
    values = env.fill(values)
    name = f"t-accept-search-{uuid.uuid4().hex[:6]}"
    env.cluster.request(
        "PUT", f"/_search/pipeline/{name}", body=render("search-pipeline", env.manifest, env.version, **values)
    )
    try:
        text, vec, best = env.checkable_query()
        if values.get("two_phase", True):  # phase one: the pruned query; phase two rescores its hits with the whole one
            high = local_prune(vec, values.get("prune_type") or "max_ratio", values.get("two_phase_prune_ratio", 0.4))
            found = [i for i, d in enumerate(env.doc_vectors) if smoke._dot({t: vec[t] for t in high}, d) > 0]
            best = max(found, key=lambda i: smoke._dot(vec, env.doc_vectors[i]), default=None)
        body = {
            "size": 3,
            "query": {"neural_sparse": {"text_sparse": {"query_text": text}}},
        }  # model id from the pipeline
        hits = env.cluster.request(
            "POST", f"/{env.index('rank_features', False)}/_search", body=body, params={"search_pipeline": name}
        )["hits"]["hits"]
        assert _top(hits) == best, (values, text, hits)
    finally:
        env.cluster.request("DELETE", f"/_search/pipeline/{name}", ok_404=True)


def apply_model_group(env: NodeEnv, values: dict) -> None:
    body = render("model-group", None, env.version, group_name=f"t-accept-group-{uuid.uuid4().hex[:6]}", **values)
    if values.get("access_mode"):
        # The local nodes run without the Security plugin: ML Commons parses the access mode and refuses it for that
        # reason only (a malformed body is refused for another).
        with pytest.raises(ClusterError, match="Security plugin or model access control is disabled"):
            env.cluster.request("POST", "/_plugins/_ml/model_groups/_register", body=body, retry=False)
        return
    group = env.cluster.request("POST", "/_plugins/_ml/model_groups/_register", body=body)["model_group_id"]
    models.delete_group(env.cluster, group)


def _register_meta(env: NodeEnv, body: dict) -> None:
    group = env.cluster.request(
        "POST",
        "/_plugins/_ml/model_groups/_register",
        body=render("model-group", None, env.version, group_name=f"t-accept-meta-{uuid.uuid4().hex[:6]}"),
    )
    model_id = env.cluster.request(
        "POST", "/_plugins/_ml/models/_register_meta", body={**body, "model_group_id": group["model_group_id"]}
    )["model_id"]
    try:
        model = models.get_model(env.cluster, model_id)
        assert model["model_content_hash_value"] == body["model_content_hash_value"]
        assert model["total_chunks"] == body["total_chunks"]
    finally:
        models.delete(env.cluster, model_id)
        models.delete_group(env.cluster, group["model_group_id"])


def apply_register_meta(env: NodeEnv, values: dict) -> None:
    _register_meta(
        env, render("register-meta", env.manifest, env.version, model_name=f"t-accept-{uuid.uuid4().hex[:6]}", **values)
    )


def apply_model_config(env: NodeEnv, values: dict) -> None:
    """opensearch-py-ml's register_model posts this file to _register_meta with total_chunks added."""
    body = render("model-config", env.manifest, env.version, model_name=f"t-accept-{uuid.uuid4().hex[:6]}", **values)
    art = next(a for a in env.manifest["artifacts"] if a["role"] == values["role"])
    _register_meta(
        env, {**body, "total_chunks": render("register-meta", env.manifest, env.version, **values)["total_chunks"]}
    )
    assert body["model_content_hash_value"] == art["sha256"]


def apply_register_url(env: NodeEnv, values: dict) -> None:
    """The artifact served over HTTP on loopback; the node downloads it, checks size and hash, registers it."""
    art = next(a for a in env.manifest["artifacts"] if a["role"] == values["role"])
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(env.root))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env.cluster.request(
        "PUT",
        "/_cluster/settings",
        body=render(
            "cluster-settings", None, env.version, **{**NODE_ML_SETTINGS, "allow_registering_model_via_url": True}
        ),
    )
    model_id = None
    try:
        body = render(
            "register-url",
            env.manifest,
            env.version,
            model_name=f"t-accept-{uuid.uuid4().hex[:6]}",
            url=f"http://127.0.0.1:{server.server_port}/{art['file']}",
            **values,
        )
        task = env.cluster.request("POST", "/_plugins/_ml/models/_register", body=body)
        model_id = models.wait_task(env.cluster, task["task_id"], 120, "URL registration")["model_id"]
        assert models.get_model(env.cluster, model_id)["model_content_hash_value"] == art["sha256"]
    finally:
        server.shutdown()
        if model_id:
            models.delete(env.cluster, model_id)
        env.cluster.request(
            "PUT", "/_cluster/settings", body=render("cluster-settings", None, env.version, **NODE_ML_SETTINGS)
        )


def apply_cluster_settings(env: NodeEnv, values: dict) -> None:
    body = render("cluster-settings", None, env.version, **{**NODE_ML_SETTINGS, **values})
    try:
        assert env.cluster.request("PUT", "/_cluster/settings", body=body)["acknowledged"]
        now = env.cluster.request("GET", "/_cluster/settings", params={"flat_settings": "true"})["persistent"]
        for key, value in body["persistent"].items():
            assert str(now[key]).lower() == str(value).lower(), key
    finally:
        env.cluster.request(
            "PUT", "/_cluster/settings", body=render("cluster-settings", None, env.version, **NODE_ML_SETTINGS)
        )


APPLY = {
    "index-mapping": apply_index_mapping,
    "query": apply_query,
    "ingest-pipeline": apply_ingest_pipeline,
    "search-pipeline": apply_search_pipeline,
    "model-group": apply_model_group,
    "register-meta": apply_register_meta,
    "model-config": apply_model_config,
    "register-url": apply_register_url,
    "cluster-settings": apply_cluster_settings,
}


def test_every_template_has_an_applier():
    assert set(APPLY) == set(TEMPLATES)


@pytest.mark.parametrize("node, feature, template, values", cases())
def test_variant_works_on_the_node(envs, node, feature, template, values):
    if os.environ.get(f"OPENSEARCH_URL{'_2X' if node == '2x' else ''}") and template in (
        "register-url",
        "cluster-settings",
    ):
        pytest.skip("external cluster: its ML settings are not this test's to change")
    env = envs(node)
    assert features_for(parse_version(env.version))[feature], f"{feature} is not in {fmt(parse_version(env.version))}"
    APPLY[template](env, values)


def test_release_smoke_on_a_sparse_vector_index(node_3x, package_factory):
    """release --field-type sparse_vector: the smoke index is SEISMIC, below approximate_threshold so search is exact;
    the stored vectors are token ids, compared with the local ones converted to ids; top-1 and scores must match."""
    from sparsepack.registry.connection import ConnectionOptions
    from sparsepack.rollout.options import ReleaseOptions
    from sparsepack.rollout.run import release

    _, root = package_factory(PACKAGE)
    report = release(
        str(root),
        ConnectionOptions.from_env(url=node_3x),
        ReleaseOptions(group=f"t-sv-{uuid.uuid4().hex[:6]}", progress=False, field_type="sparse_vector", keep=True),
    )
    cl = cluster_for(node_3x)
    try:
        assert report["passed"], report.get("error")
        retrieval = report["steps"]["smoke_retrieval"]
        assert retrieval["field_type"] == "sparse_vector" and retrieval["kept"]
        assert retrieval["ingest_matches_local"] and retrieval["checked_queries"] > 0
        assert all(q["relative_diff"] <= smoke.SCORE_RTOL for q in retrieval["queries"] if q["checkable"])
        stored = cl.request("GET", f"/{retrieval['resources']['index']}/_doc/0")["_source"]["text_sparse"]
        assert stored and all(k.isdigit() for k in stored)  # the node stored token ids, as the field needs
        assert_node_seismic_mapping(cl, retrieval, {}, chunking=False)
    finally:
        kept = report.get("steps", {}).get("smoke_retrieval", {}).get("resources")
        if kept:  # before the models: the kept pipelines refer to them
            smoke.cleanup(cl, kept)
        for model_id in report.get("model_ids", {}).values():
            models.delete(cl, model_id)


def test_stored_token_ids_are_compared_in_the_fields_format(package_factory):
    manifest, root = package_factory(PACKAGE)
    local = LocalPackage(manifest, root)
    vec = local.encode_documents([smoke_corpus.CORPUS[0]])[0]
    ids = smoke.as_field_vector(local, vec, "sparse_vector")
    assert all(k.isdigit() for k in ids) and sorted(ids.values()) == sorted(vec.values())
    assert {local.names[int(k)] for k in ids} == set(vec)
    assert smoke.stored_keys({"text_sparse": ids}, "text_sparse", False) == set(ids)
    assert smoke.stored_keys({"text_sparse": [{"sparse_encoding": ids}]}, "text_sparse", True) == set(ids)


def test_sparse_vector_smoke_refused_on_2x_with_the_version(node_2x, package_factory):
    import subprocess
    import sys

    _, root = package_factory(PACKAGE)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsepack.cli",
            "smoke",
            str(root),
            "--document-model",
            "none",
            "--field-type",
            "sparse_vector",
            "--url",
            node_2x,
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2, proc.stderr
    assert "sparse_vector fields with the SEISMIC method needs OpenSearch 3.3+, the target is 2.19" in proc.stderr
    from sparsepack.registry.connection import ConnectionOptions
    from sparsepack.rollout.options import ReleaseOptions
    from sparsepack.rollout.run import release

    report = release(
        str(root),
        ConnectionOptions.from_env(url=node_2x),
        ReleaseOptions(group=f"t-sv2-{uuid.uuid4().hex[:6]}", progress=False, field_type="sparse_vector"),
    )
    assert not report["passed"] and report["failed_step"] == "preflight" and "3.3+" in report["error"]
    assert "register" not in report["steps"]  # refused before anything was uploaded
