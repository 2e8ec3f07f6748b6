"""The migration of test_migrate.py on the other kinds of index it must handle, each on a real node, with the application
writing and searching meanwhile: a SEISMIC ``sparse_vector`` field and a ``semantic`` field on 3.6.0 (inference-free
models: a document model and a query model to switch), and a ``rank_features`` field on 2.19.6 (no semantic or
sparse_vector there). Nothing lost, nothing stale, the stored vectors are v2's, the pipelines and provenance name v2.
Chunked indices (a nested field, one vector per chunk) on 3.6.0: every chunk vector is verified."""

import random
import threading
import time
from typing import Dict  # noqa: UP035  (TorchScript's type annotations)

import pytest
import torch
from conftest import cluster_for, conn, drop_group, with_document_module
from test_migrate import SEMANTIC_SWAP_RACE, App, all_docs, drop, text
from torch import Tensor

from sparsepack.migrate import MigrationError, MigrationOptions, migrate, provenance
from sparsepack.migrate import verify as verify_mod
from sparsepack.registry import smoke
from sparsepack.registry.local_package import LocalPackage
from sparsepack.registry.references import model_ids_in
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release
from sparsepack.templates import render

pytestmark = pytest.mark.cluster
# v1 -> v2 per node: inference-free on 3.x (a query model too, so search_model_id and the search pipeline switch),
# bi-encoders on 2.x
PAIRS = {"3x": ("bert-if-log1p", "distil-if-relu"), "2x": ("bert-bi-relu", "distil-bi-log1p")}
QUERY = "rain over the city"
DOCS = 150


@pytest.fixture(scope="module")
def released(request, package_factory):
    """node ("3x"/"2x") -> v1 and v2 released on that node (started on first use), removed at the end."""
    envs: dict[str, dict] = {}

    def get(node: str) -> dict:
        if node not in envs:
            url = request.getfixturevalue(f"node_{node}")
            cl = cluster_for(url)
            env = {"url": url, "cluster": cl, "version": cl.client.info()["version"]["number"], "groups": []}
            for tag, name in zip(("v1", "v2"), PAIRS[node], strict=True):
                manifest, pkg = package_factory(name)
                group = f"t-migvar-{node}-{tag}"
                env["groups"].append(group)
                envs[node] = env  # cleaned up even when the second release fails
                rep = release(
                    str(pkg), conn(url), ReleaseOptions(group=group, smoke=False, progress=False, timeout=180)
                )
                assert rep["passed"], rep.get("error")
                ids = rep["model_ids"]
                env[tag] = {
                    "doc": ids["document"],
                    "query": ids.get("query"),
                    "manifest": manifest,
                    "local": LocalPackage(manifest, pkg),
                }
        return envs[node]

    yield get
    for env in envs.values():
        for group in env["groups"]:
            drop_group(env["cluster"], group)


def production(env, alias, field_type):
    """An alias over an index whose vectors v1 writes: through ingest/search pipelines (rank_features, sparse_vector)
    or by the semantic field itself; seeded with DOCS documents. Returns what the alias holds."""
    cl, version, v1 = env["cluster"], env["version"], env["v1"]
    index, ingest, search = f"{alias}-v1", f"{alias}-ingest", f"{alias}-search"
    if field_type == "semantic":
        models = {"model_id": v1["doc"], "search_model_id": v1["query"]}
        body = render("index-mapping", v1["manifest"], version, field_type="semantic", shards=2, **models)
    else:
        ingest_body = render("ingest-pipeline", v1["manifest"], version, model_id=v1["doc"])
        cl.request("PUT", f"/_ingest/pipeline/{ingest}", body=ingest_body)
        # SEISMIC fields refuse the two-phase processor
        two_phase = field_type != "sparse_vector"
        query_model = v1["query"] or v1["doc"]
        search_body = render("search-pipeline", v1["manifest"], version, model_id=query_model, two_phase=two_phase)
        cl.request("PUT", f"/_search/pipeline/{search}", body=search_body)
        body = render(
            "index-mapping",
            v1["manifest"],
            version,
            field_type=field_type,
            ingest_pipeline=ingest,
            search_pipeline=search,
            shards=2,
        )
    cl.request("PUT", f"/{index}", body={**body, "aliases": {alias: {}}})
    rng = random.Random(alias)
    expected, lines = {}, []
    for i in range(DOCS):
        expected[f"d{i}"] = {"text": text(rng), "n": i}
        lines += [{"index": {"_index": index, "_id": f"d{i}"}}, expected[f"d{i}"]]  # see App(resolve=) below
    res = cl.client.bulk(body=lines, params={"refresh": "true"})
    assert not res["errors"], [i for i in res["items"] if i["index"].get("error")][:3]
    return expected


