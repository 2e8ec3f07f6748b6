"""Upload one packaged artifact into a model group: ``_register_meta``, then its chunks in order."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ClusterError
from ..templates import CHUNK_SIZE, render
from .connection import Cluster
from .models import BASE, USABLE, Created, get_model, is_group_version_conflict, models_in_group


def _register_meta_once(cluster: Cluster, body: dict, group_id: str, sha256: str) -> str:
    """A lost response must not become a second model: after a connection failure, look for the model the
    server may already have created before asking again."""
    from opensearchpy import exceptions as ex

    for attempt in range(cluster.opts.retries + 1):
        try:
            return cluster.call(
                f"POST {BASE}/models/_register_meta", cluster.ml.register_model_meta, body=body, retry=False
            )["model_id"]
        except ClusterError as exc:
            cause = exc.__cause__
            transient = (
                isinstance(cause, ex.ConnectionError)
                or exc.status in (429, 502, 503, 504)
                or is_group_version_conflict(exc)
            )
            if not transient or attempt == cluster.opts.retries:
                raise
            cluster.retried += 1
            found = _appears(
                cluster,
                lambda: next(
                    (
                        m["model_id"]
                        for m in models_in_group(cluster, group_id)
                        if m.get("model_content_hash_value") == sha256
                    ),
                    None,
                ),
            )
            if found:
                return found
            cluster.backoff(attempt)
    raise AssertionError("unreachable")


# A new model document becomes searchable after the index's refresh interval (1 s). Waiting that out through the ML
# search API replaces a refresh of the system index, which the security plugin refuses to a least-privilege user.
SEARCH_VISIBLE_SECONDS = 2.5


def _appears(cluster: Cluster, find):
    """``find()``'s result once it has one, or None after a refresh interval."""
    try:
        return cluster.wait_for(find, SEARCH_VISIBLE_SECONDS, "the model search to settle", interval=0.5)
    except ClusterError:
        return None


def _chunks(path: Path):
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK_SIZE):
            yield chunk


def upload(
    cluster: Cluster,
    manifest: dict,
    root: Path,
    artifact: dict,
    group_id: str,
    version: str,
    created: Created,
    timeout: float = 300.0,
    progress: bool = True,
) -> str:
    """``_register_meta`` then every chunk in order (the last one flips the model to REGISTERED)."""
    body = render(
        "register-meta",
        manifest,
        version,
        role=artifact["role"],
        model_group_id=group_id,
        model_name=f"{manifest['name']}-{artifact['role']}",
    )
    model_id = _register_meta_once(cluster, body, group_id, artifact["sha256"])
    created.model_ids.append(model_id)
    path = root / artifact["file"]
    bar = _bar(artifact["size_bytes"], f"upload {artifact['file']}", progress)
    try:
        for n, chunk in enumerate(_chunks(path)):
            cluster.call(
                f"POST {BASE}/models/{model_id}/upload_chunk/{n}",
                cluster.ml.upload_chunk,
                model_id=model_id,
                chunk_number=n,
                body=chunk,
            )
            if bar:
                bar.update(len(chunk))
    finally:
        if bar:
            bar.close()
    cluster.wait_for(
        lambda: (get_model(cluster, model_id) or {}).get("model_state") in USABLE,
        timeout,
        f"model {model_id} to become REGISTERED",
    )
    return model_id


def _bar(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(
        total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr, leave=False, disable=not sys.stderr.isatty()
    )
