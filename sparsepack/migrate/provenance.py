"""``_meta.sparsepack`` on the indices sparsepack creates or migrates: which models fill them, from which package, and
where a migration stands (its reindex task and change cutoffs), so a re-run continues instead of copying again."""

from __future__ import annotations

import datetime as dt

from ..registry import models
from ..registry.connection import Cluster
from ..registry.index_models import META_KEY, index_provenance, semantic_fields  # noqa: F401 - re-exported


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def model_facts(cluster: Cluster, model_id: str | None) -> dict:
    """What the cluster knows of a model: its name (the package's) and the sha256 of the registered artifact."""
    if not model_id:
        return {}
    model = models.get_model(cluster, model_id) or {}
    return {
        k: v
        for k, v in {
            "model_id": model_id,
            "name": model.get("name"),
            "version": model.get("model_version"),
            "artifact_sha256": model.get("model_content_hash_value"),
        }.items()
        if v
    }


def provenance(cluster: Cluster, document_model: str, query_model: str | None, migrated_from: str | None) -> dict:
    doc = model_facts(cluster, document_model)
    meta = {
        "package": doc.get("name"),
        "document_model": doc,
        "query_model": model_facts(cluster, query_model) if query_model and query_model != document_model else doc,
        "created_at": now(),
    }
    if migrated_from:
        meta["migrated_from"] = migrated_from
    return meta


def read_meta(cluster: Cluster, index: str) -> dict | None:
    """The index's ``_meta.sparsepack`` ({} when it has none), or None when the index does not exist."""
    res = cluster.call(f"GET /{index}/_mapping", cluster.client.indices.get_mapping, index=index, ok_404=True)
    if res is None:
        return None
    return ((res.get(index, {}).get("mappings") or {}).get("_meta") or {}).get(META_KEY) or {}


def write_meta(cluster: Cluster, index: str, meta: dict) -> None:
    """Replace ``_meta.sparsepack`` (other ``_meta`` keys the index has are kept)."""
    res = cluster.call(f"GET /{index}/_mapping", cluster.client.indices.get_mapping, index=index)
    whole = dict((res[index].get("mappings") or {}).get("_meta") or {})
    whole[META_KEY] = meta
    cluster.call(f"PUT /{index}/_mapping", cluster.client.indices.put_mapping, index=index, body={"_meta": whole})


def update_state(cluster: Cluster, index: str, **state) -> dict:
    """Merge ``state`` into ``_meta.sparsepack.migration``; returns the whole sparsepack meta."""
    meta = read_meta(cluster, index) or {}
    meta.setdefault("migration", {}).update(state)
    write_meta(cluster, index, meta)
    return meta