def search_body(field_type):
    if field_type == "semantic":  # the field names its own (search) model
        return {"size": 5, "query": {"neural": {"text": {"query_text": QUERY}}}}
    return {"size": 5, "query": {"neural_sparse": {"text_sparse": {"query_text": QUERY}}}}  # model from the pipeline


def stored_vector(source, field_type):
    """The document vector as the index stores it in _source."""
    if field_type == "semantic":  # the hidden object the semantic field writes beside itself
        return source["text_semantic_info"]["embedding"]
    return source["text_sparse"]


@pytest.mark.parametrize(
    "node,field_type",
    [("3x", "sparse_vector"), ("3x", "semantic"), ("2x", "rank_features")],
    ids=["3x-sparse_vector", "3x-semantic", "2x-rank_features"],
)
def test_migrate_variant_under_writes_and_searches(released, node, field_type):
    env = released(node)
    cl, v2 = env["cluster"], env["v2"]
    alias = f"t-migvar-{field_type.replace('_', '-')}"
    drop(env, alias)
    try:
        expected = production(env, alias, field_type)
        # neural-search 3.6.0 picks the token-id format of a sparse_vector field by the index name the request gives:
        # through an alias, the sparse_encoding processor writes token strings the field refuses ("[sparse_vector]
        # fields should be valid integer") and neural_sparse sends token strings ("Query tokens should be valid
        # integer"). So the application names the index behind the alias, read before each request.
        resolve = field_type == "sparse_vector"
        with App(
            env["url"], alias, expected, max_ops=60, search_body=search_body(field_type), pause=0.1, resolve=resolve
        ) as app:
            time.sleep(1)
            ops_at_start = app.ops
            report = migrate(
                cl, alias, v2["doc"], v2["query"], options=MigrationOptions(slices=2, requests_per_second=150)
            )
            ops_at_swap = app.ops
        assert report.passed and report.swapped, report.error
        new = report.new_index
        assert cl.client.indices.get_alias(name=alias).keys() == {new}
        assert app.search_errors == [] and app.searches > 0
        assert field_type == "semantic" or app.swap_races == 0, "only a semantic field's query can straddle the swap"
        assert ops_at_swap > ops_at_start, "the writer must have written during the migration"
        assert all_docs(cl.client, alias) == expected  # ids and _source: nothing lost, nothing stale
        assert report.verification["vectors"]["passed"] and report.verification["queries"]["passed"]
        assert report.verification["counts"]["passed"]

        # independently of the report: the documents (the writer's too) hold v2's vectors, as the field stores them
        sample = cl.client.search(index=alias, body={"size": 30, "sort": [{"n": "asc"}]})["hits"]["hits"]
        got = [stored_vector(h["_source"], field_type) for h in sample]
        want = smoke.predict(cl, v2["doc"], [h["_source"]["text"] for h in sample])
        if field_type == "sparse_vector":  # the field holds token ids
            want = [smoke.as_field_vector(v2["local"], w, field_type) for w in want]
        assert smoke.compare_maps(got, want, smoke.PREDICT_TOLERANCE)["passed"]
        assert any(h["_id"].startswith("w") for h in sample), "the sample must hold documents the writer wrote"

        meta = provenance.read_meta(cl, new)
        assert meta["document_model"]["model_id"] == v2["doc"] and meta["migrated_from"] == f"{alias}-v1"
        assert meta["query_model"]["model_id"] == (v2["query"] or v2["doc"])
        assert provenance.index_provenance(cl)[new]["document_model_id"] == v2["doc"]
        mapping = cl.client.indices.get_mapping(index=new)[new]["mappings"]["properties"]
        if field_type == "semantic":
            assert mapping["text"]["model_id"] == v2["doc"] and mapping["text"]["search_model_id"] == v2["query"]
        else:
            assert mapping["text_sparse"]["type"] == field_type
            settings = cl.client.indices.get_settings(index=new, params={"flat_settings": "true"})[new]["settings"]
            ingest = cl.request("GET", f"/_ingest/pipeline/{settings['index.default_pipeline']}")
            search = cl.request("GET", f"/_search/pipeline/{settings['index.search.default_pipeline']}")
            assert model_ids_in(ingest) == {v2["doc"]} and model_ids_in(search) == {v2["query"] or v2["doc"]}
    finally:
        drop(env, alias)


