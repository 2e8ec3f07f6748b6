"""Exactly what changed in an index since a point: every write gets a per-shard ``_seq_no``, so the documents whose
``_seq_no`` is above the shard's local checkpoint taken at that point are the new and updated ones, and the ids the
destination holds beyond the source's are the deleted ones. Carried over by ``_reindex`` of those ids (through the
destination's pipeline) and a bulk delete."""

from __future__ import annotations

from typing import Any

from ..registry.connection import Cluster
from .errors import MigrationError

PAGE = 5000
CARRY_BATCH = 2000


def checkpoints(cluster: Cluster, index: str) -> dict[str, int]:
    """shard -> the primary's local checkpoint: every write at or below it is in Lucene, so a refresh taken after this
    call makes them all visible to a copy; any later write has a higher ``_seq_no`` on its shard."""
    res = cluster.call(
        f"GET /{index}/_stats", cluster.client.indices.stats, index=index, metric="docs", params={"level": "shards"}
    )
    shards = res["indices"][index]["shards"]
    out = {}
    for shard, copies in shards.items():
        primary = next((c for c in copies if (c.get("routing") or {}).get("primary")), None)
        if primary is None or "seq_no" not in primary:
            raise MigrationError(
                f"{index} shard {shard} has no started primary to read a checkpoint from; wait for the "
                f"cluster to be green or yellow and re-run",
                "checkpoint",
            )
        out[shard] = int(primary["seq_no"]["local_checkpoint"])
    return out


def refresh(cluster: Cluster, index: str) -> None:
    cluster.call(f"POST /{index}/_refresh", cluster.client.indices.refresh, index=index)


def scan(cluster: Cluster, index: str, query: dict, preference: str | None = None, source: bool | list = False):
    """Every hit of ``query`` (ids and routing; ``source`` fields too), through a scroll."""
    params = {"scroll": "2m", "size": str(PAGE)}
    if preference:
        params["preference"] = preference
    body = {"query": query, "_source": source, "sort": ["_doc"]}
    params["search_pipeline"] = "_none"
    res = cluster.call(f"POST /{index}/_search", cluster.client.search, index=index, body=body, params=params)
    scroll_id = res.get("_scroll_id")
    try:
        while res["hits"]["hits"]:
            yield from res["hits"]["hits"]
            res = cluster.call(
                "POST /_search/scroll", cluster.client.scroll, body={"scroll": "2m", "scroll_id": scroll_id}
            )
            scroll_id = res.get("_scroll_id", scroll_id)
    finally:
        if scroll_id:
            cluster.call(
                "DELETE /_search/scroll", cluster.client.clear_scroll, body={"scroll_id": scroll_id}, ok_404=True
            )


def changed_since(cluster: Cluster, index: str, cutoff: dict[str, int]) -> list[str]:
    """Ids of the documents written (created or updated) on each shard after its cutoff."""
    ids = []
    for shard, seq in cutoff.items():
        query = {"range": {"_seq_no": {"gt": seq}}}
        ids += [hit["_id"] for hit in scan(cluster, index, query, preference=f"_shards:{shard}")]
    return ids


def all_ids(cluster: Cluster, index: str) -> dict[str, str | None]:
    """id -> routing of every document."""
    return {hit["_id"]: hit.get("_routing") for hit in scan(cluster, index, {"match_all": {}})}


def count(cluster: Cluster, index: str) -> int:
    return cluster.call(f"GET /{index}/_count", cluster.client.count, index=index)["count"]


def copy_ids(
    cluster: Cluster, source: str, dest: str, ids: list[str], pipeline: str | None, exclude: list[str] | tuple = ()
) -> int:
    """Overwrite ``ids`` in ``dest`` with their current version from ``source`` (through ``pipeline``), without the
    ``exclude`` _source fields (those ``dest`` derives again)."""
    done = 0
    for start in range(0, len(ids), CARRY_BATCH):
        batch = ids[start : start + CARRY_BATCH]
        body: dict[str, Any] = {
            "source": {"index": source, "query": {"ids": {"values": batch}}, "size": 1000},
            "dest": {"index": dest, "op_type": "index"},
        }
        if pipeline:
            body["dest"]["pipeline"] = pipeline
        if exclude:
            body["source"]["_source"] = {"excludes": list(exclude)}
        res = cluster.call(
            "POST /_reindex",
            cluster.client.reindex,
            body=body,
            params={"wait_for_completion": "true", "refresh": "false"},
            retry=False,
        )
        failures = res.get("failures") or []
        if failures:
            detail = "; ".join(f"{f.get('id')}: {(f.get('cause') or {}).get('reason')}" for f in failures[:10])
            raise MigrationError(
                f"carrying {len(failures)} changed document(s) to {dest} failed: {detail}",
                "carry_over",
                details={"failures": failures},
            )
        done += res.get("created", 0) + res.get("updated", 0)
    return done


def delete_ids(cluster: Cluster, index: str, ids: dict[str, str | None]) -> int:
    """Bulk delete (``ids``: id -> routing)."""
    if not ids:
        return 0
    lines = []
    for doc_id, routing in ids.items():
        action = {"_index": index, "_id": doc_id}
        if routing is not None:
            action["routing"] = routing
        lines.append({"delete": action})
    res = cluster.call("POST /_bulk", cluster.client.bulk, body=lines, params={"refresh": "false"}, retry=False)
    bad = [
        i["delete"]
        for i in res.get("items", [])
        if i["delete"].get("status", 200) >= 300 and i["delete"].get("status") != 404
    ]
    if bad:
        raise MigrationError(
            f"deleting {len(bad)} document(s) from {index} failed: {bad[0].get('error')}", "carry_over"
        )
    return len(ids)


def carry_over(
    cluster: Cluster,
    source: str,
    dest: str,
    cutoff: dict[str, int],
    pipeline: str | None,
    full_diff: bool,
    exclude: list[str] | tuple = (),
) -> dict:
    """Make ``dest`` hold what ``source`` holds now, given that it held ``source``'s state as of ``cutoff``.
    ``full_diff`` compares every id (finds deletions whatever their time); else ids are compared only when the counts
    say a document was deleted since ``cutoff``. The caller refreshed ``source`` after taking ``cutoff``."""
    changed = changed_since(cluster, source, cutoff)
    copied = copy_ids(cluster, source, dest, changed, pipeline, exclude)
    refresh(cluster, dest)
    deleted = 0
    extra = count(cluster, dest) - count(cluster, source)
    if full_diff or extra != 0:
        src_ids, dest_ids = all_ids(cluster, source), all_ids(cluster, dest)
        gone = {i: r for i, r in dest_ids.items() if i not in src_ids}
        missing = [i for i in src_ids if i not in dest_ids]
        deleted = delete_ids(cluster, dest, gone)
        copied += copy_ids(cluster, source, dest, missing, pipeline, exclude)
        refresh(cluster, dest)
    return {"changed": len(changed), "copied": copied, "deleted": deleted}
