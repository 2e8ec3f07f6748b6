"""The rules a body must meet before it is rendered: what the target server refuses is named here, with the fix."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..contract.limits import check_query_tokens
from ..errors import SparsepackError
from .versions import fmt, require

SEISMIC_MAX_VOCAB = 32768  # neural-search folds token ids to 16 bits
# neural-search's built-in analyzers (3.1+) bundle their own tokenizer + IDF; vocabulary sizes per reference §3.
ANALYZER_VOCAB = {"bert-uncased": 30522, "mbert-uncased": 105879}


@dataclass(frozen=True)
class SeismicParameter:
    kind: type  # int or float
    low: float
    high: float | None
    low_open: bool  # low itself is refused
    high_open: bool = False
    server_default: str = ""

    def rule(self) -> str:
        if self.kind is int:
            return "a positive integer" if self.low_open else "a non-negative integer"
        if self.high is None:
            return "a positive number"
        return f"in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (self.kind is int and value != int(value)):
            return False
        if value < self.low or (self.low_open and value == self.low):
            return False
        return self.high is None or value < self.high or (value == self.high and not self.high_open)


# neural-search's Seismic.validateMethod (3.3-3.6): the range each parameter must fall in; an omitted one takes the default.
SEISMIC_PARAMETERS = {
    "n_postings": SeismicParameter(
        int, 0, None, low_open=True, server_default="computed per segment: max(0.0005 x documents, 160)"
    ),
    "cluster_ratio": SeismicParameter(float, 0, 1, low_open=True, high_open=True, server_default="0.1"),
    "summary_prune_ratio": SeismicParameter(float, 0, 1, low_open=True, server_default="0.4"),
    "approximate_threshold": SeismicParameter(
        int, 0, None, low_open=False, server_default="1000000 documents per segment (exact search below)"
    ),
    "quantization_ceiling_ingest": SeismicParameter(float, 0, None, low_open=True, server_default="3.0"),
    "quantization_ceiling_search": SeismicParameter(float, 0, None, low_open=True, server_default="16.0"),
}
SCORE_MODES = ("max", "avg", "sum", "min", "none")


def _check_seismic(context: dict) -> None:
    for name, param in SEISMIC_PARAMETERS.items():
        value = context.get(name)
        if value is not None and not param.accepts(value):
            raise SparsepackError(
                f"SEISMIC parameter {name}={value!r} is refused by the server: it must be {param.rule()}; "
                f"omit it for the server default ({param.server_default})"
            )


def check_field_type(name: str, context: dict, manifest: dict, version: tuple[int, int]) -> None:
    field_type = context.get("field_type")
    if field_type == "rank_features":
        if name == "index-mapping":
            given = [k for k in SEISMIC_PARAMETERS if context.get(k) is not None]
            if given:
                raise SparsepackError(
                    f"{', '.join(given)} only apply to field_type=sparse_vector; drop them or set that type"
                )
        return
    if field_type == "semantic":
        require("semantic_field", version)
        if not context.get("model_id"):
            raise SparsepackError(
                "field_type=semantic needs model_id=DOCUMENT_MODEL_ID (and search_model_id for an "
                "inference-free model's query model)"
            )
        given = [k for k in ("chunking", "ingest_pipeline", *SEISMIC_PARAMETERS) if context.get(k)]
        if given:
            raise SparsepackError(
                f"{', '.join(given)} do not apply to field_type=semantic (the node encodes the field itself); drop them"
            )
        return
    if field_type != "sparse_vector":
        raise SparsepackError(f"field_type {field_type!r} is unknown; use rank_features, sparse_vector or semantic")
    require("sparse_vector", version)
    require("token_id_format", version)
    if context.get("chunking"):
        require("sparse_vector_nested", version)
    if name == "index-mapping":
        if any(context.get(k) is not None for k in ("quantization_ceiling_ingest", "quantization_ceiling_search")):
            require("seismic_quantization", version)
        _check_seismic(context)
    if manifest and manifest.get("vocab_size", 0) > SEISMIC_MAX_VOCAB:
        raise SparsepackError(
            f"vocabulary of {manifest['vocab_size']} tokens exceeds {SEISMIC_MAX_VOCAB}: SEISMIC folds ids "
            f"to 16 bits and they would collide; use field_type=rank_features"
        )


def _check_query_shape(context: dict) -> None:
    score_mode = context.get("score_mode")
    if score_mode not in SCORE_MODES:
        raise SparsepackError(f"score_mode {score_mode!r} is unknown; use one of {', '.join(SCORE_MODES)}")
    if context.get("chunking") and context.get("field_type") == "sparse_vector" and score_mode != "max":
        raise SparsepackError(f"nested sparse_vector (SEISMIC) queries support only score_mode=max, got {score_mode}")
    tokens = context.get("query_tokens")
    if (
        context.get("field_type") == "sparse_vector"
        and isinstance(tokens, dict)
        and not all(str(k).isdigit() for k in tokens)
    ):
        raise SparsepackError(
            'a sparse_vector field stores token ids: query_tokens keys must be ids ("2023": 1.2), not token strings'
        )
    params = context.get("method_parameters")
    if params is not None:
        if context.get("field_type") != "sparse_vector":
            raise SparsepackError("method_parameters apply only to field_type=sparse_vector (SEISMIC); drop them")
        if not isinstance(params, dict) or set(params) - {"k", "top_n", "heap_factor", "filter"}:
            raise SparsepackError(f"method_parameters {params!r}: use a JSON object with k, top_n, heap_factor, filter")


ACCESS_MODES = ("public", "private", "restricted")


def check_access_mode(mode: str | None, roles: Any) -> None:
    """Only clusters with the Security plugin and plugins.ml_commons.model_access_control_enabled accept an access mode
    (others answer 400 "model access control is disabled"); restricted groups name their backend roles."""
    if mode is None:
        if roles:
            raise SparsepackError("backend_roles need access_mode=restricted")
        return
    if mode not in ACCESS_MODES:
        raise SparsepackError(f"access_mode {mode!r} is unknown; use one of {', '.join(ACCESS_MODES)}")
    if (mode == "restricted") != bool(roles):
        raise SparsepackError("access_mode=restricted needs backend_roles=[...] (and only it takes them)")
    if roles and not (isinstance(roles, list) and all(isinstance(r, str) and r for r in roles)):
        raise SparsepackError(f"backend_roles {roles!r}: give a JSON list of role names")


_PRUNE_TYPES = ("none", "max_ratio", "alpha_mass", "top_k", "abs_value")


def check_prune(prune_type: str, ratio: float) -> None:
    if prune_type not in _PRUNE_TYPES:
        raise SparsepackError(f"prune_type {prune_type!r} is unknown; use one of {', '.join(_PRUNE_TYPES)}")
    if prune_type == "top_k" and (float(ratio) < 1 or float(ratio) != int(float(ratio))):
        raise SparsepackError(f"prune_type top_k needs a positive integer prune_ratio, got {ratio}")
    if prune_type in ("max_ratio", "alpha_mass") and not 0 <= float(ratio) < 1:
        raise SparsepackError(f"prune_type {prune_type} needs prune_ratio in [0, 1), got {ratio}")


def check_query(context: dict, manifest: dict, version: tuple[int, int]) -> None:
    """One way to weigh the query (tokens, analyzer or model), each valid for the field and the server's version."""
    _check_query_shape(context)
    if context.get("query_tokens") is not None:
        check_query_tokens(context["query_tokens"])  # weights outside (0, 64] are an HTTP 400 on the cluster
    chosen = [k for k in ("query_tokens", "analyzer", "model_id") if context.get(k)]
    if len(chosen) > 1:
        raise SparsepackError(f"query: give one of query_tokens, analyzer, model_id (got {', '.join(chosen)})")
    if not chosen and version < (3, 1):
        raise SparsepackError(
            f"query: OpenSearch {fmt(version)} needs model_id (or query_tokens); only 3.1+ has a default analyzer"
        )
    analyzer = context.get("analyzer")
    if analyzer and manifest.get("vocab_size") and ANALYZER_VOCAB.get(analyzer) != manifest["vocab_size"]:
        raise SparsepackError(
            f"analyzer {analyzer} tokenizes with its own {ANALYZER_VOCAB.get(analyzer, 'unknown')}-token "
            f"vocabulary, the model has {manifest['vocab_size']}: query with model_id (its SPARSE_TOKENIZE "
            f"model) instead"
        )
    if not context.get("query_tokens") and not context.get("query_text"):
        raise SparsepackError("query: set query_text=... (or query_tokens)")


def check_two_phase(context: dict) -> None:
    check_prune(context.get("prune_type") or "max_ratio", context["two_phase_prune_ratio"])
    if float(context["expansion_rate"]) < 1 or int(context["max_window_size"]) < 50:
        raise SparsepackError(
            f"two-phase needs expansion_rate >= 1 and max_window_size >= 50, got "
            f"{context['expansion_rate']} and {context['max_window_size']}"
        )
