"""The texts the retrieval smoke test indexes and searches, and queries drawn from the model's own documents."""

from __future__ import annotations

CORPUS = [
    "The weather in New York is rainy today, with heavy rain over the city all night.",
    "OpenSearch indexes sparse vectors as rank features and finds documents with a neural sparse query.",
    "The river water was cold and the cloud over the valley made the day very long.",
    "People use language models to make a vector from each word of a text document.",
    "She said the news of the year would find many people in the city this time.",
    "Search engines index tokens; a query is a list of token weights.",
]
QUERIES = [
    "rainy weather in new york",
    "sparse vector search engine",
    "cold river water",
    "language model for word vectors",
    "news of the year",
    "token weights of a query",
]


def expansion_queries(doc_vectors: list[dict], per_doc: int = 2) -> list[str]:
    """Queries made of each document's own strongest whole-word tokens. A model with little lexical overlap with the
    built-in queries (a random-weight test model, a foreign-language model) still gets checkable queries this way."""
    out = []
    for vec in doc_vectors:
        words = [t for t, _ in sorted(vec.items(), key=lambda kv: -kv[1]) if t.isalpha() and not t.startswith("##")]
        if words:
            out.append(" ".join(words[:per_doc]))
    return out
