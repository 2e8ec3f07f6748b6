"""The write block and the one ``_aliases`` call that moves the alias (and back)."""

from __future__ import annotations

from ..registry.connection import Cluster

ALIAS_KEYS = ("filter", "index_routing", "search_routing", "routing", "is_hidden")


def set_write_block(cluster: Cluster, index: str, blocked: bool) -> None:
    cluster.call(
        f"PUT /{index}/_settings",
        cluster.client.indices.put_settings,
        index=index,
        body={"index.blocks.write": True if blocked else None},
    )


def move_alias(cluster: Cluster, alias: str, from_index: str, to_index: str, definition: dict) -> None:
    """Remove from one, add to the other as its write index, in one atomic call; the alias keeps its filter and
    routing."""
    add = {"index": to_index, "alias": alias, "is_write_index": True}
    add.update({k: v for k, v in definition.items() if k in ALIAS_KEYS})
    cluster.call(
        "POST /_aliases",
        cluster.client.indices.update_aliases,
        body={"actions": [{"remove": {"index": from_index, "alias": alias}}, {"add": add}]},
        retry=False,
    )


def alias_target(cluster: Cluster, alias: str) -> list[str]:
    res = cluster.call(f"GET /_alias/{alias}", cluster.client.indices.get_alias, name=alias, ok_404=True) or {}
    return sorted(res)
