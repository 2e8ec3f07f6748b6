"""The one table of which OpenSearch version first has each feature sparsepack renders."""
from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import SparsepackError

OLDEST = (2, 11)
NEWEST_KNOWN = (3, 8)
DEFAULT_TARGET = "3.8"  # the newest 3.x line sparsepack knows


@dataclass(frozen=True)
class Feature:
    since: tuple[int, int]
    what: str
    until: tuple[int, int] | None = None  # last version that accepts it


FEATURES: dict[str, Feature] = {
    "sparse_encoding_processor": Feature((2, 11), "the sparse_encoding ingest processor"),
    "neural_sparse_query": Feature((2, 11), "the neural_sparse query"),
    "model_config_stub": Feature((2, 11), "a model_config stub for SPARSE_TOKENIZE (ml-commons#2981)", until=(2, 11)),
    "text_chunking": Feature((2, 13), "the text_chunking ingest processor"),
    "neural_query_enricher": Feature((2, 13), "the neural_query_enricher search processor"),
    "query_tokens": Feature((2, 14), "neural_sparse with raw query_tokens"),
    "two_phase": Feature((2, 15), "the neural_sparse_two_phase_processor"),
    "ingest_batch_size": Feature((2, 16), "batch_size in the sparse_encoding processor"),
    "disk_free_space_threshold": Feature((2, 16), "the ML Commons disk_free_space_threshold setting"),
    "ingest_prune": Feature((2, 19), "prune_type/prune_ratio in the sparse_encoding processor"),
    "two_phase_prune_type": Feature((2, 19), "prune_type in the two-phase processor"),
    "skip_existing": Feature((3, 0), "skip_existing in the sparse_encoding processor"),
    "analyzer": Feature((3, 1), "neural_sparse with a built-in analyzer"),
    "token_id_format": Feature((3, 2), "the TOKEN_ID sparse_embedding_format"),
    "sparse_vector": Feature((3, 3), "sparse_vector fields with the SEISMIC method"),
}


def parse_version(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\.(\d+)(?:\.\d+){0,2}", str(text).strip())
    if not m:
        raise SparsepackError(f"target version {text!r} is not MAJOR.MINOR[.PATCH]; use e.g. 2.19 or 3.6.0")
    version = (int(m.group(1)), int(m.group(2)))
    if version < OLDEST:
        raise SparsepackError(f"OpenSearch {text} predates neural sparse in ML Commons; target 2.11 or newer")
    if version[0] > NEWEST_KNOWN[0]:
        raise SparsepackError(f"OpenSearch {text} is newer than any line sparsepack knows (up to 3.x); target a 2.x or 3.x version")
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
        raise SparsepackError(f"{f.what} needs OpenSearch {fmt(f.since)}+, the target is {fmt(version)}; "
                              f"raise --target-version or drop that option")
    if f.until is not None and version > f.until:
        raise SparsepackError(f"{f.what} applies only up to OpenSearch {fmt(f.until)}, the target is {fmt(version)}; drop that option")
