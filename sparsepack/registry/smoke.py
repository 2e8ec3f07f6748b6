"""Prove a deployed model answers like the packaged one, and that retrieval through the pipelines works."""

from __future__ import annotations

import json
import struct
import time
import uuid
from functools import partial
from typing import Any

from ..contract.limits import MAX_QUERY_WEIGHT, weight_problem
from ..errors import ClusterError, SparsepackError
from ..packaging.batteries import DOCUMENT_BATTERY, QUERY_BATTERY
from ..packaging.query_weights import culprits, reference_token_map, undo_rule
from ..templates import render
from . import deployment
from .connection import Cluster
from .local_package import LocalPackage
from .predict import predict, when_routed
from .preflight import field_type_problem
from .smoke_corpus import CORPUS, QUERIES, expansion_queries

PREDICT_TOLERANCE = 1e-4
SCORE_RTOL = 1e-3


def compare_maps(got: list[dict], want: list[dict], tolerance: float) -> dict:
    same = [set(g) == set(w) for g, w in zip(got, want, strict=False)]
    diffs = [abs(g[k] - w[k]) for g, w in zip(got, want, strict=False) for k in set(g) & set(w)]
    max_diff = max(diffs, default=0.0)
    return {
        "texts": len(got),
        "identical_token_sets": sum(same),
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "passed": all(same) and len(got) == len(want) and max_diff <= tolerance,
    }


def check_predict(
    cluster: Cluster,
    local: LocalPackage,
    doc_model: str,
    query_model: str | None,
    encode_query=None,
    timeout: float = deployment.AUTO_REDEPLOY_GRACE_SECONDS,
) -> dict:
    t0 = time.perf_counter()
    # A model stored as DEPLOYED can be loaded nowhere (a restart auto-redeploy is loading again): predict would
    # answer 400 "not ready", so the smoke test waits for a node to hold each model, or names where it is missing.
    loaded = {
        role: deployment.require_loaded(cluster, mid, timeout, f"smoke test of the {role} model").summary()
        for role, mid in (("document", doc_model), ("query", query_model))
        if mid
    }
    result: dict[str, Any] = {
        "loaded": loaded,
        "document": compare_maps(
            predict(cluster, doc_model, DOCUMENT_BATTERY), local.encode_documents(DOCUMENT_BATTERY), PREDICT_TOLERANCE
        ),
    }
    query_id = query_model or doc_model
    probe = local.low_weight_query()[0] if local.idf else ""
    queries = QUERY_BATTERY + ([probe] if probe else [])
    server_q = predict(cluster, query_id, queries)
    result["query"] = compare_maps(server_q, local.encode_queries(queries), PREDICT_TOLERANCE)
    # what neural-search would refuse when building the query (HTTP 400), named before any search is sent
    bad = {t: w for m in server_q for t, w in m.items() if weight_problem(w)}
    result["query_weights_in_range"] = {
        "accepted_range": f"(0, {MAX_QUERY_WEIGHT:g}]",
        "passed": not bad,
        "out_of_range": dict(sorted(bad.items())[:10]),
    }
    if encode_query is not None:  # the source model is at hand: compare with it directly too
        vectors = encode_query(queries)
        want = [reference_token_map(v, local.names) for v in vectors]
        # encode_query knows nothing of the query-weight rule (floored zero-IDF tokens, scale): undo it on the server side
        rule = local.manifest.get("query_weights")
        result["query_vs_encode_query"] = compare_maps([undo_rule(m, rule) for m in server_q], want, PREDICT_TOLERANCE)
    result["seconds"] = round(time.perf_counter() - t0, 3)
    result["passed"] = all(v["passed"] for k, v in result.items() if isinstance(v, dict) and k != "loaded")
    return result


