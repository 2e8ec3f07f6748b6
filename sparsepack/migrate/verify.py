"""Before the swap: the new index holds the new model's vectors (a sample compared with its ``_predict``) and answers
queries as the new model's predictions say it should (top 10 computed locally from the stored vectors)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from ..registry.connection import Cluster
from ..registry.references import model_ids_in
from ..registry.switch import field_map_leaves
from .provenance import semantic_fields

PREDICT_BATCH = 16
EXACT_QUERY_LIMIT = 20000  # up to this many documents, the local top 10 is computed over all of them


def _smoke():
    # smoke loads torch at import; verification is the only part of a migration that needs it
    from ..registry import smoke

    return smoke


def vector_fields(ingest_body: dict | None, mappings: dict) -> list[tuple[str, str, dict]]:
    """(text path, vector path, options) for each sparse_encoding output and each semantic field. Options:
    ``prune_type`` (the processor's), ``token_ids`` (a sparse_vector field: the processor stores token ids)."""
    out = []
    for processor in _processors(ingest_body or {}, "sparse_encoding"):
        for src, dst in field_map_leaves(processor.get("field_map") or {}):
            token_ids = mapped_type(mappings, dst) == "sparse_vector"
            out.append((src, dst, {"prune_type": processor.get("prune_type"), "token_ids": token_ids}))
    for path, _ in semantic_fields(mappings.get("properties")):
        out.append((path, f"{path}_semantic_info.embedding", {}))
    return out


def mapped_type(mappings: dict, path: str) -> str | None:
    """The mapped type of the field at dotted ``path`` (None when unmapped)."""
    spec: dict = {"properties": mappings.get("properties") or {}}
    for part in path.split("."):
        spec = (spec.get("properties") or {}).get(part) or {}
    return spec.get("type")


def _processors(body: Any, kind: str) -> Iterator[dict]:
    if isinstance(body, list):
        for v in body:
            yield from _processors(v, kind)
    elif isinstance(body, dict):
        for key, value in body.items():
            if key == kind and isinstance(value, dict):
                yield value
            yield from _processors(value, kind)


def _get(doc: Any, path: str):
    if isinstance(doc, dict) and path in doc:
        return doc[path]
    for part in path.split("."):
        doc = doc.get(part) if isinstance(doc, dict) else None
    return doc


def sample_docs(cluster: Cluster, index: str, size: int, seed: int = 7) -> list[dict]:
    body = {
        "size": size,
        "query": {"function_score": {"query": {"match_all": {}}, "random_score": {"seed": seed, "field": "_seq_no"}}},
    }
    return cluster.call(
        f"POST /{index}/_search", cluster.client.search, index=index, body=body, params={"search_pipeline": "_none"}
    )["hits"]["hits"]


def check_vectors(cluster: Cluster, index: str, model_id: str, fields: list[tuple[str, str, dict]], size: int) -> dict:
    """Stored vectors of ``size`` random documents (all if fewer) against ``_predict`` of their text."""
    smoke = _smoke()
    hits = sample_docs(cluster, index, size)
    stored, texts, ids, pruned = [], [], [], False
    for hit in hits:
        for src, dst, options in fields:
            text, vector = _get(hit["_source"], src), _get(hit["_source"], dst)
            if isinstance(text, str) and isinstance(vector, dict):
                stored.append(vector)
                texts.append(text)
                ids.append(bool(options.get("token_ids")))
                pruned = pruned or options.get("prune_type") not in (None, "none")
    predicted: list[dict] = [{}] * len(texts)
    for token_ids in set(ids):  # each text predicted as its field stores it: token strings, or ids (sparse_vector)
        which = [i for i, t in enumerate(ids) if t == token_ids]
        for start in range(0, len(which), PREDICT_BATCH):
            batch = which[start : start + PREDICT_BATCH]
            answers = smoke.predict(cluster, model_id, [texts[i] for i in batch], token_ids=token_ids)
            for i, answer in zip(batch, answers, strict=True):
                predicted[i] = answer
    if pruned:  # the processor dropped low weights: what it kept must match
        predicted = [{k: p[k] for k in s if k in p} for s, p in zip(stored, predicted, strict=False)]
    result = smoke.compare_maps(stored, predicted, smoke.PREDICT_TOLERANCE)
    result["documents"] = len(hits)
    result["pruned_by_pipeline"] = pruned
    result["passed"] = result["passed"] and len(texts) > 0
    if not texts:
        result["reason"] = "no sampled document has both a text and a stored vector"
    return result


def _all_vectors(cluster: Cluster, index: str, vector_path: str) -> dict[str, dict]:
    from .changes import scan

    return {
        h["_id"]: _get(h.get("_source") or {}, vector_path) or {}
        for h in scan(cluster, index, {"match_all": {}}, source=[vector_path])
    }


def check_queries(
    cluster: Cluster, index: str, query_model: str, field: tuple[str, str, dict], doc_count: int, samples: int
) -> dict:
    """Queries made of sampled documents' words, through the new index with the new query model: the server's top 10
    scores equal the local dot products (Lucene-quantised) of the query's predicted weights with every stored vector."""
    smoke = _smoke()
    src, dst, options = field
    if doc_count > EXACT_QUERY_LIMIT:
        return {
            "skipped": f"{doc_count} documents: the local top 10 is computed up to {EXACT_QUERY_LIMIT}",
            "passed": True,
        }
    vectors = _all_vectors(cluster, index, dst)
    texts = [
        t
        for h in sample_docs(cluster, index, samples * 3, seed=11)
        if isinstance(t := _get(h["_source"], src), str) and t.split()
    ]
    rng = random.Random(3)
    queries = [" ".join(rng.sample(t.split(), min(3, len(t.split())))) for t in texts[:samples]]
    checks = []
    for q_text in queries:
        q_vec = smoke.predict(cluster, query_model, [q_text], token_ids=bool(options.get("token_ids")))[0]
        q_vec = {k: v for k, v in q_vec.items() if v > 0}
        local = sorted(((smoke._dot(q_vec, vec), doc_id) for doc_id, vec in vectors.items()), reverse=True)
        local = [(s, d) for s, d in local if s > 0][:10]
        body = {"size": 10, "query": {"neural_sparse": {dst: {"query_text": q_text, "model_id": query_model}}}}
        hits = cluster.call(
            f"POST /{index}/_search", cluster.client.search, index=index, body=body, params={"search_pipeline": "_none"}
        )["hits"]["hits"]
        got = [(h["_score"], h["_id"]) for h in hits]
        rtol = smoke.SCORE_RTOL
        same_scores = len(got) == len(local) and all(
            abs(g[0] - w[0]) <= rtol * max(w[0], 1e-9) for g, w in zip(got, local, strict=False)
        )
        local_of = {d: smoke._dot(q_vec, vectors.get(d, {})) for _, d in got}
        hits_true = all(abs(s - local_of[d]) <= rtol * max(local_of[d], 1e-9) for s, d in got)
        checks.append(
            {
                "query": q_text,
                "top_ids": [d for _, d in got],
                "local_top_ids": [d for _, d in local],
                "passed": same_scores and hits_true,
            }
        )
    return {
        "queries": checks,
        "documents_scored": len(vectors),
        "passed": bool(checks) and all(c["passed"] for c in checks),
    }


def pipeline_of(bodies: dict[str, dict], settings: dict) -> dict | None:
    """The ingest pipeline body (default first, then final) that writes vectors with a model."""
    for key in ("index.default_pipeline", "index.final_pipeline"):
        body = bodies.get(settings.get(key) or "")
        if body and model_ids_in(body):
            return body
    return None
