"""Coordination of concurrent release runs on the cluster itself: leases in the small index ``sparsepack-leases``.

A lease is a document whose id is derived from what it guards (``group:<name>``, ``model:<group id>:<sha256>``). The
first run creates it with ``op_type=create``; the cluster lets exactly one create succeed, the others get 409 and wait.
The holder records its result (the group id, the model id) and marks the lease ``done``; a waiter that then finds a
``done`` lease whose result still exists reuses it instead of uploading a copy.

Crashes: the holder renews its leases every ``ttl/3`` seconds from a heartbeat thread (so a slow upload or deploy keeps
them). A waiter judges expiry on its *own* monotonic clock: a lease whose version (``_seq_no``) has not changed for
``ttl`` seconds belongs to a dead run, whatever the holders' wall clocks say. Takeover is a conditional write
(``if_seq_no``/``if_primary_term``), so of several waiters exactly one wins.

Protection (used by ``--clear-previous``): each run also keeps a ``run`` document naming the models it uses; a model is
*in flight* while a live (unexpired) run document names it, or while a live ``model`` lease is registering or deploying
a model with its sha256. :func:`models_in_flight` returns them; nothing may delete those.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable

from ..errors import ClusterError, SparsepackError
from .connection import Cluster

INDEX = "sparsepack-leases"
TTL_ENV = "SPARSEPACK_LEASE_TTL"
DEFAULT_TTL = 60.0
MAX_TTL = 120.0
# Index permissions a release user needs on INDEX (security plugin), listed in docs/secured-clusters.md.
INDEX_PERMISSIONS = (
    "indices:admin/create",
    "indices:admin/refresh*",
    "indices:data/read/get",
    "indices:data/read/search",
    "indices:data/write/index",
    "indices:data/write/delete",
    "indices:data/write/bulk*",
)

MAPPING = {
    "dynamic": False,
    "properties": {
        "key": {"type": "keyword"},
        "kind": {"type": "keyword"},
        "owner": {"type": "keyword"},
        "state": {"type": "keyword"},
        "group": {"type": "keyword"},
        "group_id": {"type": "keyword"},
        "sha256": {"type": "keyword"},
        "result": {"type": "keyword"},
        "model_ids": {"type": "keyword"},
        "expires_at": {"type": "long"},
        "ttl_s": {"type": "float"},
    },
}


def lease_ttl(value: float | None = None) -> float:
    """The lease TTL in seconds: ``value``, else $SPARSEPACK_LEASE_TTL, else 60; at most 120."""
    raw = value if value is not None else os.environ.get(TTL_ENV) or DEFAULT_TTL
    try:
        ttl = float(raw)
    except ValueError:
        raise SparsepackError(f"{TTL_ENV}={raw!r} is not a number of seconds; set it to e.g. 60") from None
    if not 1 <= ttl <= MAX_TTL:
        raise SparsepackError(f"lease TTL {ttl:g}s is outside 1..{MAX_TTL:g}s; set {TTL_ENV} within that range")
    return ttl


def doc_id(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:40]


def _forbidden() -> ClusterError:
    return ClusterError(
        f"this user may not use the coordination index {INDEX} (403): grant the release role "
        f"{', '.join(INDEX_PERMISSIONS)} on {INDEX}, and the cluster permission indices:data/write/bulk "
        f"(the security plugin checks a single-document write as a bulk; docs/secured-clusters.md)"
    )


def _now_ms() -> int:
    return int(time.time() * 1000)


class Coordinator:
    """One release run's leases. ``close()`` stops the heartbeat and frees whatever is still held."""

    def __init__(self, cluster: Cluster, timeout: float, ttl: float | None = None):
        self.cluster = cluster
        self.timeout = timeout
        self.ttl = lease_ttl(ttl)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.took_over: list[str] = []  # owners of expired leases this run took over
        self._held: dict[str, tuple[int, int, dict]] = {}  # doc id -> (seq_no, primary_term, body)
        self.lost: list[str] = []  # leases another run took over from this one
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._index_ready = False

    # -- index ------------------------------------------------------------------------------------------------------
    def _ensure_index(self) -> None:
        if self._index_ready:
            return
        try:
            self.cluster.call(
                f"PUT /{INDEX}",
                self.cluster.client.indices.create,
                index=INDEX,
                body={
                    "settings": {"index": {"number_of_shards": 1, "auto_expand_replicas": "0-1"}},
                    "mappings": MAPPING,
                },
            )
        except ClusterError as exc:  # it exists (another run created it), or an admin manages it for us
            if exc.status != 403 and "already exists" not in str(exc) and "resource_already_exists" not in str(exc):
                raise
        self._index_ready = True

    # -- conditional writes -----------------------------------------------------------------------------------------
    def _body(self, key: str, kind: str, **fields) -> dict:
        return {
            "key": key,
            "kind": kind,
            "owner": self.owner,
            "state": "held",
            "ttl_s": self.ttl,
            "expires_at": _now_ms() + int(self.ttl * 1000),
            **fields,
        }

    def _write(self, did: str, body: dict, version: tuple[int, int] | None) -> bool:
        """Create (version None) or conditionally overwrite; False when another run got there first (409)."""
        try:
            if version is None:
                res = self.cluster.call(
                    f"PUT /{INDEX}/_create/{did}", self.cluster.client.create, index=INDEX, id=did, body=body
                )
            else:
                res = self.cluster.call(
                    f"PUT /{INDEX}/_doc/{did}",
                    self.cluster.client.index,
                    index=INDEX,
                    id=did,
                    body=body,
                    params={"if_seq_no": version[0], "if_primary_term": version[1]},
                )
        except ClusterError as exc:
            if exc.status == 403:
                raise _forbidden() from exc
            if exc.status != 409:
                raise
            # 409 also answers the retry of a write that landed but whose response was lost: is it ours?
            res = _get(self.cluster, did) or {}
            mine = res.get("_source", {})
            if not (mine.get("owner") == self.owner and mine.get("expires_at") == body["expires_at"]):
                return False
        with self._lock:
            if body.get("state") == "held":
                self._held[did] = (res["_seq_no"], res["_primary_term"], body)
            else:
                self._held.pop(did, None)
        self._start_heartbeat()
        return True

    def _update(self, did: str, **fields) -> None:
        """Conditional rewrite of a held lease. A lease lost to a taker (this run went ttl without renewing) is only
        recorded, not raised: the taker either reuses this run's finished model (find by sha256) or deleted its
        unfinished upload as stale, which fails this run's upload with its own error."""
        with self._lock:
            if did not in self._held:
                return
            seq, term, body = self._held[did]
            body = {**body, **fields, "expires_at": _now_ms() + int(self.ttl * 1000)}
            if not self._write(did, body, (seq, term)):
                self._held.pop(did, None)
                self.lost.append(did)

    # -- acquire / finish -------------------------------------------------------------------------------------------
    def acquire(self, key: str, kind: str, usable: Callable[[str], bool], what: str, **fields) -> str | None:
        """Block until this run holds ``key`` (returns None: do the work, then :meth:`finish`), or until a finished
        run's recorded result that ``usable`` accepts is there (returns it: reuse it). Bounded by the timeout."""
        self._ensure_index()
        did = doc_id(key)
        first_seen: dict[tuple[int, int], float] = {}
        body = self._body(key, kind, **fields)

        def attempt():
            if self._write(did, body, None):
                return ("held",)
            doc = _get(self.cluster, did)
            if not doc or not doc.get("found"):
                return None  # freed between our create and our read: try to create again
            src, version = doc["_source"], (doc["_seq_no"], doc["_primary_term"])
            if src.get("state") == "done":
                if src.get("result") and usable(src["result"]):
                    return ("reuse", src["result"])
                return ("held",) if self._write(did, body, version) else None  # its result is gone: redo the work
            # held by another run: expired once its version stayed the same for its ttl on our own clock
            seen = first_seen.setdefault(version, time.monotonic())
            if time.monotonic() - seen >= float(src.get("ttl_s") or self.ttl) and self._write(did, body, version):
                self.took_over.append(src.get("owner", "?"))
                return ("held",)
            return None

        outcome = self.cluster.wait_for(
            attempt,
            self.timeout,
            f"another release run to finish {what} (lease {key!r} in index {INDEX})",
            interval=0.5,
        )
        return outcome[1] if outcome[0] == "reuse" else None

    def note(self, key: str, **fields) -> None:
        """Record progress (e.g. the model id once known) on a lease this run holds."""
        self._update(doc_id(key), **fields)

    def finish(self, key: str, result: str) -> None:
        """Mark ``key`` done with its result; waiters reuse it from now on."""
        self._update(doc_id(key), state="done", result=result)

    def finish_all(self) -> None:
        """Mark every held group/model lease done with the result noted on it (after the deploy step)."""
        with self._lock:
            pending = [
                (did, body["result"])
                for did, (_, _, body) in self._held.items()
                if body.get("kind") != "run" and body.get("result")
            ]
        for did, result in pending:
            self._update(did, state="done", result=result)

    def claim(self, group_id: str, model_ids: Iterable[str]) -> None:
        """This run uses these models until it closes: :func:`models_in_flight` reports them to other runs."""
        self._ensure_index()
        key = f"run:{self.owner}"
        did = doc_id(key)
        ids = sorted(set(model_ids))
        with self._lock:
            if did in self._held:
                self._update(did, group_id=group_id, model_ids=ids)
                return
        self._write(did, self._body(key, "run", group_id=group_id, model_ids=ids), None)

    def models_in_flight(self, group_id: str) -> set[str]:
        """Models other live runs are registering, deploying or using in the group."""
        return models_in_flight(self.cluster, group_id, exclude_owner=self.owner)

    def group_in_use(self, group_id: str) -> bool:
        """Whether another live run works in the group; False when the cluster cannot tell (used on failure paths)."""
        try:
            return group_in_use(self.cluster, group_id, exclude_owner=self.owner)
        except ClusterError:
            return False

    # -- heartbeat / close ------------------------------------------------------------------------------------------
    def _start_heartbeat(self) -> None:
        if self._thread is None and self._held:
            self._thread = threading.Thread(target=self._heartbeat, name="sparsepack-lease-heartbeat", daemon=True)
            self._thread.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.ttl / 3):
            with self._lock:
                held = list(self._held)
            for did in held:
                try:
                    self._update(did)
                except ClusterError:
                    pass  # the cluster hiccupped: the next beat tries again, well within the ttl

    def close(self) -> None:
        """Stop renewing and delete every lease still held (a failed run frees them at once; waiters redo the work)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        with self._lock:
            held, self._held = self._held, {}
        for did, (seq, term, _) in held.items():
            try:
                self.cluster.call(
                    f"DELETE /{INDEX}/_doc/{did}",
                    self.cluster.client.delete,
                    index=INDEX,
                    id=did,
                    params={"if_seq_no": seq, "if_primary_term": term},
                    ok_404=True,
                )
            except ClusterError:
                pass  # taken over meanwhile, or unreachable: it expires after the ttl anyway


def _get(cluster: Cluster, did: str) -> dict | None:
    return cluster.call(f"GET /{INDEX}/_doc/{did}", cluster.client.get, index=INDEX, id=did, ok_404=True)


def _live_docs(cluster: Cluster, group_id: str, exclude_owner: str | None) -> list[dict]:
    """Unexpired held leases and run documents of the group, other than ``exclude_owner``'s. "Unexpired" allows one
    extra ttl for clock skew between runners: when in doubt, a model or group counts as in use."""
    if cluster.call(f"POST /{INDEX}/_refresh", cluster.client.indices.refresh, index=INDEX, ok_404=True) is None:
        return []
    body = {
        "size": 1000,
        "query": {"bool": {"filter": [{"term": {"group_id": group_id}}, {"term": {"state": "held"}}]}},
    }
    found = cluster.call(f"POST /{INDEX}/_search", cluster.client.search, index=INDEX, body=body, ok_404=True) or {}
    hits = found.get("hits", {}).get("hits", [])
    now = _now_ms()
    return [
        h["_source"] for h in hits if h["_source"].get("owner") != exclude_owner and not _expired(h["_source"], now)
    ]


def _expired(src: dict, now_ms: int) -> bool:
    """Past its expiry by one more ttl (clock skew between runners): its holder stopped renewing it, a dead run."""
    return src.get("expires_at", 0) + float(src.get("ttl_s") or MAX_TTL) * 1000 < now_ms


def expired_leases(cluster: Cluster) -> list[dict]:
    """Held leases and run documents whose holder stopped renewing them (``_id`` added): left by runs that died.
    The next run that needs one takes it over after its ttl; until then it holds nothing up but that run's wait."""
    if cluster.call(f"POST /{INDEX}/_refresh", cluster.client.indices.refresh, index=INDEX, ok_404=True) is None:
        return []
    body = {"size": 1000, "query": {"term": {"state": "held"}}}
    found = cluster.call(f"POST /{INDEX}/_search", cluster.client.search, index=INDEX, body=body, ok_404=True) or {}
    now = _now_ms()
    return [
        {**h["_source"], "_id": h["_id"]} for h in found.get("hits", {}).get("hits", []) if _expired(h["_source"], now)
    ]


def group_in_use(cluster: Cluster, group_id: str, exclude_owner: str | None = None) -> bool:
    """Whether another live run works in the group (a failed run that created it must not roll it back then)."""
    return bool(_live_docs(cluster, group_id, exclude_owner))


def models_in_flight(cluster: Cluster, group_id: str, exclude_owner: str | None = None) -> set[str]:
    """Model ids in ``group_id`` that another live release run is registering, deploying or using: named by an
    unexpired ``run`` document, or matching the sha256 of an unexpired held ``model`` lease (its upload may not have a
    model id yet)."""
    ids: set[str] = set()
    hashes: set[str] = set()
    for src in _live_docs(cluster, group_id, exclude_owner):
        ids.update(src.get("model_ids") or [])
        if src.get("result"):
            ids.add(src["result"])
        if src.get("kind") == "model" and src.get("sha256"):
            hashes.add(src["sha256"])
    if hashes:
        from .models import models_in_group

        ids.update(
            m["model_id"] for m in models_in_group(cluster, group_id) if m.get("model_content_hash_value") in hashes
        )
    return ids