class SlowEncoder(torch.nn.Module):
    """A document model that takes a while per call (eight 512x768x768 matrix products per input token, discarded) and
    weighs each input token 1.0: slow enough, for a long enough text, that an alias swap lands while the node encodes
    a query with it. The test models cut texts at 64 tokens."""

    def __init__(self, vocab_size: int):
        super().__init__()
        self.vocab_size = vocab_size
        self.w = torch.nn.Parameter(torch.randn(768, 768, generator=torch.Generator().manual_seed(0)) * 0.03)

    def forward(self, inputs: Dict[str, Tensor]) -> Dict[str, Tensor]:  # noqa: UP006
        ids = inputs["input_ids"]
        x = torch.ones(512, 768)
        for _ in range(ids.shape[1] * 8):
            x = torch.tanh(x @ self.w)
        out = torch.zeros(ids.shape[0], self.vocab_size).scatter_(1, ids, 1.0)
        return {"output": out + (x.mean() > 2.0).float()}  # tanh keeps x.mean() <= 1: adds 0, but x is computed


def predicting(cl) -> bool:
    """Whether the node runs an ML Commons predict (a query being encoded) now."""
    tasks = cl.request("GET", "/_tasks", params={"actions": "cluster:admin/opensearch/ml/predict*"})
    return any(node.get("tasks") for node in tasks.get("nodes", {}).values())


