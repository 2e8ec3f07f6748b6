"""The weights a packaged model produces (max, p99.9, p99 of the nonzero ones, per side), measured on the proof battery
plus a synthetic corpus, or on the user's texts: what the SEISMIC quantization ceilings are fitted to."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from ..contract.limits import SEISMIC_DEFAULT_CEILINGS
from ..metrics.corpus import synthetic_corpus
from . import batteries, parity

STATS_DOCUMENTS = 2000
STATS_QUERIES = 200
CHUNK = 256  # texts encoded at once: only their nonzero weights are kept, so memory stays at CHUNK x vocabulary
LOGITS_BYTES = 2**27  # a batch's float32 [batch, length, vocabulary] logits stay under 128 MB


def _batch_size(length: int, vocab_size: int) -> int:
    return max(1, min(64, LOGITS_BYTES // (4 * length * vocab_size)))


def _significant(x: float) -> float:
    return float(f"{x:.6g}")


def weight_figures(weights: torch.Tensor, measured_on: str, texts: int, side: str) -> dict:
    """Nearest-rank percentiles of the positive entries of ``weights``, and the share above the server's default
    ceiling for ``side`` (documents or queries)."""
    values = weights[weights > 0].double().sort().values
    n = values.numel()

    def rank(q: float) -> float:
        return _significant(float(values[min(n - 1, max(0, math.ceil(q * n) - 1))])) if n else 0.0

    default = SEISMIC_DEFAULT_CEILINGS[side]
    return {
        "measured_on": measured_on,
        "texts": texts,
        "weights": n,
        "max": rank(1.0),
        "p99_9": rank(0.999),
        "p99": rank(0.99),
        "default_ceiling": default,
        "above_default_ceiling": _significant(float((values > default).sum()) / n) if n else 0.0,
    }


def token_map_figures(vectors: list[dict[str, float]], measured_on: str, side: str) -> dict:
    """:func:`weight_figures` of ``{token: weight}`` maps (eval's encoders)."""
    flat = torch.tensor([w for v in vectors for w in v.values()], dtype=torch.float64)
    return weight_figures(flat, measured_on, len(vectors), side)


def _nonzero(encode: Callable[[list[str]], torch.Tensor], texts: list[str]) -> torch.Tensor:
    parts = [encode(texts[start : start + CHUNK]) for start in range(0, len(texts), CHUNK)]
    return torch.cat([p[p > 0].float() for p in parts]) if parts else torch.zeros(0)


def package_weight_stats(
    spec,
    doc_tok: dict,
    prune_ratio: float,
    references: dict,
    query_rule_weights: torch.Tensor | None,
    log,
    vocab: list[str],
    user_texts: dict[str, tuple[str, list[str]]] | None = None,
) -> dict:
    """The manifest's ``weight_stats``: each side on the battery plus a synthetic corpus, then on the user's texts
    (``user_texts``: side -> (what they are, texts), see ``evaluation.read_user_texts``); ``vocab``: the whole-word
    vocabulary the synthetic corpus is drawn from.
    Document weights as the artifact outputs them (pruned as the graph prunes); query weights as the cluster sees
    them (the query-weight rule applied for an inference-free model)."""
    started = time.perf_counter()
    length = doc_tok["truncation"]["max_length"]
    batch = _batch_size(length, spec.vocab_size)

    def documents(texts):
        want = parity.reference_vectors(spec, spec.encoder.encode_document, texts, length, batch)
        return parity.prune_reference(want, prune_ratio, 0.0)[0]

    def queries(texts):
        if query_rule_weights is not None:  # inference-free: the IDF table as idf.json holds it
            out = parity.encode_query_with(spec, query_rule_weights, texts)
        else:
            out = parity.reference_vectors(spec, spec.encoder.encode_query, texts, length, batch)
            out = parity.prune_reference(out, prune_ratio, 0.0)[0]
        out[:, spec.special_ids] = 0.0
        return out

    battery = parity.prune_reference(parity.cached_reference(spec, doc_tok, cache=references), prune_ratio, 0.0)[0]
    docs, query_texts = synthetic_corpus(vocab, STATS_DOCUMENTS, STATS_QUERIES)
    generated = (
        f"synthetic corpus drawn from the model's vocabulary (metrics.corpus.synthetic_corpus, seed 13): "
        f"{len(docs)} documents, {len(query_texts)} queries"
    )
    stats = {
        "documents": [
            weight_figures(
                torch.cat([battery[battery > 0], _nonzero(documents, docs)]),
                f"proof battery ({len(batteries.DOCUMENT_BATTERY)} documents) + {generated}",
                len(batteries.DOCUMENT_BATTERY) + len(docs),
                "documents",
            )
        ],
        "queries": [
            weight_figures(
                _nonzero(queries, batteries.QUERY_BATTERY + query_texts),
                f"proof battery ({len(batteries.QUERY_BATTERY)} queries) + {generated}",
                len(batteries.QUERY_BATTERY) + len(query_texts),
                "queries",
            )
        ],
    }
    for side, encode in (("documents", documents), ("queries", queries)):
        if user_texts and side in user_texts:
            label, texts = user_texts[side]
            stats[side].append(weight_figures(_nonzero(encode, texts), label, len(texts), side))
    top = {side: max(f["max"] for f in stats[side]) for side in stats}
    log(
        f"output weights: documents max {top['documents']:.4g}, queries max {top['queries']:.4g} "
        f"({time.perf_counter() - started:.1f} s)"
    )
    return stats