def lucene_feature(value: float) -> float:
    """rank_features keeps 9 significant bits: Lucene's FeatureField stores float bits >> 15. Scores are query weight x
    this value, so local scores quantised the same way match the server to float rounding."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    return struct.unpack("<f", struct.pack("<I", (bits >> 15) << 15))[0]


def _dot(q: dict, d: dict, quantize: bool = True) -> float:
    return sum(w * (lucene_feature(d[t]) if quantize else d[t]) for t, w in q.items() if t in d)


def two_phase_top(q: dict, docs: list[dict], prune_ratio: float = 0.4) -> int | None:
    """neural_sparse_two_phase_processor (max_ratio): phase one retrieves with the tokens of weight >= ratio x max,
    phase two rescores those candidates with the whole query."""
    if not q:
        return None
    cut = max(q.values()) * prune_ratio
    high = {t: w for t, w in q.items() if w >= cut}
    candidates = [i for i, d in enumerate(docs) if _dot(high, d) > 0]
    return max(candidates, key=lambda i: _dot(q, docs[i]), default=None)


# Where the node stores a semantic field's embedding (rank_features for a sparse model), beside the field itself.
SEMANTIC_EMBEDDING = "text_semantic_info.embedding"


def check_field_type(field_type: str, version: str, manifest: dict | None = None) -> None:
    """Refuse a smoke field the cluster's version (or the package's vocabulary) cannot create."""
    problem = field_type_problem(field_type, version, manifest)
    if problem:
        raise SparsepackError(problem, parameter="field_type")


def stored_keys(source: dict, field: str, chunked: bool) -> set[str]:
    """The token keys the pipeline stored for one document (its first chunk when chunked)."""
    for part in field.split(".")[:-1]:
        source = source.get(part) or {}
    value = source.get(field.split(".")[-1]) or ({} if not chunked else [{}])
    return set(value[0].get("sparse_encoding", {}) if chunked else value)


def as_field_vector(local: LocalPackage, vector: dict, field_type: str) -> dict[str, float]:
    """A local vector keyed as the field stores it: token strings in rank_features, token ids in sparse_vector."""
    if field_type != "sparse_vector":  # rank_features, and a semantic field's embedding
        return dict(vector)
    ids = {
        name: str(tid) for tid, name in local.names.items()
    }  # a name two ids share maps to the later, as on the server
    return {ids[t]: w for t, w in vector.items()}


def _drop_model_id(body: dict) -> dict:
    """The rendered query without its model_id, so the search pipeline's neural_query_enricher must supply it."""
    text = json.dumps(body)
    tree = json.loads(text)
    node = tree["query"]
    while "nested" in node:
        node = node["nested"]["query"]
    for inner in node["neural_sparse"].values():
        inner.pop("model_id", None)
    return tree