def test_a_semantic_query_that_straddles_an_alias_swap_fails_once_then_succeeds(node_3x, package_factory, tmp_path):
    """The server race docs/release.md warns of, made certain: a neural query on a semantic field is encoded with the
    search model of the index the alias names when it arrives (a slow one here), the alias moves to an index whose
    field has another search model meanwhile, and the query fails with SEMANTIC_SWAP_RACE; sent again, it succeeds."""
    manifest, cached = package_factory("bert-if-log1p")
    pkg = tmp_path / "slow"
    with_document_module(cached, manifest, pkg, lambda tok: SlowEncoder(len(tok["model"]["vocab"])))
    cl, group, alias = cluster_for(node_3x), "t-semswap", "t-semswap"
    version = cl.client.info()["version"]["number"]
    indices = {"slow": f"{alias}-slow", "fast": f"{alias}-fast"}
    try:
        rep = release(str(pkg), conn(node_3x), ReleaseOptions(group=group, smoke=False, progress=False, timeout=300))
        assert rep["passed"], rep.get("error")
        slow, tokenizer = rep["model_ids"]["document"], rep["model_ids"]["query"]
        for name, search_model in ((indices["slow"], slow), (indices["fast"], tokenizer)):
            body = render(
                "index-mapping", manifest, version, field_type="semantic", model_id=slow, search_model_id=search_model
            )
            cl.request("PUT", f"/{name}", body=body)
        cl.request("POST", "/_aliases", body={"actions": [{"add": {"index": indices["slow"], "alias": alias}}]})

        def timed(words: int, word: str) -> tuple[dict, float]:
            query = {"size": 1, "query": {"neural": {"text": {"query_text": " ".join([word] * words)}}}}
            t0 = time.monotonic()
            cl.request("POST", f"/{indices['slow']}/_search", body=query)
            return query, time.monotonic() - t0

        # The encoding's time grows with the text; each length is timed twice, as TorchScript's first runs at a new
        # shape are slower (profiling) than the ones after.
        for words in (4, 16, 62):
            timed(words, "rain")
            _, encode_s = timed(words, "rain")
            if encode_s > 2.0:
                break
        assert encode_s > 2.0, (
            f"the slow encoder answered {words} words in {encode_s:.2f}s: too fast to straddle a swap"
        )
        query = {"size": 1, "query": {"neural": {"text": {"query_text": " ".join(["snow"] * words)}}}}  # a new text

        outcome: dict = {}

        def search():
            try:
                outcome["answer"] = cl.request("POST", f"/{alias}/_search", body=query)
            except Exception as exc:  # noqa: BLE001 - what the query met is the result
                outcome["error"] = str(exc)
            outcome["done"] = time.monotonic()

        thread = threading.Thread(target=search)
        thread.start()
        deadline = time.monotonic() + encode_s * 10 + 30
        while not predicting(cl) and "done" not in outcome and time.monotonic() < deadline:
            time.sleep(0.02)  # swap once the query is being encoded: it has arrived and its index is resolved
        swap = {
            "actions": [
                {"remove": {"index": indices["slow"], "alias": alias}},
                {"add": {"index": indices["fast"], "alias": alias}},
            ]
        }
        cl.request("POST", "/_aliases", body=swap)
        swapped = time.monotonic()
        thread.join(encode_s * 10 + 60)
        assert "done" in outcome and swapped < outcome["done"], f"the query ended before the swap: {outcome}"
        assert SEMANTIC_SWAP_RACE in outcome.get("error", ""), outcome
        assert "hits" in cl.request("POST", f"/{alias}/_search", body=query)  # sent again: the new index answers
    finally:
        for name in indices.values():
            cl.request("DELETE", f"/{name}", ok_404=True)
        drop_group(cl, group)


CHUNK_TOKENS = 8  # small chunks: most documents hold several


def chunked_production(env, alias, field_type, docs=30):
    """An alias over a chunked index (text_chunking, then sparse_encoding of each chunk into a nested field) that v1
    fills; seeded through the index name (a sparse_vector field refuses writes through an alias, see above)."""
    cl, version, v1 = env["cluster"], env["version"], env["v1"]
    index, ingest, search = f"{alias}-v1", f"{alias}-ingest", f"{alias}-search"
    ingest_body = render(
        "ingest-pipeline", v1["manifest"], version, model_id=v1["doc"], chunking=True, chunk_token_limit=CHUNK_TOKENS
    )
    cl.request("PUT", f"/_ingest/pipeline/{ingest}", body=ingest_body)
    search_pipeline = render("search-pipeline", v1["manifest"], version, model_id=v1["query"], two_phase=False)
    cl.request("PUT", f"/_search/pipeline/{search}", body=search_pipeline)
    body = render(
        "index-mapping",
        v1["manifest"],
        version,
        field_type=field_type,
        chunking=True,
        ingest_pipeline=ingest,
        search_pipeline=search,
    )
    cl.request("PUT", f"/{index}", body={**body, "aliases": {alias: {}}})
    rng = random.Random(alias)
    lines = []
    for i in range(docs):
        words = " ".join(text(rng) for _ in range(rng.randint(1, 4)))
        lines += [{"index": {"_index": index, "_id": f"d{i}"}}, {"text": words, "n": i}]
    res = cl.client.bulk(body=lines, params={"refresh": "true"})
    assert not res["errors"], [i for i in res["items"] if i["index"].get("error")][:3]


