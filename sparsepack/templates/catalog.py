"""The templates sparsepack ships: what each renders, its defaults, and the features it needs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .checks import SEISMIC_PARAMETERS


@dataclass(frozen=True)
class TemplateSpec:
    description: str
    defaults: dict[str, Any] = field(default_factory=dict)
    requires: tuple[str, ...] = ()  # features the template itself needs
    value_features: dict[str, str] = field(default_factory=dict)  # a truthy value -> feature it needs
    uses_artifact: bool = False  # picks one artifact of the manifest (role=document|query)
    required: tuple[str, ...] = ()  # variables that must not be None


_NAMES = {"model_name": None, "model_version": "1.0.0", "model_description": None}
TEMPLATES: dict[str, TemplateSpec] = {
    "model-group": TemplateSpec(
        "model group create body",
        {"group_name": None, "group_description": None, "access_mode": None, "backend_roles": None},
        required=("group_name",),
    ),
    "register-meta": TemplateSpec(
        "_register_meta body for chunked upload of one artifact",
        {**_NAMES, "role": "document", "model_group_id": None, "model_config_stub": False},
        required=("model_name",),
        value_features={"model_config_stub": "model_config_stub"},
        uses_artifact=True,
    ),
    "register-url": TemplateSpec(
        "_register body for an artifact served at a URL",
        {**_NAMES, "role": "document", "model_group_id": None, "url": None},
        uses_artifact=True,
        required=("model_name", "url"),
    ),
    "model-config": TemplateSpec(
        "model metadata file for opensearch-py-ml's MLCommonClient.register_model",
        {**_NAMES, "role": "document"},
        uses_artifact=True,
        required=("model_name",),
    ),
    "ingest-pipeline": TemplateSpec(
        "ingest pipeline with the sparse_encoding processor",
        {
            "pipeline_description": "sparse encoding by sparsepack",
            "text_field": "text",
            "embedding_field": "text_sparse",
            "chunk_field": "text_chunks",
            "chunking": False,
            "chunk_token_limit": 384,
            "chunk_overlap_rate": 0.2,
            "batch_size": None,
            "prune_type": None,
            "prune_ratio": 0.1,
            "skip_existing": False,
        },
        requires=("sparse_encoding_processor",),
        required=("model_id",),
        value_features={
            "chunking": "text_chunking",
            "batch_size": "ingest_batch_size",
            "prune_type": "ingest_prune",
            "skip_existing": "skip_existing",
        },
    ),
    "search-pipeline": TemplateSpec(
        "search pipeline: default model id and two-phase neural sparse search",
        {
            "pipeline_description": "neural sparse search by sparsepack",
            "two_phase": True,
            "prune_type": None,
            "two_phase_prune_ratio": 0.4,
            "expansion_rate": 5.0,
            "max_window_size": 10000,
        },
        requires=("neural_query_enricher",),
        required=("model_id",),
        value_features={"two_phase": "two_phase", "prune_type": "two_phase_prune_type"},
    ),
    "index-mapping": TemplateSpec(
        "index with a rank_features (or sparse_vector) field, or a semantic text field",
        {
            "text_field": "text",
            "embedding_field": "text_sparse",
            "chunk_field": "text_chunks",
            "chunking": False,
            "field_type": "rank_features",
            "ingest_pipeline": None,
            "search_pipeline": None,
            "shards": 1,
            "replicas": 0,
            "model_id": None,
            "search_model_id": None,
            # SEISMIC: None leaves the parameter out, so the server's default applies
            **{name: None for name in SEISMIC_PARAMETERS},
        },
        value_features={"chunking": "text_chunking"},
    ),
    "query": TemplateSpec(
        "neural_sparse search body (nested over the chunks when chunking=true)",
        {
            "embedding_field": "text_sparse",
            "query_text": None,
            "model_id": None,
            "analyzer": None,
            "query_tokens": None,
            "size": 10,
            "chunking": False,
            "score_mode": "max",
            "field_type": "rank_features",
            "method_parameters": None,
        },
        requires=("neural_sparse_query",),
        value_features={
            "analyzer": "analyzer",
            "query_tokens": "query_tokens",
            "chunking": "text_chunking",
            "method_parameters": "sparse_vector",
        },
    ),
    "cluster-settings": TemplateSpec(
        "persistent ML Commons settings for registering and deploying",
        {
            "only_run_on_ml_node": False,
            "native_memory_threshold": 95,
            "jvm_heap_memory_threshold": 95,
            "disk_free_space_threshold": "1gb",
            "allow_custom_deployment_plan": True,
            "allow_registering_model_via_url": False,
            "trusted_url_regex": None,
        },
    ),
}
