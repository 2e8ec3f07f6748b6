"""Ranking agreement between two document encoders: the gate for variants that cannot match bit for bit (fp16).

Token-set equality is the wrong test for a lower-precision artifact: tiny weights near zero flip in and out while
the ranking, which is what users see, does not move. So the gate ranks a corpus with both encoders and scores the
candidate's ranking with the reference ranking as truth.
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Thresholds:
    ndcg_at_10: float = 0.99
    jaccard: float = 0.95
    jaccard_min_weight: float = 0.01  # token sets keep weights >= this fraction of each vector's max


def synthetic_corpus(vocab: list[str], n_docs: int = 240, n_queries: int = 60, seed: int = 13) -> tuple[list[str], list[str]]:
    """Documents of 5 to 300 words and queries of 1 to 6 words, drawn from the model's own whole-word vocabulary, so
    any model can be gated offline. Each query takes its words from one document, so every query has matches."""
    words = [w for w in vocab if re.fullmatch(r"[a-z]{2,}", w)] or [w for w in vocab if w.isalnum()]
    rng = random.Random(seed)
    docs = [" ".join(rng.choices(words, k=rng.choice((5, 12, 30, 80, 300)))) for _ in range(n_docs)]
    queries = []
    for _ in range(n_queries):
        source = rng.choice(docs).split()
        queries.append(" ".join(rng.sample(source, k=min(len(source), rng.randint(1, 6)))))
    return docs, queries


def _jaccard(a: torch.Tensor, b: torch.Tensor, min_fraction: float) -> float:
    keep_a = a >= a.max() * min_fraction if a.max() > 0 else a > 0
    keep_b = b >= b.max() * min_fraction if b.max() > 0 else b > 0
    keep_a, keep_b = keep_a & (a > 0), keep_b & (b > 0)
    union = int((keep_a | keep_b).sum())
    return 1.0 if union == 0 else int((keep_a & keep_b).sum()) / union


def ranking_agreement(ref_docs: torch.Tensor, ref_queries: torch.Tensor, cand_docs: torch.Tensor,
                      cand_queries: torch.Tensor, thresholds: Thresholds = Thresholds()) -> dict:
    """Reference vs candidate ``[n, vocab]`` vectors: mean nDCG@10 and recall@100 (reference ranking as truth, the
    measures of ``sparsepack eval``), mean token-set Jaccard of the documents, and whether the gate passes."""
    from ..evaluate import ranking_agreement as agreement

    ranks = agreement(ref_queries.double() @ ref_docs.double().T, cand_queries.double() @ cand_docs.double().T)
    ndcg = 1.0 if ranks["ndcg_at_10"] is None else ranks["ndcg_at_10"]
    jaccard = sum(_jaccard(a, b, thresholds.jaccard_min_weight) for a, b in zip(ref_docs, cand_docs)) / len(ref_docs)
    return {"documents": len(ref_docs), "queries": len(ref_queries), "queries_with_matches": ranks["queries_scored"],
            "ndcg_at_10": ndcg, "recall_at_100": ranks["recall_at_100"], "jaccard": round(jaccard, 6),
            "max_abs_diff": float((ref_docs - cand_docs).abs().max()),
            "thresholds": {"ndcg_at_10": thresholds.ndcg_at_10, "jaccard": thresholds.jaccard,
                           "jaccard_min_weight": thresholds.jaccard_min_weight},
            "passed": ndcg >= thresholds.ndcg_at_10 and jaccard >= thresholds.jaccard}