def corrupt_one_chunk(cl, index):
    """Scale the weights of the last chunk of the document with the most chunks, written past the pipeline: what a
    faulty copy would leave. Returns the document's id."""
    hits = cl.client.search(index=index, body={"size": 100}, params={"search_pipeline": "_none"})["hits"]["hits"]
    hit = max(hits, key=lambda h: len(h["_source"]["text_sparse"]))
    source = hit["_source"]
    assert len(source["text_sparse"]) >= 2
    last = source["text_sparse"][-1]["sparse_encoding"]
    source["text_sparse"][-1]["sparse_encoding"] = {k: v * 1.5 for k, v in last.items()}
    cl.client.index(index=index, id=hit["_id"], body=source, params={"pipeline": "_none", "refresh": "true"})
    return hit["_id"]


@pytest.mark.parametrize("field_type", ["rank_features", "sparse_vector"])
def test_migrate_chunked_index_verifies_every_chunk_vector(released, monkeypatch, field_type):
    """A chunked index migrates on 3.6.0, and verification compares every sampled document's every chunk vector with
    the new model's _predict of that chunk's text (token ids for sparse_vector): one corrupted chunk vector (not the
    first) fails the migration and leaves the alias on the old index; then a clean run swaps."""
    env = released("3x")
    cl, v2 = env["cluster"], env["v2"]
    alias = f"t-migchunk-{field_type.replace('_', '-')}"
    drop(env, alias)
    try:
        chunked_production(env, alias, field_type)
        real, corrupted = verify_mod.check_vectors, []

        def check_after_corrupting(cluster, index, *args, **kwargs):
            corrupted.append(corrupt_one_chunk(cluster, index))
            return real(cluster, index, *args, **kwargs)

        monkeypatch.setattr(verify_mod, "check_vectors", check_after_corrupting)
        bad_index = f"{alias}-bad"
        with pytest.raises(MigrationError, match=r"verification of .* failed \(vectors.*max \|d\|") as info:
            migrate(cl, alias, v2["doc"], v2["query"], options=MigrationOptions(new_index=bad_index, cleanup=True))
        monkeypatch.setattr(verify_mod, "check_vectors", real)
        assert corrupted and info.value.step == "verify" and info.value.alias_on == f"{alias}-v1"
        vectors = info.value.details["vectors"]
        assert vectors["identical_token_sets"] == vectors["texts"] and vectors["max_abs_diff"] > vectors["tolerance"]
        assert cl.client.indices.get_alias(name=alias).keys() == {f"{alias}-v1"}
        assert not cl.client.indices.exists(index=bad_index)

        # these tiny models share few tokens between a query and a document: about half the sampled queries find
        # nothing, so 20 (not 5) make sure some reach the nested query's scores
        report = migrate(cl, alias, v2["doc"], v2["query"], options=MigrationOptions(query_samples=20))
        assert report.passed and report.swapped, report.error
        new = report.new_index
        assert cl.client.indices.get_alias(name=alias).keys() == {new}
        docs = cl.client.search(index=new, body={"size": 100}, params={"search_pipeline": "_none"})["hits"]["hits"]
        total_chunks = sum(len(h["_source"]["text_chunks"]) for h in docs)
        checked, queries = report.verification["vectors"], report.verification["queries"]
        assert checked["passed"] and checked["documents"] == len(docs) == 30, checked
        assert checked["chunks"] == checked["texts"] == total_chunks > len(docs), checked  # every chunk of every doc
        assert queries["passed"] and any(q["top_ids"] for q in queries["queries"]), queries  # the nested query found

        # independently of the report: each chunk holds v2's vector of that chunk's text, as the field stores it
        got = [c["sparse_encoding"] for h in docs for c in h["_source"]["text_sparse"]]
        chunk_texts = [t for h in docs for t in h["_source"]["text_chunks"]]
        want = [smoke.as_field_vector(v2["local"], w, field_type) for w in smoke.predict(cl, v2["doc"], chunk_texts)]
        assert smoke.compare_maps(got, want, smoke.PREDICT_TOLERANCE)["passed"]
    finally:
        drop(env, alias)