def check_retrieval(
    cluster: Cluster,
    local: LocalPackage,
    version: str,
    doc_model: str,
    query_model: str | None,
    keep: bool = False,
    field_type: str = "rank_features",
    chunking: bool = False,
    mapping_values: dict | None = None,
) -> dict:
    """Temporary index + ingest pipeline + two-phase search pipeline; each query's locally best document must come
    first, with the server's score equal to the local dot product. ``field_type=sparse_vector`` uses a SEISMIC field
    (3.3+) whose corpus stays under approximate_threshold, so its search is exact too (no two-phase: SEISMIC fields
    refuse it); ``chunking`` stores nested chunks and queries them with the nested form. ``field_type=semantic`` (3.1+)
    lets the node encode a semantic field itself: no pipelines, a ``neural`` query on the field."""
    check_field_type(field_type, version)
    suffix = uuid.uuid4().hex[:8]
    index, ingest, search = (
        f"sparsepack-smoke-{suffix}",
        f"sparsepack-smoke-ingest-{suffix}",
        f"sparsepack-smoke-search-{suffix}",
    )
    query_id = query_model or doc_model
    t0 = time.perf_counter()
    resources = {"index": index, "ingest_pipeline": ingest, "search_pipeline": search}
    try:
        two_phase, semantic = field_type == "rank_features", field_type == "semantic"
        for_field = (
            {"model_id": doc_model, "search_model_id": query_model}
            if semantic
            else {"ingest_pipeline": ingest, "chunking": chunking}
        )
        if not semantic:
            _put_pipelines(cluster, local, version, ingest, search, doc_model, query_id, chunking, two_phase)
        # The field's models are the ones under test, whatever model ids the caller's mapping values hold.
        mapping = render(
            "index-mapping", local.manifest, version, field_type=field_type, **{**(mapping_values or {}), **for_field}
        )
        cluster.call(f"PUT /{index}", cluster.client.indices.create, index=index, body=mapping)
        for i, text in enumerate(CORPUS):
            when_routed(
                cluster,
                doc_model,
                partial(
                    cluster.call,
                    f"PUT /{index}/_doc/{i}",
                    cluster.client.index,
                    index=index,
                    id=i,
                    body={"text": text},
                    params={"refresh": "false"},
                ),
            )
        cluster.call(f"POST /{index}/_refresh", cluster.client.indices.refresh, index=index)
        doc_vectors = local.encode_documents(CORPUS)
        stored = cluster.call(f"GET /{index}/_doc/0", cluster.client.get, index=index, id=0)["_source"]
        vector_field = SEMANTIC_EMBEDDING if semantic else "text_sparse"
        stored_set = stored_keys(stored, vector_field, chunking)
        local_vector = as_field_vector(local, doc_vectors[0], field_type)
        local_set = set(local_vector)
        ingest_ok = stored_set == local_set
        if semantic and stored_set and stored_set < local_set:
            # A semantic field prunes by default: what it dropped must be the lightest tokens, nothing else.
            ingest_ok = max(local_vector[t] for t in local_set - stored_set) <= min(local_vector[t] for t in stored_set)
        checks, checked = [], 0
        queries = QUERIES + expansion_queries(doc_vectors)
        for q_text, q_vec in zip(queries, local.encode_queries(queries), strict=True):
            scores = [_dot(q_vec, d) for d in doc_vectors]
            ranked = sorted(range(len(CORPUS)), key=lambda i: -scores[i])
            best = ranked[0]
            if scores[best] <= 0 or (scores[best] - scores[ranked[1]]) <= SCORE_RTOL * scores[best] * 10:
                checks.append({"query": q_text, "checkable": False, "reason": "no unique positive local best document"})
                continue
            checked += 1
            body = render(
                "query",
                local.manifest,
                version,
                model_id=query_id,
                query_text=q_text,
                size=3,
                chunking=chunking,
                field_type=field_type,
            )
            hits = search_hits(cluster, local, index, body, {"search_pipeline": "_none"}, q_text, query_id)
            # No model_id: the search pipeline's neural_query_enricher must supply it; two-phase picks the top.
            # A semantic field names its own models: no search pipeline to go through.
            hits_p = (
                hits
                if semantic
                else search_hits(
                    cluster, local, index, _drop_model_id(body), {"search_pipeline": search}, q_text, query_id
                )
            )
            top = int(hits[0]["_id"]) if hits else None
            top_p = int(hits_p[0]["_id"]) if hits_p else None
            expected_p = two_phase_top(q_vec, doc_vectors) if two_phase else best
            score = hits[0]["_score"] if hits else 0.0
            rel = abs(score - scores[best]) / scores[best]
            checks.append(
                {
                    "query": q_text,
                    "checkable": True,
                    "expected": best,
                    "got": top,
                    "score": score,
                    "local_score": scores[best],
                    "local_score_unquantized": _dot(q_vec, doc_vectors[best], False),
                    "relative_diff": rel,
                    "expected_two_phase": expected_p,
                    "got_with_search_pipeline": top_p,
                    "passed": top == best and rel <= SCORE_RTOL and top_p == expected_p,
                }
            )
        probe = low_weight_probe(
            cluster, local, version, index, query_id, doc_vectors, chunking=chunking, field_type=field_type
        )
        passed = ingest_ok and checked > 0 and all(c["passed"] for c in checks if c["checkable"]) and probe["passed"]
        return {
            "resources": resources,
            "ingested": len(CORPUS),
            "ingest_matches_local": ingest_ok,
            "stored_tokens": {
                "field": vector_field,
                "stored": len(stored_set),
                "local": len(local_set),
                "only_stored": sorted(stored_set - local_set)[:10],
                "only_local": sorted(local_set - stored_set)[:10],
                "source_keys": sorted(stored)[:10],
            },
            "queries": checks,
            "low_weight_probe": probe,
            "checked_queries": checked,
            "score_rtol": SCORE_RTOL,
            "seconds": round(time.perf_counter() - t0, 3),
            "field_type": field_type,
            "chunking": chunking,
            "mapping": mapping["mappings"]["properties"]["text" if semantic else "text_sparse"],
            "kept": keep,
            "passed": bool(passed),
        }
    finally:
        if not keep:
            cleanup(cluster, resources)


