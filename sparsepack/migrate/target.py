"""The new index beside the old: its name, copies of the pipelines the old one runs with every model id switched to
the new model, semantic fields switched too, settings and mappings copied. Nothing the old index uses is modified."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..errors import SparsepackError
from ..registry import references
from ..registry.connection import Cluster
from ..registry.references import model_ids_in, rewrite_model_ids
from .provenance import META_KEY, semantic_fields
from .source import SourceIndex
from .verify import vector_fields


def short_id(model_id: str) -> str:
    """The model id as an index-name suffix: lowercase, [a-z0-9_-], 8 characters."""
    return re.sub(r"[^a-z0-9_-]", "", model_id.lower())[:8] or "model"


@dataclass
class TargetPlan:
    index: str
    document_model: str
    query_model: str
    settings: dict
    mappings: dict
    ingest_copies: dict[str, tuple[str, dict]] = field(default_factory=dict)  # old name -> (new name, body)
    search_copies: dict[str, tuple[str, dict]] = field(default_factory=dict)
    replaced_models: set[str] = field(default_factory=set)  # model ids the old index used, switched in the copies

    @property
    def pipelines(self) -> dict:
        return {
            "ingest": {o: n for o, (n, _) in self.ingest_copies.items()},
            "search": {o: n for o, (n, _) in self.search_copies.items()},
        }


def regenerated_fields(mappings: dict, ingest_bodies: Iterable[dict] = ()) -> list[str]:
    """What the destination writes again, left out of every copy: each semantic field's ``<field>_semantic_info``
    (the embedding and the model that made it) and each ``sparse_encoding`` output of ``ingest_bodies`` (the
    pipelines the documents are copied through). neural-search (3.6.0) unflattens every key of an incoming document,
    so a stored vector whose token holds a dot (".", "..." in a BERT vocabulary) is refused on re-ingest ("Field name
    '...' contains invalid dot usage"), and the new model writes these fields again from the text anyway."""
    out = [f"{path}_semantic_info" for path, _ in semantic_fields(mappings.get("properties"))]
    for body in ingest_bodies:
        out += [dst for _, dst, _ in vector_fields(body, {}) if dst not in out]
    return out


def plan(
    cluster: Cluster, source: SourceIndex, document_model: str, query_model: str, new_index: str | None
) -> TargetPlan:
    suffix = short_id(document_model)
    index = new_index or f"{source.alias}-{suffix}"
    if index == source.name:
        raise SparsepackError(
            f"the new index name {index} is the index {source.alias} already serves from; name another with --new-index"
        )
    ingest_all, search_all = references.ingest_pipelines(cluster), references.search_pipelines(cluster)
    settings = source.copyable_settings()
    target = TargetPlan(index, document_model, query_model, settings, copy.deepcopy(source.mappings))
    for setting, name in source.ingest_pipelines.items():
        body = ingest_all.get(name)
        if body is None:
            raise SparsepackError(
                f"{source.name} names ingest pipeline {name} ({setting}) and none exists; fix the index setting first"
            )
        for called in references.called_pipelines(body):
            if model_ids_in(ingest_all.get(called, {})):
                raise SparsepackError(
                    f"ingest pipeline {name} calls pipeline {called}, which names a model; "
                    f"inline it so the copy can switch the model"
                )
        used = model_ids_in(body)
        if used:
            copy_name = f"{name}-{suffix}"
            target.ingest_copies[name] = (copy_name, rewrite_model_ids(body, lambda m: document_model))
            settings[setting] = copy_name
            target.replaced_models |= used
    search_name = source.search_pipeline
    if search_name:
        body = search_all.get(search_name)
        if body is None:
            raise SparsepackError(
                f"{source.name} names search pipeline {search_name} and none exists; fix the index setting first"
            )
        used = model_ids_in(body)
        if used:
            copy_name = f"{search_name}-{suffix}"
            target.search_copies[search_name] = (copy_name, rewrite_model_ids(body, lambda m: query_model))
            settings["index.search.default_pipeline"] = copy_name
            target.replaced_models |= used
    for _, spec in semantic_fields(target.mappings.get("properties")):
        target.replaced_models |= {spec["model_id"]} if spec.get("model_id") else set()
        spec["model_id"] = document_model
        if spec.get("search_model_id") or query_model != document_model:
            target.replaced_models |= {spec["search_model_id"]} if spec.get("search_model_id") else set()
            spec["search_model_id"] = query_model
    target.replaced_models.discard(None)
    if not target.replaced_models:
        raise SparsepackError(
            f"{source.name} uses no model (no pipeline or semantic field names one); nothing to migrate"
        )
    (target.mappings.get("_meta") or {}).pop(META_KEY, None)
    return target


def create(cluster: Cluster, target: TargetPlan, meta: dict) -> None:
    """Pipelines first (the index names them), then the index with ``_meta.sparsepack`` already in place."""
    for copy_name, body in target.ingest_copies.values():
        cluster.call(f"PUT /_ingest/pipeline/{copy_name}", cluster.client.ingest.put_pipeline, id=copy_name, body=body)
    for copy_name, body in target.search_copies.values():
        cluster.call(f"PUT /_search/pipeline/{copy_name}", cluster.client.search_pipeline.put, id=copy_name, body=body)
    mappings = copy.deepcopy(target.mappings)
    mappings.setdefault("_meta", {})[META_KEY] = meta
    body = {"settings": target.settings, "mappings": mappings}
    cluster.call(f"PUT /{target.index}", cluster.client.indices.create, index=target.index, body=body)


def remove(cluster: Cluster, target_index: str, pipelines: dict) -> None:
    """--cleanup: the new index and the pipeline copies made for it."""
    cluster.call(f"DELETE /{target_index}", cluster.client.indices.delete, index=target_index, ok_404=True)
    for name in pipelines.get("ingest", {}).values():
        cluster.call(f"DELETE /_ingest/pipeline/{name}", cluster.client.ingest.delete_pipeline, id=name, ok_404=True)
    for name in pipelines.get("search", {}).values():
        cluster.call(f"DELETE /_search/pipeline/{name}", cluster.client.search_pipeline.delete, id=name, ok_404=True)
