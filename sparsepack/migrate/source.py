"""The index an alias serves from, read once: its settings, mappings and the alias's own definition, and the write
patterns a carry-over could not reproduce, refused before anything is created."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import SparsepackError
from ..registry.connection import Cluster
from .errors import RefusedWritePattern

# Settings the server owns or that describe one physical index; never copied to the new one.
DROPPED_SETTINGS = (
    "index.uuid",
    "index.creation_date",
    "index.provided_name",
    "index.version.created",
    "index.version.upgraded",
    "index.blocks.",
    "index.routing.allocation.initial_recovery",
    "index.resize.",
    "index.verified_before_close",
    "index.history.uuid",
    "index.replication.type",
)


@dataclass
class SourceIndex:
    alias: str
    name: str
    settings: dict  # flat "index.*" keys
    mappings: dict
    alias_definition: dict = field(default_factory=dict)  # filter / routing / is_write_index of the alias on it

    @property
    def ingest_pipelines(self) -> dict[str, str]:
        """setting -> ingest pipeline name (default and final)."""
        return {
            k: v
            for k in ("index.default_pipeline", "index.final_pipeline")
            if (v := self.settings.get(k)) and v != "_none"
        }

    @property
    def search_pipeline(self) -> str | None:
        value = self.settings.get("index.search.default_pipeline")
        return value if value and value != "_none" else None

    @property
    def write_blocked(self) -> bool:
        return str(self.settings.get("index.blocks.write", "false")).lower() == "true"

    def copyable_settings(self) -> dict:
        return {
            k: v
            for k, v in self.settings.items()
            if not any(k == d or k.startswith(d) for d in DROPPED_SETTINGS) and k.startswith("index.")
        }


def resolve(cluster: Cluster, alias: str) -> SourceIndex:
    """The one index behind ``alias``; a bare index name or an alias over several indices is bad input."""
    res = cluster.call(f"GET /_alias/{alias}", cluster.client.indices.get_alias, name=alias, ok_404=True) or {}
    if not res:
        exists = cluster.call(f"HEAD /{alias}", cluster.client.indices.exists, index=alias)
        if exists:
            raise SparsepackError(
                f"{alias} is an index, not an alias; a migration moves an alias from the old index to the new one, so "
                f"give the index an alias, point your application at it, then migrate the alias: "
                f'POST _aliases {{"actions": [{{"add": {{"index": "{alias}", "alias": "{alias}-live"}}}}]}}'
            )
        raise SparsepackError(f"no alias or index is named {alias}; check the name (GET _cat/aliases)")
    indices = sorted(res)
    if len(indices) > 1:
        writers = [i for i in indices if (res[i]["aliases"][alias] or {}).get("is_write_index")]
        raise SparsepackError(
            f"alias {alias} points at {len(indices)} indices ({', '.join(indices)}"
            f"{'; write index ' + writers[0] if writers else ''}); migrate one alias per index"
        )
    name = indices[0]
    settings = cluster.call(
        f"GET /{name}/_settings", cluster.client.indices.get_settings, index=name, params={"flat_settings": "true"}
    )[name]["settings"]
    mappings = cluster.call(f"GET /{name}/_mapping", cluster.client.indices.get_mapping, index=name)[name]["mappings"]
    return SourceIndex(alias, name, settings, mappings, res[name]["aliases"][alias] or {})


def refuse_lossy_patterns(source: SourceIndex) -> None:
    """A reindex reads ``_source``: without all of it the copy would differ. The carry-over finds changes by
    ``_seq_no``, so it needs the write block a swap relies on to be liftable."""
    src = source.mappings.get("_source") or {}
    if src.get("enabled") is False:
        raise RefusedWritePattern(
            source.name,
            "_source is disabled, so a reindex cannot copy the documents; "
            "re-create it with _source enabled and re-ingest from your own store",
        )
    if src.get("includes") or src.get("excludes"):
        raise RefusedWritePattern(
            source.name,
            "_source keeps only some fields (includes/excludes), so a copy would drop "
            "the others; migrate from your own store instead",
        )
    if str(source.settings.get("index.blocks.read_only", "false")).lower() == "true":
        raise RefusedWritePattern(source.name, "the index is read-only (index.blocks.read_only); lift it first")
    if source.mappings.get("_routing", {}).get("required") and source.alias_definition.get("index_routing"):
        raise RefusedWritePattern(
            source.name,
            "the alias forces an index routing on an index that requires routing; the copy could not keep both",
        )
