"""Render ML Commons and neural-search JSON bodies from Jinja templates, gated by the target OpenSearch version.

``render(name, manifest, target_version, **values) -> dict``. Templates ship as package data; a directory given as
``template_dir`` overrides any template by file name.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
from jinja2 import meta

from ..contract.limits import check_query_tokens
from ..contract.manifest import Manifest
from ..contract.naming import default_group_name
from ..errors import SparsepackError
from .versions import DEFAULT_TARGET, features_for, fmt, line_of, parse_version, require

CHUNK_SIZE = 10_000_000  # ML Commons' upload_chunk limit
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


def _environment(template_dir: str | Path | None) -> jinja2.Environment:
    loaders: list[jinja2.BaseLoader] = []
    if template_dir:
        if not Path(template_dir).is_dir():
            raise SparsepackError(f"--template-dir {template_dir} is not a directory")
        loaders.append(jinja2.FileSystemLoader(str(template_dir)))
    loaders.append(jinja2.FileSystemLoader(str(resources.files("sparsepack") / "templates")))
    env = jinja2.Environment(
        loader=jinja2.ChoiceLoader(loaders),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
    )
    env.filters["drop_none"] = lambda mapping: {k: v for k, v in mapping.items() if v is not None}
    return env


def template_variables(name: str, template_dir: str | Path | None = None) -> list[str]:
    env = _environment(template_dir)
    source = env.loader.get_source(env, f"{name}.json.j2")[0]
    tree = env.parse(source)
    # A {% set %} inside an {% if %} counts as undeclared for jinja's meta; it is the template's own, not an input.
    assigned = {a.target.name for a in tree.find_all(jinja2.nodes.Assign) if isinstance(a.target, jinja2.nodes.Name)}
    return sorted(meta.find_undeclared_variables(tree) - assigned)


def list_templates(template_dir: str | Path | None = None) -> list[dict]:
    return [
        {
            "name": n,
            "description": s.description,
            "variables": template_variables(n, template_dir),
            "defaults": {k: v for k, v in s.defaults.items() if v is not None},
        }
        for n, s in TEMPLATES.items()
    ]


def _pick_artifact(manifest: dict, role: str) -> dict:
    for art in manifest.get("artifacts", []):
        if art["role"] == role:
            return art
    roles = [a["role"] for a in manifest.get("artifacts", [])]
    raise SparsepackError(
        f"the manifest has no {role!r} artifact (it has {roles}); use role={roles[0] if roles else 'document'}"
    )


def render(
    name: str,
    manifest: Manifest | dict | None,
    target_version: str = DEFAULT_TARGET,
    template_dir: str | Path | None = None,
    **values: Any,
) -> dict:
    if name not in TEMPLATES:
        raise SparsepackError(f"unknown template {name!r}; `sparsepack render --list` shows {', '.join(TEMPLATES)}")
    spec = TEMPLATES[name]
    version = parse_version(target_version)
    for feature in spec.requires:
        require(feature, version)
    context: dict[str, Any] = {**spec.defaults, **values}
    for key, feature in spec.value_features.items():
        if context.get(key):
            require(feature, version)
    # the templates read the manifest as JSON data
    manifest = (manifest.to_dict() if isinstance(manifest, Manifest) else manifest) or {}
    if manifest.get("name"):
        context["model_name"] = context.get("model_name") or manifest["name"]
        context["group_name"] = context.get("group_name") or default_group_name(manifest["name"])
    context.setdefault("model_name", None)
    if context.get("model_description") is None and manifest:
        context["model_description"] = (
            f"{manifest['mode']} neural sparse model {manifest['name']} packaged by sparsepack"
        )
    if context.get("group_description") is None and "group_description" in context:
        context["group_description"] = "neural sparse models packaged by sparsepack"
    if spec.uses_artifact:
        if not manifest:
            raise SparsepackError(f"template {name} needs --manifest OUT/manifest.json")
        line = line_of(version)
        if line not in manifest.get("compatible_opensearch", []):
            raise SparsepackError(
                f"the package's TorchScript does not load on OpenSearch {line} "
                f"(compatible: {', '.join(manifest.get('compatible_opensearch', [])) or 'none'}); "
                f"re-package with eager attention or target another version"
            )
        art = _pick_artifact(manifest, context["role"])
        context["artifact"] = art
        context["total_chunks"] = max(1, math.ceil(art["size_bytes"] / CHUNK_SIZE))
    if name in ("index-mapping", "query"):
        _check_field_type(name, context, manifest, version)
    if name == "model-group":
        check_access_mode(context.get("access_mode"), context.get("backend_roles"))
    if name == "query":
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
    if name == "ingest-pipeline" and context.get("prune_type"):
        _check_prune(context["prune_type"], context["prune_ratio"])
    if name == "search-pipeline" and context.get("two_phase"):
        _check_prune(context.get("prune_type") or "max_ratio", context["two_phase_prune_ratio"])
        if float(context["expansion_rate"]) < 1 or int(context["max_window_size"]) < 50:
            raise SparsepackError(
                f"two-phase needs expansion_rate >= 1 and max_window_size >= 50, got "
                f"{context['expansion_rate']} and {context['max_window_size']}"
            )
    context["features"] = features_for(version)
    context["target_version"] = fmt(version)
    context["manifest"] = manifest
    declared = template_variables(name, template_dir)
    missing = [k for k in declared if k not in context] + [k for k in spec.required if context.get(k) is None]
    if missing:
        raise SparsepackError(f"template {name} needs {', '.join(missing)}; pass --set {missing[0]}=...")
    env = _environment(template_dir)
    try:
        text = env.get_template(f"{name}.json.j2").render(**context)
    except jinja2.UndefinedError as exc:
        raise SparsepackError(f"template {name}: {exc.message}; pass it with --set NAME=VALUE") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SparsepackError(
            f"template {name} rendered invalid JSON ({exc.msg} at line {exc.lineno}); fix the template"
        ) from exc


def _check_field_type(name: str, context: dict, manifest: dict, version: tuple[int, int]) -> None:
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


def _check_prune(prune_type: str, ratio: float) -> None:
    if prune_type not in _PRUNE_TYPES:
        raise SparsepackError(f"prune_type {prune_type!r} is unknown; use one of {', '.join(_PRUNE_TYPES)}")
    if prune_type == "top_k" and (float(ratio) < 1 or float(ratio) != int(float(ratio))):
        raise SparsepackError(f"prune_type top_k needs a positive integer prune_ratio, got {ratio}")
    if prune_type in ("max_ratio", "alpha_mass") and not 0 <= float(ratio) < 1:
        raise SparsepackError(f"prune_type {prune_type} needs prune_ratio in [0, 1), got {ratio}")


def parse_set_values(pairs: list[str]) -> dict[str, Any]:
    """``--set key=value``: values are JSON when they parse (numbers, true, {...}), else strings."""
    out = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise SparsepackError(f"--set {pair!r} is not KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def write_package_bodies(out_dir: Path, manifest: dict, target_version: str = DEFAULT_TARGET) -> None:
    """Next to each zip: its register-meta and model-config JSON for the default target; listed in the manifest."""
    if line_of(parse_version(target_version)) not in manifest["compatible_opensearch"]:
        return
    for art in manifest["artifacts"]:
        stem = art["file"].removesuffix(".zip")
        files = {}
        for template in ("register-meta", "model-config"):
            body = render(template, manifest, target_version, role=art["role"])
            path = out_dir / f"{stem}.{template}.json"
            path.write_text(json.dumps(body, indent=2) + "\n")
            files[template] = path.name
        art["bodies"] = {"target_version": target_version, **files}