def _put_pipelines(
    cluster: Cluster,
    local: LocalPackage,
    version: str,
    ingest: str,
    search: str,
    doc_model: str,
    query_id: str,
    chunking: bool,
    two_phase: bool,
) -> None:
    cluster.call(
        f"PUT /_ingest/pipeline/{ingest}",
        cluster.client.ingest.put_pipeline,
        id=ingest,
        body=render("ingest-pipeline", local.manifest, version, model_id=doc_model, chunking=chunking),
    )
    cluster.call(
        f"PUT /_search/pipeline/{search}",
        cluster.client.search_pipeline.put,
        id=search,
        body=render("search-pipeline", local.manifest, version, model_id=query_id, two_phase=two_phase),
    )


def search_hits(
    cluster: Cluster, local: LocalPackage, index: str, body: dict, params: dict, q_text: str, query_model: str
) -> list:
    """The hits of one search; a refused query is reported with the tokens and weights that explain it."""
    try:
        return when_routed(
            cluster,
            query_model,
            lambda: cluster.call(
                f"POST /{index}/_search", cluster.client.search, index=index, body=body, params=params
            ),
        )["hits"]["hits"]
    except ClusterError as exc:
        raise ClusterError(
            f"the cluster rejected the query {q_text!r} ({culprits(local.served_query(q_text))}): {exc}"
        ) from exc


def low_weight_probe(
    cluster: Cluster,
    local: LocalPackage,
    version: str,
    index: str,
    query_id: str,
    doc_vectors: list[dict],
    **query_values,
) -> dict:
    """One query made of idf.json's lowest-weight tokens, so a weight the cluster refuses (a zero IDF: HTTP 400) cannot
    hide behind a lucky battery. It must be accepted; on a rank_features field its top score must equal the local
    dot product, or no document may match when none holds those tokens."""
    if not local.idf:
        return {
            "skipped": "bi-encoder: query weights come from the model; the battery was checked against (0, 64] "
            "at packaging",
            "passed": True,
        }
    text, tokens = local.low_weight_query()
    if not tokens:
        return {"skipped": "idf.json has no whole-word token to build the query from", "passed": True}
    q_vec = local.encode_queries([text])[0]
    body = render("query", local.manifest, version, model_id=query_id, query_text=text, size=3, **query_values)
    hits = search_hits(cluster, local, index, body, {"search_pipeline": "_none"}, text, query_id)
    best = max(_dot(q_vec, d) for d in doc_vectors)
    score = hits[0]["_score"] if hits else 0.0
    exact = query_values.get("field_type", "rank_features") == "rank_features" and not query_values.get("chunking")
    if not exact:
        passed = True  # accepted is what is checked; SEISMIC / nested scoring differs from the plain dot product
    elif best > 0:
        passed = bool(hits) and abs(score - best) <= SCORE_RTOL * best
    else:
        passed = not hits
    return {
        "query": text,
        "tokens": tokens,
        "accepted": True,
        "hits": len(hits),
        "score": score,
        "local_score": best,
        "passed": passed,
    }


def cleanup(cluster: Cluster, resources: dict) -> None:
    index, search, ingest = resources["index"], resources["search_pipeline"], resources["ingest_pipeline"]
    cluster.call(f"DELETE /{index}", cluster.client.indices.delete, index=index, ok_404=True)
    cluster.call(f"DELETE /_search/pipeline/{search}", cluster.client.search_pipeline.delete, id=search, ok_404=True)
    cluster.call(f"DELETE /_ingest/pipeline/{ingest}", cluster.client.ingest.delete_pipeline, id=ingest, ok_404=True)
