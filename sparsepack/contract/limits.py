"""What the cluster accepts: query weights neural-search takes, the longest input ML Commons feeds a model."""

from __future__ import annotations

import math
import struct

from ..errors import SparsepackError

MAX_QUERY_WEIGHT = 64.0  # Lucene FeatureField.MAX_WEIGHT
ML_COMMONS_MAX_LENGTH = 512  # DJL clamps anything longer to 512
MIN_MAX_LENGTH = 8


def weight_problem(value) -> str | None:
    """Why neural-search would refuse this query weight, or None when it is accepted."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"is {value!r}, not a number"
    if math.isnan(value):
        return "is NaN"
    if value <= 0:
        return f"is {value!r}"
    if value > MAX_QUERY_WEIGHT:
        return f"is {value!r}, above {MAX_QUERY_WEIGHT:g}"
    if struct.unpack("<f", struct.pack("<f", value))[0] == 0.0:
        return f"is {value!r}, which is 0 as the float neural-search reads"
    return None


def check_query_tokens(tokens) -> None:
    """Raw ``query_tokens`` for the query template: every weight must lie in (0, 64]."""
    if not isinstance(tokens, dict) or not tokens:
        raise SparsepackError(f"query_tokens must be a non-empty object {{token: weight}}, got {tokens!r}")
    for token, weight in tokens.items():
        problem = weight_problem(weight)
        if problem:
            raise SparsepackError(
                f"query_tokens: the weight of token {token!r} {problem}; neural-search accepts weights in "
                f"(0, {MAX_QUERY_WEIGHT:g}] only (HTTP 400): drop the token or give it a weight in range"
            )


def document_max_length(model_max: int, requested: int | None) -> int:
    """The document truncation length: the model's own, capped at ML Commons' 512, or ``requested`` when it fits."""
    model_max = int(model_max)
    if requested is None:
        return min(model_max, ML_COMMONS_MAX_LENGTH)
    if requested < MIN_MAX_LENGTH:
        raise SparsepackError(f"--max-length {requested} is too small; use at least {MIN_MAX_LENGTH} tokens")
    if requested > ML_COMMONS_MAX_LENGTH:
        raise SparsepackError(
            f"--max-length {requested} exceeds 512, where ML Commons clamps every document; use <= 512"
        )
    if requested > model_max:
        raise SparsepackError(
            f"--max-length {requested} exceeds the model's max_seq_length {model_max}; use <= {model_max}"
        )
    return requested


# SEISMIC stores weights as bytes, scaled to [0, ceiling]: weights above the ceiling are clipped to it.
SEISMIC_DEFAULT_CEILINGS = {"documents": 3.0, "queries": 16.0}  # quantization_ceiling_ingest / _search
CEILING_MARGIN = 0.1  # headroom above the measured maximum, for texts heavier than the measured ones
CEILING_RULE = "ceiling = measured maximum x 1.1, rounded up to 2 significant digits"


def fitted_ceiling(maximum: float) -> float | None:
    """The quantization ceiling just above ``maximum`` (see ``CEILING_RULE``); None when nothing positive was seen."""
    if not maximum > 0 or not math.isfinite(maximum):
        return None
    target = maximum * (1 + CEILING_MARGIN)
    step = 10.0 ** (math.floor(math.log10(target)) - 1)  # the second significant digit
    return float(f"{math.ceil(round(target / step, 9)) * step:.2g}")
