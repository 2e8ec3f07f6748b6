"""The node package's own HTTP calls to a local cluster (urllib, admin over verified TLS on a secured node): health
probes and settings. The registry's client is for releases; node/ sits beside it and does not borrow it."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from .secure import Access


def http_json(
    url: str, method: str = "GET", body: dict | None = None, timeout: float = 10.0, access: Access | None = None
):
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json", **(access.headers() if access else {})}
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=timeout, context=access.context() if access else None) as resp:
        return json.loads(resp.read() or b"null")


def cluster_health(url: str, access: Access | None = None) -> dict | None:
    """``_cluster/health``, or None while the node does not answer (not up yet, stopping, TLS not ready)."""
    try:
        return http_json(f"{url}/_cluster/health", timeout=3, access=access)
    except (urllib.error.URLError, OSError, ValueError):
        return None


def is_healthy(url: str, nodes: int = 1, access: Access | None = None) -> bool:
    health = cluster_health(url, access) or {}
    return health.get("status") in ("green", "yellow") and health.get("number_of_nodes", 0) >= nodes
