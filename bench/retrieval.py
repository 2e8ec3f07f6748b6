"""rank_features (exact) vs sparse_vector + SEISMIC (approximate) at scale, on a local node and on a 2-node cluster.

The corpus is synthetic but shaped by the packaged demo model: the number of tokens per document and the weight
distribution are drawn from what its artifact (run as ML Commons runs it) outputs on generated text; token ids follow
a Zipf law over a BERT-size vocabulary (30,522 ids: the demo's 225-token vocabulary would put every document in
every posting list, which no real model does). Both indices get the same vectors, bulk-indexed precomputed (no model
in the loop), and the same raw-token queries. Printed, never asserted:

    index time (bulk + refresh + force merge to one segment per shard), size on disk, query latency p50/p99 (server
    `took` and client round trip), SEISMIC recall@10 against the exact rank_features top 10.

    python bench/retrieval.py [--docs 200000] [--queries 200] [--two-node-docs 50000] [--port 10845] [--skip-two-node] [--skip-one-node]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import build, machine_line  # noqa: E402

from sparsepack.node import lifecycle  # noqa: E402
from sparsepack.registry.connection import ConnectionOptions, connect  # noqa: E402
from sparsepack.templates import render  # noqa: E402

VOCAB = 30522
FIELD = "v"
WORDS = (
    "weather city rain river cloud search engine index token vector model language news year people water "
    "time day long cold find make word text document query sparse neural dense score rank feature"
).split()


def model_statistics(root: Path) -> dict:
    """Tokens per document and the weights, as the packaged demo model's artifact outputs them on generated text."""
    from sparsepack.packaging.package import package
    from sparsepack.registry.local_package import LocalPackage

    rng = np.random.default_rng(0)
    texts = [" ".join(rng.choice(WORDS, size=int(rng.integers(8, 60)))) for _ in range(300)]
    manifest = package(str(build("tiny", root)), root / "package", log=lambda m: None)
    vectors = LocalPackage(manifest, root / "package").encode_documents(texts)
    return {"nnz": np.array([len(v) for v in vectors]), "weights": np.array([w for v in vectors for w in v.values()])}


def synthetic(stats: dict, n: int, rng, nnz_scale: float = 1.0) -> list[dict[str, float]]:
    cdf = np.cumsum(1.0 / np.arange(1, VOCAB + 1) ** 1.05)
    cdf /= cdf[-1]
    perm = rng.permutation(VOCAB)  # frequent ids scattered over the id space, as in a real vocabulary
    out = []
    for _ in range(n):
        k = max(1, int(rng.choice(stats["nnz"]) * nnz_scale))
        ids = np.unique(perm[np.minimum(np.searchsorted(cdf, rng.random(k)), VOCAB - 1)])
        weights = rng.choice(stats["weights"], size=len(ids))
        out.append({str(int(i)): max(1e-4, round(float(w), 5)) for i, w in zip(ids, weights)})
    return out


def bulk(cl, index: str, vectors: list[dict], batch: int = 5000) -> None:
    for start in range(0, len(vectors), batch):
        lines = []
        for i, vec in enumerate(vectors[start : start + batch], start):
            lines.append(json.dumps({"index": {"_index": index, "_id": str(i)}}))
            lines.append(json.dumps({FIELD: vec}))
        res = cl.request("POST", "/_bulk", body="\n".join(lines) + "\n")
        if res.get("errors"):
            first = next(item["index"]["error"] for item in res["items"] if "error" in item["index"])
            raise SystemExit(f"bulk into {index} failed: {first}")


def build_index(cl, name: str, version: str, vectors: list[dict], shards: int, **field) -> dict:
    body = render("index-mapping", None, version, embedding_field=FIELD, shards=shards, **field)
    body["settings"]["index"]["refresh_interval"] = "-1"
    cl.request("DELETE", f"/{name}", ok_404=True)
    cl.request("PUT", f"/{name}", body=body)
    t0 = time.perf_counter()
    bulk(cl, name, vectors)
    t_bulk = time.perf_counter() - t0
    cl.request("POST", f"/{name}/_refresh")
    cl.request("POST", f"/{name}/_forcemerge", params={"max_num_segments": "1", "wait_for_completion": "true"})
    cl.request("POST", f"/{name}/_refresh")
    seconds = time.perf_counter() - t0
    size = cl.request("GET", f"/{name}/_stats/store")["indices"][name]["primaries"]["store"]["size_in_bytes"]
    if field.get("field_type") == "sparse_vector":
        cl.request("POST", f"/_plugins/_neural/warmup/{name}", ok_404=True)
    return {
        "index_seconds": round(seconds, 1),
        "bulk_seconds": round(t_bulk, 1),
        "docs_per_s": round(len(vectors) / seconds),
        "size_mb": round(size / 1e6, 1),
    }


def search(cl, name: str, version: str, queries: list[dict], **query) -> tuple[list[list[str]], dict]:
    tops, took, wall = [], [], []
    for q in queries + queries[:10]:  # the first ten twice: the first pass warms caches
        body = render("query", None, version, embedding_field=FIELD, query_tokens=q, size=10, **query)
        body["_source"] = False
        t0 = time.perf_counter()
        res = cl.request("POST", f"/{name}/_search", body=body)
        wall.append((time.perf_counter() - t0) * 1000)
        took.append(res["took"])
        tops.append([h["_id"] for h in res["hits"]["hits"]])
    tops, took, wall = tops[: len(queries)], took[10:], wall[10:]
    pct = lambda xs, p: round(float(np.percentile(xs, p)), 1)  # noqa: E731
    return tops, {
        "took_p50_ms": pct(took, 50),
        "took_p99_ms": pct(took, 99),
        "client_p50_ms": pct(wall, 50),
        "client_p99_ms": pct(wall, 99),
    }


