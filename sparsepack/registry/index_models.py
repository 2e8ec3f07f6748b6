"""Which model's vectors an index holds: its ``_meta.sparsepack`` (written by sparsepack when it creates or migrates
an index), else the model its ``semantic`` field names. Read by ``list``, the switch and the migration."""

from __future__ import annotations

from collections.abc import Iterator

from .connection import Cluster

META_KEY = "sparsepack"


def semantic_fields(properties: dict | None, prefix: str = "") -> Iterator[tuple[str, dict]]:
    """(path, field mapping) of every ``semantic`` field, at any depth."""
    for name, spec in (properties or {}).items():
        if not isinstance(spec, dict):
            continue
        if spec.get("type") == "semantic":
            yield prefix + name, spec
        yield from semantic_fields(spec.get("properties"), f"{prefix}{name}.")


def recorded_models(mappings: dict) -> dict | None:
    """{"document_model_id", "query_model_id", "migrated_from", "package", "created_at", "source"} from one index's
    mappings, or None when they record no model."""
    meta = (mappings.get("_meta") or {}).get(META_KEY)
    if meta:
        return {
            "document_model_id": (meta.get("document_model") or {}).get("model_id"),
            "query_model_id": (meta.get("query_model") or {}).get("model_id"),
            "package": meta.get("package"),
            "migrated_from": meta.get("migrated_from"),
            "created_at": meta.get("created_at"),
            "source": "_meta",
        }
    fields = list(semantic_fields(mappings.get("properties")))
    if not fields:
        return None
    _, spec = fields[0]
    return {
        "document_model_id": spec.get("model_id"),
        "query_model_id": spec.get("search_model_id") or spec.get("model_id"),
        "package": None,
        "migrated_from": None,
        "created_at": None,
        "source": "semantic field",
    }


def index_provenance(cluster: Cluster, indices: str = "*,-.*") -> dict[str, dict]:
    """index -> :func:`recorded_models` for every index (of ``indices``) that records its models."""
    res = (
        cluster.call(
            f"GET /{indices}/_mapping",
            cluster.client.indices.get_mapping,
            index=indices,
            params={"expand_wildcards": "open,closed"},
            ok_404=True,
        )
        or {}
    )
    out = {}
    for index, entry in sorted(res.items()):
        recorded = recorded_models(entry.get("mappings") or {})
        if recorded:
            out[index] = recorded
    return out


def indices_by_model(recorded: dict[str, dict]) -> dict[str, list[str]]:
    """model id -> the indices whose document vectors it encoded, from :func:`index_provenance`."""
    out: dict[str, list[str]] = {}
    for index, facts in sorted(recorded.items()):
        if facts.get("document_model_id"):
            out.setdefault(facts["document_model_id"], []).append(index)
    return out
