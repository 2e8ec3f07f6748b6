"""nDCG@k and recall@k of a candidate ranking, graded by a truth ranking or by relevance judgements.

Score matrices are ``[queries][documents]``: nested sequences, or anything with ``tolist()`` (a tensor, an array).
"""

from __future__ import annotations

import math


def _rows(matrix) -> list[list[float]]:
    return matrix.tolist() if hasattr(matrix, "tolist") else [list(row) for row in matrix]


def _descending(scores: list[float]) -> list[int]:
    """Positions by score, highest first; ties keep their order (a stable sort)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def _ndcg(gains: list[float], ranking: list[int], k: int) -> float:
    ideal = sorted(gains, reverse=True)[:k]
    got = [max(gains[i], 0.0) / math.log2(n + 2) for n, i in enumerate(ranking[:k])]
    best = [max(g, 0.0) / math.log2(n + 2) for n, g in enumerate(ideal)]
    return sum(got) / sum(best)


def ranking_agreement(truth, candidate, k: int = 10, recall_k: int = 100) -> dict:
    """Mean nDCG@k of the candidate's ranking graded by the truth scores, and mean recall@recall_k of the truth's top
    documents (positive scores only). Queries the truth matches nothing with are left out, and counted."""
    truth, candidate = _rows(truth), _rows(candidate)
    n_docs = len(truth[0]) if truth else 0
    k, recall_k = min(k, n_docs), min(recall_k, n_docs)
    ndcgs, recalls = [], []
    for t, c in zip(truth, candidate, strict=True):
        if not t or max(t) <= 0:
            continue
        ranking = _descending(c)
        ndcgs.append(_ndcg(t, ranking, k))
        relevant = {i for i in _descending(t)[:recall_k] if t[i] > 0}
        recalls.append(len(relevant & set(ranking[:recall_k])) / len(relevant))
    return {
        "ndcg_at_10": round(sum(ndcgs) / len(ndcgs), 6) if ndcgs else None,
        "recall_at_100": round(sum(recalls) / len(recalls), 6) if recalls else None,
        "queries_scored": len(ndcgs),
        "queries_without_matches": len(truth) - len(ndcgs),
    }


def qrels_ndcg(
    scores, doc_ids: list[str], query_ids: list[str], qrels: dict[str, dict[str, float]] | None, k: int = 10
) -> float | None:
    """Mean nDCG@k of ``scores`` graded by relevance judgements; queries judging no document of the corpus left out."""
    rows = _rows(scores)
    doc_pos = {d: i for i, d in enumerate(doc_ids)}
    values = []
    for row, qid in enumerate(query_ids):
        judged = {doc_pos[d]: r for d, r in (qrels or {}).get(qid, {}).items() if d in doc_pos}
        if not any(r > 0 for r in judged.values()):
            continue
        gains = [0.0] * len(rows[row])
        for pos, rel in judged.items():
            gains[pos] = float(rel)
        values.append(_ndcg(gains, _descending(rows[row]), min(k, len(gains))))
    return round(sum(values) / len(values), 6) if values else None