def recall_at_10(exact: list[list[str]], approx: list[list[str]]) -> float:
    return round(statistics.mean(len(set(e) & set(a)) / max(1, len(e)) for e, a in zip(exact, approx)), 3)


def seismic_configs(docs: list[dict], queries: list[dict]) -> dict[str, dict]:
    """name -> mapping values (approximate_threshold is set per run, so the merged segment is the approximate one).
    The byte quantization ceilings default to 3.0 (documents) and 16.0 (queries), sized for trained models; the
    second configuration fits them to this corpus's largest weights."""
    top_doc = max(w for d in docs for w in d.values())
    top_query = max(w for q in queries for w in q.values())
    return {
        "seismic-default": {},
        "seismic-ceilings-fit": {
            "quantization_ceiling_ingest": round(top_doc * 1.01, 5),
            "quantization_ceiling_search": round(top_query * 1.01, 5),
        },
    }


HEAP_FACTORS = (1.0, 2.0)


def run(url: str, version: str, docs: list[dict], queries: list[dict], shards: int, label: str) -> list[dict]:
    cl = connect(ConnectionOptions(url=url, timeout=1800.0))
    cl.request("PUT", "/_cluster/settings", body={"persistent": {"plugins.neural_search.circuit_breaker.limit": "50%"}})
    rows = []
    exact_stats = build_index(cl, "bench-rank-features", version, docs, shards)
    exact, lat = search(cl, "bench-rank-features", version, queries)
    rows.append({"setup": label, "index": "rank_features (exact)", **exact_stats, **lat, "recall@10": 1.0})
    print(json.dumps(rows[-1]), flush=True)
    cl.request("DELETE", "/bench-rank-features")
    threshold = len(docs) // shards // 2  # flushed segments stay exact, the merged one per shard is SEISMIC
    for name, params in seismic_configs(docs, queries).items():
        stats = build_index(
            cl,
            f"bench-{name}",
            version,
            docs,
            shards,
            field_type="sparse_vector",
            approximate_threshold=threshold,
            **params,
        )
        for hf in HEAP_FACTORS:
            approx, lat = search(
                cl,
                f"bench-{name}",
                version,
                queries,
                field_type="sparse_vector",
                method_parameters={"k": 10, "top_n": 10, "heap_factor": hf},
            )
            rows.append(
                {
                    "setup": label,
                    "index": f"{name}, heap_factor {hf}",
                    **stats,
                    **lat,
                    "recall@10": recall_at_10(exact, approx),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        cl.request("DELETE", f"/bench-{name}")
    return rows


def with_cluster(port: int, nodes: int, heap: str, fn):
    """A fresh local cluster for the run, stopped on every path."""
    original = lifecycle.node_layout
    if nodes > 1:
        # `node start --nodes N` makes node-1.. ML-only nodes; for a data-scaling figure every node must hold shards.
        def data_nodes(*args, **kwargs):
            infos = original(*args, **kwargs)
            for info in infos:
                if "data" not in info.roles:
                    info.roles.append("data")
            return infos

        lifecycle.node_layout = data_nodes
    try:
        state = lifecycle.start(
            "3.6.0", port=port, nodes=nodes, heap=heap, fresh=True, timeout=900, log=lambda m: print(m, flush=True)
        )
        try:
            return fn(state.url, state.version)
        finally:
            lifecycle.stop(port, quiet=True)
    finally:
        lifecycle.node_layout = original


def main() -> None:
    print(machine_line(), flush=True)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=200_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--two-node-docs", type=int, default=50_000)
    ap.add_argument("--port", type=int, default=10845)
    ap.add_argument("--heap", default="2g")
    ap.add_argument("--skip-two-node", action="store_true")
    ap.add_argument("--skip-one-node", action="store_true")
    args = ap.parse_args()
    rng = np.random.default_rng(42)
    with tempfile.TemporaryDirectory() as tmp:
        stats = model_statistics(Path(tmp))
    print(
        f"demo model statistics: {np.mean(stats['nnz']):.1f} tokens/doc (min {stats['nnz'].min()}, max "
        f"{stats['nnz'].max()}), weights median {np.median(stats['weights']):.3f} max {stats['weights'].max():.3f}",
        flush=True,
    )
    t0 = time.perf_counter()
    docs = synthetic(stats, args.docs, rng, nnz_scale=3.0)  # a 512-token passage carries ~3x a short text's tokens
    queries = synthetic(stats, args.queries, rng, nnz_scale=0.5)
    print(
        f"generated {len(docs)} documents ({np.mean([len(d) for d in docs]):.0f} tokens each) and {len(queries)} "
        f"queries in {time.perf_counter() - t0:.0f}s",
        flush=True,
    )
    rows = (
        []
        if args.skip_one_node
        else with_cluster(args.port, 1, args.heap, lambda url, v: run(url, v, docs, queries, 1, "1 node"))
    )
    if not args.skip_two_node:
        small = docs[: args.two_node_docs]
        rows += with_cluster(
            args.port,
            2,
            args.heap,
            lambda url, v: run(url, v, small, queries, 2, f"2 nodes, 2 shards, {len(small)} docs"),
        )
    print("\n| setup | index | index time s | docs/s | size MB | took p50 / p99 ms | client p50 / p99 ms | recall@10 |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['setup']} | {r['index']} | {r['index_seconds']} | {r['docs_per_s']} | {r['size_mb']} | "
            f"{r['took_p50_ms']} / {r['took_p99_ms']} | {r['client_p50_ms']} / {r['client_p99_ms']} | {r['recall@10']} |"
        )


if __name__ == "__main__":
    main()
