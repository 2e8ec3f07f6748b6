"""A corpus any model can be gated on offline: texts drawn from its own vocabulary."""

from __future__ import annotations

import random
import re


def synthetic_corpus(
    vocab: list[str], n_docs: int = 240, n_queries: int = 60, seed: int = 13
) -> tuple[list[str], list[str]]:
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
