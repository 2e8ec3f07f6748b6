"""The one table of which OpenSearch version first has each feature sparsepack renders."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SparsepackError

OLDEST = (2, 11)
NEWEST_KNOWN = (3, 8)
DEFAULT_TARGET = "3.8"  # the newest 3.x line sparsepack knows


# Placeholders in variant values, filled by whoever applies the variant to a real node (tests/test_acceptance.py).
DOCUMENT_MODEL, QUERY_MODEL, QUERY_TOKENS = "$document_model", "$query_model", "$query_tokens"

Variant = tuple[str, dict]  # (template name, --set values) that exercises a feature


@dataclass(frozen=True)
class Feature:
    since: tuple[int, int]
    what: str
    until: tuple[int, int] | None = None  # last version that accepts it
    # Every feature names the rendered bodies that use it; the acceptance test applies each one to the real nodes whose
    # version allows it, so a feature cannot be added here without being tried on a node.
    variants: tuple[Variant, ...] = ()


_SEISMIC_SMALL = {
    "field_type": "sparse_vector",
    "n_postings": 160,
    "cluster_ratio": 0.1,
    "summary_prune_ratio": 0.4,
    "approximate_threshold": 1000,
}
_PRUNE_EXAMPLES = {"max_ratio": 0.1, "alpha_mass": 0.5, "top_k": 10, "abs_value": 0.1}


FEATURES: dict[str, Feature] = {
    "model_group": Feature(
        (2, 11),
        "ML Commons model groups",
        variants=(
            ("model-group", {}),
            ("model-group", {"access_mode": "public"}),
            ("model-group", {"access_mode": "private"}),
            ("model-group", {"access_mode": "restricted", "backend_roles": ["search"]}),
        ),
    ),
    "register_local": Feature(
        (2, 11),
        "chunked upload of a local TorchScript model",
        variants=(
            ("register-meta", {"role": "document"}),
            ("register-meta", {"role": "query"}),
            ("model-config", {"role": "document"}),
        ),
    ),
    "register_url": Feature(
        (2, 11), "registering a model from a URL", variants=(("register-url", {"role": "document"}),)
    ),
    "ml_settings": Feature(
        (2, 11),
        "the ML Commons cluster settings",
        variants=(
            ("cluster-settings", {}),
            ("cluster-settings", {"allow_registering_model_via_url": True, "only_run_on_ml_node": False}),
        ),
    ),
    "sparse_encoding_processor": Feature(
        (2, 11), "the sparse_encoding ingest processor", variants=(("ingest-pipeline", {"model_id": DOCUMENT_MODEL}),)
    ),
    "rank_features": Feature(
        (2, 11), "rank_features fields", variants=(("index-mapping", {"field_type": "rank_features"}),)
    ),
    "neural_sparse_query": Feature(
        (2, 11), "the neural_sparse query", variants=(("query", {"model_id": QUERY_MODEL}),)
    ),
    "model_config_stub": Feature(
        (2, 11),
        "a model_config stub for SPARSE_TOKENIZE (ml-commons#2981)",
        until=(2, 11),
        variants=(("register-meta", {"role": "query", "model_config_stub": True}),),
    ),
    "text_chunking": Feature(
        (2, 13),
        "the text_chunking ingest processor",
        variants=(
            ("ingest-pipeline", {"model_id": DOCUMENT_MODEL, "chunking": True}),
            ("index-mapping", {"chunking": True}),
            ("query", {"model_id": QUERY_MODEL, "chunking": True}),
            ("query", {"model_id": QUERY_MODEL, "chunking": True, "score_mode": "sum"}),
        ),
    ),
    "neural_query_enricher": Feature(
        (2, 13),
        "the neural_query_enricher search processor",
        variants=(("search-pipeline", {"model_id": QUERY_MODEL, "two_phase": False}),),
    ),
    "query_tokens": Feature(
        (2, 14), "neural_sparse with raw query_tokens", variants=(("query", {"query_tokens": QUERY_TOKENS}),)
    ),
    "two_phase": Feature(
        (2, 15),
        "the neural_sparse_two_phase_processor",
        variants=(("search-pipeline", {"model_id": QUERY_MODEL, "two_phase": True}),),
    ),
    "ingest_batch_size": Feature(
        (2, 16),
        "batch_size in the sparse_encoding processor",
        variants=(("ingest-pipeline", {"model_id": DOCUMENT_MODEL, "batch_size": 4}),),
    ),
    "disk_free_space_threshold": Feature(
        (2, 16),
        "the ML Commons disk_free_space_threshold setting",
        variants=(("cluster-settings", {"disk_free_space_threshold": "1gb"}),),
    ),
    "ingest_prune": Feature(
        (2, 19),
        "prune_type/prune_ratio in the sparse_encoding processor",
        variants=tuple(
            ("ingest-pipeline", {"model_id": DOCUMENT_MODEL, "prune_type": t, "prune_ratio": r})
            for t, r in _PRUNE_EXAMPLES.items()
        ),
    ),
    "two_phase_prune_type": Feature(
        (2, 19),
        "prune_type in the two-phase processor",
        variants=tuple(
            ("search-pipeline", {"model_id": QUERY_MODEL, "prune_type": t, "two_phase_prune_ratio": r})
            for t, r in {**_PRUNE_EXAMPLES, "max_ratio": 0.4, "alpha_mass": 0.8}.items()
        ),
    ),
    "skip_existing": Feature(
        (3, 0),
        "skip_existing in the sparse_encoding processor",
        variants=(("ingest-pipeline", {"model_id": DOCUMENT_MODEL, "skip_existing": True}),),
    ),
    "analyzer": Feature(
        (3, 1),
        "neural_sparse with a built-in analyzer",
        variants=(("query", {"analyzer": "bert-uncased"}), ("query", {})),
    ),  # 3.1+: neither model_id nor analyzer means the default analyzer
    "semantic_field": Feature(
        (3, 1),
        "semantic fields (the node encodes the text with model_id)",
        variants=(
            ("index-mapping", {"field_type": "semantic", "model_id": DOCUMENT_MODEL}),
            ("index-mapping", {"field_type": "semantic", "model_id": DOCUMENT_MODEL, "search_model_id": QUERY_MODEL}),
            ("query", {"field_type": "semantic", "model_id": QUERY_MODEL}),
        ),
    ),
    "semantic_sparse_encoding_config": Feature(
        (3, 2),
        "a semantic field's sparse_encoding_config (its pruning)",
        variants=(("index-mapping", {"field_type": "semantic", "model_id": DOCUMENT_MODEL}),),
    ),  # without it the node prunes a semantic field's sparse vectors (max_ratio 0.1): weights the model made are lost
    "token_id_format": Feature(
        (3, 2), "the TOKEN_ID sparse_embedding_format", variants=(("index-mapping", {"field_type": "sparse_vector"}),)
    ),  # the pipeline writes token ids into a sparse_vector
    "sparse_vector": Feature(
        (3, 3),
        "sparse_vector fields with the SEISMIC method",
        variants=(
            ("index-mapping", {"field_type": "sparse_vector"}),
            ("index-mapping", dict(_SEISMIC_SMALL)),
            (
                "query",
                {
                    "model_id": QUERY_MODEL,
                    "field_type": "sparse_vector",
                    "method_parameters": {"k": 10, "top_n": 10, "heap_factor": 1.0},
                },
            ),
        ),
    ),
    "seismic_quantization": Feature(
        (3, 3),
        "SEISMIC quantization ceilings",
        variants=(
            (
                "index-mapping",
                {**_SEISMIC_SMALL, "quantization_ceiling_ingest": 3.0, "quantization_ceiling_search": 16.0},
            ),
        ),
    ),
    "sparse_vector_nested": Feature(
        (3, 4),
        "nested (chunked) sparse_vector fields",
        variants=(
            ("index-mapping", {"field_type": "sparse_vector", "chunking": True}),
            ("query", {"model_id": QUERY_MODEL, "field_type": "sparse_vector", "chunking": True}),
        ),
    ),
}


def parse_version(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+){0,2}", str(text).strip())
    if not m:
        raise SparsepackError(f"target version {text!r} is not MAJOR.MINOR[.PATCH]; use e.g. 2.19 or 3.6.0")
    version = (int(m.group(1)), int(m.group(2)))
    if version < OLDEST:
        raise SparsepackError(f"OpenSearch {text} predates neural sparse in ML Commons; target 2.11 or newer")
    if version[0] > NEWEST_KNOWN[0]:
        raise SparsepackError(
            f"OpenSearch {text} is newer than any line sparsepack knows (up to 3.x); target a 2.x or 3.x version"
        )
    return version


def line_of(version: tuple[int, int]) -> str:
    return f"{version[0]}.x"


def fmt(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def features_for(version: tuple[int, int]) -> dict[str, bool]:
    return {name: f.since <= version and (f.until is None or version <= f.until) for name, f in FEATURES.items()}


def require(feature: str, version: tuple[int, int]) -> None:
    f = FEATURES[feature]
    if version < f.since:
        raise SparsepackError(
            f"{f.what} needs OpenSearch {fmt(f.since)}+, the target is {fmt(version)}; "
            f"raise --target-version or drop that option"
        )
    if f.until is not None and version > f.until:
        raise SparsepackError(
            f"{f.what} applies only up to OpenSearch {fmt(f.until)}, the target is {fmt(version)}; drop that option"
        )
