"""Before the swap: the new index holds the new model's vectors (a sample compared with its ``_predict``) and answers
queries as the new model's predictions say it should (top 10 computed locally from the stored vectors). A chunked
field (``text_chunking`` then ``sparse_encoding`` into a nested field) is checked chunk by chunk: each stored chunk
vector against ``_predict`` of the chunk text stored beside it, and queries go through a nested query (best chunk)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

from ..registry.connection import Cluster
from ..registry.predict import predict
from ..registry.references import model_ids_in
from ..registry.switch import field_map_leaves
from .provenance import semantic_fields

PREDICT_BATCH = 16
EXACT_QUERY_LIMIT = 20000  # up to this many documents, the local top 10 is computed over all of them
CHUNK_KEY = "sparse_encoding"  # the key of each chunk's vector in the nested objects neural-search writes


def _smoke():
    # smoke loads torch at import; verification is the only part of a migration that needs it
    from ..registry import smoke

    return smoke


def vector_fields(ingest_body: dict | None, mappings: dict) -> list[tuple[str, str, dict]]:
    """(text path, vector path, options) for each sparse_encoding output and each semantic field. Options:
    ``prune_type`` (the processor's), ``token_ids`` (a sparse_vector field: the processor stores token ids),
    ``chunked`` (a nested field: the text path holds the list of chunk texts, the vector path one object per chunk
    with its vector under ``sparse_encoding``)."""
    out = []
    for processor in _processors(ingest_body or {}, "sparse_encoding"):
        for src, dst in field_map_leaves(processor.get("field_map") or {}):
            chunked = mapped_type(mappings, dst) == "nested"
            token_ids = mapped_type(mappings, f"{dst}.{CHUNK_KEY}" if chunked else dst) == "sparse_vector"
            options = {"prune_type": processor.get("prune_type"), "token_ids": token_ids, "chunked": chunked}
            out.append((src, dst, options))
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


def _pairs(source: dict, src: str, dst: str, chunked: bool) -> list[tuple[str, dict]] | None:
    """(text, stored vector) pairs of one document's field: one for a flat field, one per chunk for a chunked one
    (the i-th chunk text with the i-th nested vector). None when a chunked field's vectors cannot be paired with its
    chunk texts (counts differ, or texts missing): nothing to compare them with."""
    text, vector = _get(source, src), _get(source, dst)
    if not chunked:
        return [(text, vector)] if isinstance(text, str) and isinstance(vector, dict) else []
    if vector is None or vector == []:
        return []
    vectors = [vector] if isinstance(vector, dict) else vector
    texts = [text] if isinstance(text, str) else text
    if not (isinstance(texts, list) and isinstance(vectors, list) and len(texts) == len(vectors)):
        return None
    pairs = []
    for chunk_text, chunk in zip(texts, vectors, strict=True):
        chunk_vector = chunk.get(CHUNK_KEY) if isinstance(chunk, dict) else None
        if not (isinstance(chunk_text, str) and isinstance(chunk_vector, dict)):
            return None
        pairs.append((chunk_text, chunk_vector))
    return pairs


def check_vectors(cluster: Cluster, index: str, model_id: str, fields: list[tuple[str, str, dict]], size: int) -> dict:
    """Stored vectors of ``size`` random documents (all if fewer) against ``_predict`` of their text; for a chunked
    field every chunk's vector against ``_predict`` of that chunk's text."""
    smoke = _smoke()
    hits = sample_docs(cluster, index, size)
    stored, texts, ids, pruned, unpaired, chunks = [], [], [], False, [], 0
    for hit in hits:
        for src, dst, options in fields:
            pairs = _pairs(hit["_source"], src, dst, bool(options.get("chunked")))
            if pairs is None:
                unpaired.append(f"{hit['_id']} ({dst})")
                continue
            chunks += len(pairs) if options.get("chunked") else 0
            for text, vector in pairs:
                stored.append(vector)
                texts.append(text)
                ids.append(bool(options.get("token_ids")))
                pruned = pruned or options.get("prune_type") not in (None, "none")
    predicted: list[dict] = [{}] * len(texts)
    for token_ids in set(ids):  # each text predicted as its field stores it: token strings, or ids (sparse_vector)
        which = [i for i, t in enumerate(ids) if t == token_ids]
        for start in range(0, len(which), PREDICT_BATCH):
            batch = which[start : start + PREDICT_BATCH]
            answers = predict(cluster, model_id, [texts[i] for i in batch], token_ids=token_ids)
            for i, answer in zip(batch, answers, strict=True):
                predicted[i] = answer
    if pruned:  # the processor dropped low weights: what it kept must match
        predicted = [{k: p[k] for k in s if k in p} for s, p in zip(stored, predicted, strict=False)]
    result = smoke.compare_maps(stored, predicted, smoke.PREDICT_TOLERANCE)
    result["documents"] = len(hits)
    result["pruned_by_pipeline"] = pruned
    if any(o.get("chunked") for _, _, o in fields):
        result["chunks"] = chunks  # chunk vectors compared (counted in texts too)
    result["passed"] = result["passed"] and len(texts) > 0 and not unpaired
    if unpaired:
        result["unpaired_documents"] = unpaired[:10]
        result["reason"] = (
            f"{len(unpaired)} sampled document(s) hold chunk vectors that do not pair one to one with their chunk "
            f"texts, e.g. {unpaired[0]}"
        )
    elif not texts:
        result["reason"] = "no sampled document has both a text and a stored vector"
    return result


def _all_vectors(cluster: Cluster, index: str, vector_path: str, chunked: bool) -> dict[str, list[dict]]:
    """id -> the document's stored vectors: one, or one per chunk."""
    from .changes import scan

    out = {}
    for h in scan(cluster, index, {"match_all": {}}, source=[vector_path]):
        value = _get(h.get("_source") or {}, vector_path)
        if chunked:
            chunks = [value] if isinstance(value, dict) else value or []
            out[h["_id"]] = [c.get(CHUNK_KEY) or {} for c in chunks if isinstance(c, dict)]
        else:
            out[h["_id"]] = [value or {}]
    return out


def _score(smoke, q_vec: dict, vectors: list[dict]) -> float:
    """The document's local score: its best chunk (score_mode max), or its one vector."""
    return max((smoke._dot(q_vec, v) for v in vectors), default=0.0)


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
    chunked = bool(options.get("chunked"))
    vectors = _all_vectors(cluster, index, dst, chunked)
    texts = [
        t
        for h in sample_docs(cluster, index, samples * 3, seed=11)
        if isinstance(t := _joined(_get(h["_source"], src)), str) and t.split()
    ]
    rng = random.Random(3)
    queries = [" ".join(rng.sample(t.split(), min(3, len(t.split())))) for t in texts[:samples]]
    checks = []
    for q_text in queries:
        q_vec = predict(cluster, query_model, [q_text], token_ids=bool(options.get("token_ids")))[0]
        q_vec = {k: v for k, v in q_vec.items() if v > 0}
        local = sorted(((_score(smoke, q_vec, vecs), doc_id) for doc_id, vecs in vectors.items()), reverse=True)
        local = [(s, d) for s, d in local if s > 0][:10]
        query: dict = {"neural_sparse": {_leaf(dst, chunked): {"query_text": q_text, "model_id": query_model}}}
        if chunked:
            query = {"nested": {"path": dst, "score_mode": "max", "query": query}}
        body = {"size": 10, "query": query}
        hits = cluster.call(
            f"POST /{index}/_search", cluster.client.search, index=index, body=body, params={"search_pipeline": "_none"}
        )["hits"]["hits"]
        got = [(h["_score"], h["_id"]) for h in hits]
        rtol = smoke.SCORE_RTOL
        same_scores = len(got) == len(local) and all(
            abs(g[0] - w[0]) <= rtol * max(w[0], 1e-9) for g, w in zip(got, local, strict=False)
        )
        local_of = {d: _score(smoke, q_vec, vectors.get(d, [])) for _, d in got}
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


def _leaf(path: str, chunked: bool) -> str:
    return f"{path}.{CHUNK_KEY}" if chunked else path


def _joined(text: Any) -> str | None:
    """A text, or a chunked document's chunk texts joined (query words are drawn from them)."""
    if isinstance(text, list) and all(isinstance(t, str) for t in text):
        return " ".join(text)
    return text if isinstance(text, str) else None


def pipeline_of(bodies: dict[str, dict], settings: dict) -> dict | None:
    """The ingest pipeline body (default first, then final) that writes vectors with a model."""
    for key in ("index.default_pipeline", "index.final_pipeline"):
        body = bodies.get(settings.get(key) or "")
        if body and model_ids_in(body):
            return body
    return None
