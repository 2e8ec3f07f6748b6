"""The one quality gate: the figures a variant that cannot match bit for bit (int8, fp16) must reach."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SparsepackError

MIN_DOCUMENTS, MIN_QUERIES = 500, 100  # the int8 and eval gate's minimum sample


@dataclass(frozen=True)
class Gate:
    """``None`` for a measure the gate does not hold (the fp16 gate has no recall floor, the int8 gate no Jaccard)."""

    ndcg: float = 0.98
    recall: float | None = 0.98
    jaccard: float | None = None
    jaccard_min_weight: float = 0.01  # token sets keep weights >= this fraction of each vector's max
    min_documents: int = MIN_DOCUMENTS
    min_queries: int = MIN_QUERIES

    @classmethod
    def parse(cls, text: str | None) -> Gate:
        """``ndcg=0.98,recall=0.98`` (either may be left out: its default stays)."""
        if not text:
            return cls()
        values = {}
        for part in text.split(","):
            key, sep, raw = part.partition("=")
            key = key.strip().lower()
            try:
                value = float(raw)
            except ValueError:
                value = -1.0
            if not sep or key not in ("ndcg", "recall") or not 0.0 <= value <= 1.0:
                raise SparsepackError(f"--quality-gate {text!r}: use ndcg=X,recall=Y with X and Y in [0, 1]")
            values[key] = value
        default = cls()
        return cls(ndcg=values.get("ndcg", default.ndcg), recall=values.get("recall", default.recall))

    def thresholds(self) -> dict:
        out: dict = {"ndcg_at_10": self.ndcg}
        if self.recall is not None:
            out["recall_at_100"] = self.recall
        if self.jaccard is not None:
            out.update(jaccard=self.jaccard, jaccard_min_weight=self.jaccard_min_weight)
        if self.min_documents or self.min_queries:
            out.update(min_documents=self.min_documents, min_queries=self.min_queries)
        return out

    def passes(
        self,
        ndcg: float | None,
        recall: float | None = None,
        jaccard: float | None = None,
        documents: int = 0,
        queries: int = 0,
    ) -> bool:
        checks = [(ndcg, self.ndcg), (recall, self.recall), (jaccard, self.jaccard)]
        return (
            all(floor is None or (value is not None and value >= floor) for value, floor in checks)
            and documents >= self.min_documents
            and queries >= self.min_queries
        )

    def check(self, result: dict) -> dict:
        """A ranking-agreement result with its ``corpus`` sizes -> the gate's record of it."""
        ndcg, recall = result["ndcg_at_10"], result["recall_at_100"]
        documents, queries = result["corpus"]["documents"], result["corpus"]["queries"]
        return {
            "thresholds": self.thresholds(),
            "ndcg_at_10": ndcg,
            "recall_at_100": recall,
            "documents": documents,
            "queries": queries,
            "passed": self.passes(ndcg, recall, documents=documents, queries=queries),
        }


# fp16 against its own fp32 trace: nearly the same ranking, and nearly the same token sets, on a smaller sample
HALF_PRECISION_GATE = Gate(ndcg=0.99, recall=None, jaccard=0.95, min_documents=0, min_queries=0)
