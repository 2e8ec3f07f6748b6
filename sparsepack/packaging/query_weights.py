"""The query weights neural-search accepts, and the rule that makes an IDF table obey them.

neural-search turns each query token into Lucene's ``FeatureField.newLinearQuery(field, token, weight)``, which refuses
any weight outside (0, 64] (HTTP 400 "weight must be in (0, 64.0], got: 0.0"). An inference-free model's IDF table
is its query weights, and an IDF of 0 (a token found in every training document) is normal. The rule, applied to
``idf.json`` at packaging time and recorded in the manifest:

- IDF > 64: every weight is multiplied by the same power of two 2^-k (smallest k that brings the maximum to <= 64).
  Every score is then exactly 2^-k times the original (a power-of-two product is exact in binary floating point), so
  the ranking is unchanged.
- IDF = 0: raised to a floor ``eps`` = the largest power of two <= (smallest positive IDF) x 2^-9. A floored token adds
  ``eps x v`` to a document holding it with value v; for the same v that is under half of the rank_features
  truncation step (stored values keep 9 significant bits: relative step 2^-8) of the score of the lowest-IDF real
  token, and it is strictly below every real weight, so floored tokens stay recognisable.
- Negative, NaN or infinite IDF: refused with the token named; no transformation preserves the ranking.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from ..contract.limits import MAX_QUERY_WEIGHT, weight_problem
from ..errors import SparsepackError

if TYPE_CHECKING:
    from torch import Tensor

FLOOR_SHIFT = 9  # floor <= smallest positive IDF x 2^-9
RULE = "idf.json: IDF 0 -> floor (largest power of two <= min positive IDF x 2^-9); IDF > 64 -> all weights x 2^-k"


def _power_of_two_at_most(x: float) -> float:
    _, exp = math.frexp(x)  # x = m * 2^exp, 0.5 <= m < 1
    return math.ldexp(1.0, exp - 1)


def apply_idf_rule(weights, names: dict[int, str]):
    """(weights with the rule applied, manifest record). ``weights``: the model's IDF tensor; ``names``: id -> the
    string ML Commons looks it up by (only those ids can reach the server)."""
    import torch

    w = weights.detach().float().clone()
    named = torch.tensor(sorted(names), dtype=torch.long)
    values = w[named]
    bad = (~torch.isfinite(values)) | (values < 0)
    if bool(bad.any()):
        tid = int(named[bad.nonzero()[0, 0]])
        raise SparsepackError(
            f"the IDF of token {names[tid]!r} (id {tid}) is {float(w[tid])}; neural-search accepts query "
            f"weights in (0, {MAX_QUERY_WEIGHT:g}] only and no rank-preserving fix exists for it: "
            f"correct the model's IDF (SparseStaticEmbedding weight)"
        )
    top = float(values.max())
    scale = 1.0
    if top > MAX_QUERY_WEIGHT:
        scale = math.ldexp(1.0, -math.ceil(math.log2(top / MAX_QUERY_WEIGHT)))
        w *= scale
        values = w[named]
    positive = values[values > 0]
    if positive.numel() == 0:
        raise SparsepackError(
            "every IDF of the query model is 0: every query would match nothing; "
            "this is not an inference-free model that can be served"
        )
    min_positive = float(positive.min())
    floor = max(math.ldexp(_power_of_two_at_most(min_positive), -FLOOR_SHIFT), math.ldexp(1.0, -149))
    zero_ids = named[values == 0]
    w[zero_ids] = floor
    floored_names = sorted({names[int(t)] for t in zero_ids})
    record = {
        "rule": RULE,
        "accepted_range": f"(0, {MAX_QUERY_WEIGHT:g}]",
        "floor": floor,
        "floored_tokens": len(floored_names),
        "floored_examples": floored_names[:10],
        "scale": scale,
        "scaled_tokens": len(names) if scale != 1.0 else 0,
        "min_positive_idf": min_positive / scale,
        "weights_min": float(w[named].min()),
        "weights_max": float(w[named].max()),
    }
    return w, record


def undo_rule(token_map: dict[str, float], record: dict | None) -> dict[str, float]:
    """A server (or emulated) query map back in the source model's terms: floored tokens dropped (encode_query gives
    them 0, which a sparse vector omits), the scale divided out. Floors lie >= 2^9 times below every real weight, so a
    relative margin of 1e-3 tells them apart even after a float32 -> decimal -> float round trip."""
    if not record:
        return dict(token_map)
    floor, scale = record.get("floor", 0.0), record.get("scale", 1.0)
    return {t: v / scale for t, v in token_map.items() if v > floor * 1.001}


def bi_encoder_record(vectors: list[dict[str, float]], texts: list[str]) -> dict:
    """Bi-encoder queries are the model's output, computed by the cluster per query: check the battery's weights
    against the limit. The server drops zeros, so only > 64 can be refused; a battery weight above it is refused
    here, naming the token."""
    top_w, top_token, top_text = 0.0, "", ""
    for text, vec in zip(texts, vectors, strict=True):
        for token, weight in vec.items():
            if weight > top_w:
                top_w, top_token, top_text = weight, token, text
    if top_w > MAX_QUERY_WEIGHT:
        raise SparsepackError(
            f"the model gives token {top_token!r} the weight {top_w:.4g} for the text {top_text[:40]!r}; "
            f"neural-search refuses query weights above {MAX_QUERY_WEIGHT:g} (HTTP 400), so such queries "
            f"would fail: use a max-pooling model (each weight is log(1 + one logit)) or an inference-free query side"
        )
    return {
        "rule": "bi-encoder: weights come from the model per query; battery checked against the limit",
        "accepted_range": f"(0, {MAX_QUERY_WEIGHT:g}]",
        "battery_texts": len(texts),
        "max_weight": top_w,
        "max_weight_token": top_token,
        "floored_tokens": 0,
        "scale": 1.0,
    }


def culprits(token_map: dict[str, float], count: int = 3) -> str:
    """For an error message: the tokens of a rejected query outside (0, 64], else its lowest-weight ones."""
    out = [(t, w) for t, w in token_map.items() if weight_problem(w)]
    if not out:
        out = sorted(token_map.items(), key=lambda kv: kv[1])[:count]
        label = "its lowest-weight tokens"
    else:
        label = f"tokens weighted outside (0, {MAX_QUERY_WEIGHT:g}]"
    return f"{label}: " + ", ".join(f"{t!r} {w:.6g}" for t, w in out[:count])


def lowest_weight_query(tokenizer_data: dict, idf: dict[str, float], count: int = 3) -> tuple[str, dict[str, float]]:
    """A query text made of the ``count`` lowest-weight whole tokens of idf.json (each one tokenizes back to itself
    alone), and those tokens' weights: the query most likely to carry a weight the cluster refuses."""
    import json

    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(json.dumps(tokenizer_data))
    chosen: dict[str, float] = {}
    for token, weight in sorted(idf.items(), key=lambda kv: (kv[1], kv[0])):
        if not token.isalnum():  # word pieces (##s), punctuation: not reproducible as standalone query text
            continue
        ids = tok.encode(token, add_special_tokens=False).ids
        if len(ids) == 1 and tok.decode(ids, skip_special_tokens=True) == token:
            chosen[token] = weight
            if len(chosen) == count:
                break
    return " ".join(chosen), chosen


def reference_token_map(vector: Tensor, names: dict[int, str]) -> dict[str, float]:
    """A reference vector keyed the way the server keys its output (later ids win on name collisions)."""
    out: dict[str, float] = {}
    for tid in vector.nonzero().flatten().tolist():
        if tid in names:
            out[names[tid]] = float(vector[tid])
    return out
