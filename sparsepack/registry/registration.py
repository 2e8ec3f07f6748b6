"""A package's artifacts into a model group, once across concurrent runs: each find-or-create holds a lease."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from . import artifact_url, lease, model_upload, models
from .connection import Cluster


def ensure_group_once(
    cluster: Cluster,
    coord: lease.Coordinator,
    name: str,
    version: str,
    created: models.Created,
    access_mode: str | None = None,
    backend_roles: list[str] | None = None,
) -> tuple[str, bool]:
    """Find or create the group under a lease: concurrent runs never create two groups of one name."""
    key = f"group:{name}"
    done = coord.acquire(
        key,
        "group",
        lambda gid: models.get_group(cluster, gid) is not None,
        f"creating model group {name!r}",
        group=name,
    )
    if done:
        return done, False
    group_id, new_group = models.ensure_group(cluster, name, version, created, access_mode, backend_roles)
    coord.finish(key, group_id)
    return group_id, new_group


def register_artifact(
    cluster: Cluster,
    coord: lease.Coordinator,
    manifest: dict,
    root: Path,
    art: dict,
    group_id: str,
    version: str,
    created: models.Created,
    timeout: float,
    base_url: str | None = None,
    progress: bool = True,
    on_stale_removed: Callable[[list[str]], None] = lambda ids: None,
) -> dict:
    """Find-or-register one artifact under its lease (held until the deploy step ends, see lease.py): uploaded in
    chunks, or from ``base_url`` when the package is hosted. Returns the model's record: ``model_id``, ``reused`` and
    the figures of the transfer. ``on_stale_removed`` hears of dead runs' uploads as soon as they are gone."""
    key = f"model:{group_id}:{art['sha256']}"
    t0 = time.perf_counter()

    def same_model(model_id: str) -> bool:
        model = models.get_model(cluster, model_id) or {}
        return model.get("model_state") in models.USABLE and model.get("model_content_hash_value") == art["sha256"]

    done = coord.acquire(
        key, "model", same_model, f"registering and deploying {art['file']}", group_id=group_id, sha256=art["sha256"]
    )
    if done:  # another run registered (and deployed) it while we waited
        return {"model_id": done, "reused": True, "waited_for_other_run_seconds": round(time.perf_counter() - t0, 3)}
    stale = models.stale_uploads(cluster, group_id, art["sha256"])
    for model_id in stale:  # a run that died mid-upload left these; they can never become REGISTERED
        models.delete(cluster, model_id, timeout)
    if stale:
        on_stale_removed(stale)
    existing = models.find_by_hash(cluster, group_id, art["sha256"])
    if existing:
        coord.note(key, result=existing["model_id"])
        return {"model_id": existing["model_id"], "reused": True}
    t0 = time.perf_counter()
    if base_url:
        url = artifact_url.artifact_url(base_url, art)
        model_id = artifact_url.register_from_url(cluster, manifest, art, url, group_id, version, created, timeout)
        coord.note(key, result=model_id)
        return {
            "model_id": model_id,
            "reused": False,
            "url": url,
            "register_seconds": round(time.perf_counter() - t0, 3),
        }
    model_id = model_upload.upload(cluster, manifest, root, art, group_id, version, created, timeout, progress)
    secs = time.perf_counter() - t0
    coord.note(key, result=model_id)
    return {
        "model_id": model_id,
        "reused": False,
        "upload_seconds": round(secs, 3),
        "upload_mb_per_s": round(art["size_bytes"] / 1e6 / max(secs, 1e-6), 2),
    }


def previous_versions(cluster: Cluster, group_id: str | None, current: set[str], in_flight: set[str]) -> list[str]:
    """The group's other models, except those another live release run is registering, deploying or using."""
    if not group_id:
        return []
    return sorted(
        m["model_id"]
        for m in models.models_in_group(cluster, group_id)
        if m["model_id"] not in current and m["model_id"] not in in_flight
    )
