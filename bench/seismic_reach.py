"""How much of the exact top 10 SEISMIC can reach at all, for given ``n_postings`` and query ``top_n``, without a node.

SEISMIC (neural-search 3.3+) keeps, per token and per segment, the ``n_postings`` documents with the highest weight for
that token, and a query walks only the posting lists of its ``top_n`` highest-weighted tokens. Every document it finds
is scored against the whole query, so a document of the exact top 10 is found, at the most generous ``heap_factor``,
exactly when it is in the kept postings of at least one of those tokens. This script computes, on the same vectors as
``bench/retrieval.py`` (same base, sampling and seed), each top-10 document's best rank in the posting lists of the
query's top_n tokens, so it prints the recall@10 ceiling for any ``n_postings`` at once, and the ``n_postings`` a
recall@10 target needs. Block skipping (``heap_factor``), the 8-bit quantization and the summaries only lower recall
from there; the node's measured rows say by how much. One force-merged segment per shard is assumed, as the bench does.

    python bench/seismic_reach.py [--docs 1000000,200000] [--top-n 10,20,40,0] [--base-docs 20000] [--queries 200]
        [--corpus synthetic|docstrings] [--out FILE]

``--top-n 0`` means every query token. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import retrieval  # noqa: E402
from common import machine_line  # noqa: E402

N_POSTINGS = (500, 1000, 2000, 5000, 10000, 20000, 50000)
TARGETS = (0.9, 0.95, 0.97, 0.99)


def sorted_columns(docs: retrieval.Vectors, tokens: np.ndarray, vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """For the given tokens only: every posting's weight, grouped by token and sorted high to low within each token
    (as float32 bit patterns, which order like the weights since all are positive), and each token's start offset."""
    wanted = np.zeros(vocab, bool)
    wanted[tokens] = True
    keep = wanted[docs.ids]
    tok = docs.ids[keep].astype(np.int64)
    bits = docs.weights[keep].view(np.uint32).astype(np.int64)
    del keep
    key = (tok << 32) | (0xFFFFFFFF - bits)  # token ascending, weight descending
    del tok, bits
    key.sort()
    starts = np.searchsorted(key >> 32, np.arange(vocab + 1))
    return key, starts


def best_ranks(
    docs: retrieval.Vectors,
    queries: retrieval.Vectors,
    top: np.ndarray,
    columns: tuple[np.ndarray, np.ndarray],
    top_n: int,
) -> np.ndarray:
    """(queries, 10): each exact top-10 document's best 1-based rank in the posting lists of the query's top_n tokens
    (rank = 1 + the number of documents with a strictly higher weight for that token); inf if it holds none of them."""
    key, starts = columns
    out = np.full(top[:, :10].shape, np.inf)
    for q in range(queries.n):
        row = queries.rows(q, q + 1)
        order = np.argsort(-row.weights, kind="stable")
        chosen = row.ids[order if top_n == 0 else order[:top_n]]
        for j, d in enumerate(top[q, :10]):
            doc = docs.rows(int(d), int(d) + 1)
            for t in map(int, chosen):  # Python ints: t << 32 must not wrap
                hit = np.flatnonzero(doc.ids == t)
                if len(hit) == 0:
                    continue
                inverted = (t << 32) | (0xFFFFFFFF - int(doc.weights[hit[0]].view(np.uint32)))
                rank = np.searchsorted(key[starts[t] : starts[t + 1]], inverted, side="left") + 1
                out[q, j] = min(out[q, j], rank)
    return out


def report(label: str, n_docs: int, ranks: dict[int, np.ndarray]) -> None:
    server = max(160, int(0.0005 * n_docs))  # neural-search's default n_postings for a segment of n_docs
    columns = sorted({server, *(n for n in N_POSTINGS if n < n_docs)})
    print(f"[{label}] recall@10 ceiling by n_postings (server default here: {server})")
    print(
        "| top_n | " + " | ".join(f"{n:,}" for n in columns) + " | " + " | ".join(f"n for {t}" for t in TARGETS) + " |"
    )
    print("|---" * (1 + len(columns) + len(TARGETS)) + "|")
    for top_n, r in ranks.items():
        reach = [f"{np.mean(r <= n):.3f}" for n in columns]
        flat = np.sort(r.ravel())
        need = []
        for t in TARGETS:
            k = int(np.ceil(t * flat.size)) - 1
            need.append("never" if not np.isfinite(flat[k]) else f"{int(flat[k]):,} ({flat[k] / n_docs:.2%})")
        print(f"| {top_n or 'all'} | " + " | ".join(reach) + " | " + " | ".join(need) + " |", flush=True)


def ints(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=ints, default=(1_000_000, 200_000), help="corpus sizes (prefixes of one sample)")
    ap.add_argument("--top-n", type=ints, default=(10, 20, 40, 0), help="query top_n values; 0: every token")
    ap.add_argument("--base-docs", type=int, default=20_000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--corpus", choices=("synthetic", "docstrings"), default="synthetic", help="as bench/retrieval.py")
    ap.add_argument("--out", help="also write everything printed to this file")
    args = ap.parse_args()
    if args.out:
        sys.stdout = retrieval.Tee(sys.stdout, open(args.out, "w", buffering=1))  # open for the whole run
        print("python bench/seismic_reach.py " + " ".join(sys.argv[1:]), flush=True)
    print(machine_line(), flush=True)
    print("options: " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()), flush=True)
    manifest, pkg = retrieval.trained_package()
    vocab = manifest["vocab_size"]
    base, queries = retrieval.encoded_base(manifest, pkg, args.base_docs, args.queries, args.corpus)
    everything = retrieval.sample(base, max(args.docs), np.random.default_rng(retrieval.SEED))
    for n in args.docs:
        docs = everything.rows(0, n)
        label = f"{n:,} docs"
        t0 = time.perf_counter()
        top = retrieval.truth(docs, queries, vocab, label)
        columns = sorted_columns(docs, np.unique(queries.ids), vocab)
        ranks = {tn: best_ranks(docs, queries, top, columns, tn) for tn in args.top_n}
        del columns
        report(label, n, ranks)
        print(f"[{label}] computed in {time.perf_counter() - t0:.0f}s", flush=True)


if __name__ == "__main__":
    main()
