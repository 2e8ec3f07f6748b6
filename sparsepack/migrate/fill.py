"""Fill the new index on the cluster: one ``_reindex`` task through the new pipeline, its id recorded in the new
index's ``_meta`` before it is polled, so an interrupted run (Ctrl-C, SIGTERM) is continued by the next, never doubled."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from ..registry.connection import Cluster
from . import provenance
from .errors import MigrationError

POLL_SECONDS = 1.0


def start_or_resume(
    cluster: Cluster,
    source: str,
    dest: str,
    pipeline: str | None,
    slices: str | int,
    requests_per_second: float | None,
    exclude: list[str] | tuple[str, ...] = (),
) -> tuple[str, bool]:
    """(task id, resumed). A task already recorded for ``dest`` (running or finished) is resumed; one started by a run
    that died before recording it is found by its description; only then is a new one started. ``exclude``: _source
    fields not copied (what the destination derives again, target.regenerated_fields)."""
    state = (provenance.read_meta(cluster, dest) or {}).get("migration", {})
    if state.get("task_id"):
        return state["task_id"], True
    found = running_task_for(cluster, dest)
    if found:
        provenance.update_state(cluster, dest, task_id=found)
        return found, True
    body: dict[str, Any] = {
        "source": {"index": source},
        "dest": {"index": dest, "op_type": "create"},
        "conflicts": "proceed",
    }
    if pipeline:
        body["dest"]["pipeline"] = pipeline
    if exclude:
        body["source"]["_source"] = {"excludes": list(exclude)}
    params = {"wait_for_completion": "false", "slices": str(slices), "refresh": "true"}
    if requests_per_second:
        params["requests_per_second"] = str(requests_per_second)
    res = cluster.call("POST /_reindex", cluster.client.reindex, body=body, params=params, retry=False)
    task_id = res["task"]
    provenance.update_state(cluster, dest, task_id=task_id, task_started_at=provenance.now())
    return task_id, False


def running_task_for(cluster: Cluster, dest: str) -> str | None:
    res = cluster.call("GET /_tasks", cluster.client.tasks.list, params={"actions": "*reindex", "detailed": "true"})
    for node in (res.get("nodes") or {}).values():
        for task_id, task in (node.get("tasks") or {}).items():
            if task.get("parent_task_id"):
                continue  # a slice; its parent is the one recorded
            if f"to [{dest}]" in (task.get("description") or ""):
                return task_id
    return None


def wait(cluster: Cluster, task_id: str, timeout: float, log: Callable[[str], None] | None) -> dict:
    """Poll the task to its end, reporting docs done, docs/s and ETA; return its response. Failures are raised, each
    document's cause in the server's words."""
    deadline = time.monotonic() + timeout
    bar = _Progress(log)
    while True:
        res = cluster.call(f"GET /_tasks/{task_id}", cluster.client.tasks.get, task_id=task_id, ok_404=True)
        if res is None:
            raise MigrationError(
                f"reindex task {task_id} is unknown to the cluster (a node restarted before it was "
                f"stored); re-run to start the copy again",
                "fill",
            )
        status = (res.get("task") or {}).get("status") or {}
        bar.update(status, (res.get("task") or {}).get("running_time_in_nanos", 0) / 1e9)
        if res.get("completed"):
            bar.close()
            return _finished(task_id, res)
        if time.monotonic() > deadline:
            bar.close()
            raise MigrationError(
                f"reindex task {task_id} still runs after {timeout:.0f}s; it goes on on the cluster, "
                f"re-run to keep waiting",
                "fill",
                details={"task_id": task_id, "status": status},
            )
        time.sleep(POLL_SECONDS)


def _finished(task_id: str, res: dict) -> dict:
    if res.get("error"):
        err = res["error"]
        raise MigrationError(
            f"reindex task {task_id} failed: {err.get('type')}: {err.get('reason')}",
            "fill",
            details={"task_id": task_id, "error": err},
        )
    response = res.get("response") or {}
    failures = response.get("failures") or []
    if failures:
        lines = [
            f"{f.get('id')}: {(f.get('cause') or {}).get('type')}: {(f.get('cause') or {}).get('reason')}"
            for f in failures
        ]
        raise MigrationError(
            f"reindex task {task_id} failed on {len(failures)} document(s): "
            + "; ".join(lines[:10])
            + ("; ..." if len(lines) > 10 else ""),
            "fill",
            details={"task_id": task_id, "failures": failures},
        )
    status = (res.get("task") or {}).get("status") or {}
    seconds = (res.get("task") or {}).get("running_time_in_nanos", 0) / 1e9
    done = status.get("created", 0) + status.get("updated", 0)
    return {
        "task_id": task_id,
        "total": status.get("total", 0),
        "created": status.get("created", 0),
        "updated": status.get("updated", 0),
        "version_conflicts": status.get("version_conflicts", 0),
        "seconds": round(seconds, 3),
        "docs_per_second": round(done / seconds, 1) if seconds else None,
    }


class _Progress:
    """tqdm on a terminal; else a line every few seconds through ``log``."""

    def __init__(self, log: Callable[[str], None] | None):
        self.log, self.bar, self.last = log, None, 0.0
        if log is not None and sys.stderr.isatty():
            try:
                from tqdm import tqdm

                self.bar = tqdm(total=0, unit="doc", desc="reindex", file=sys.stderr)
            except ImportError:
                pass

    def update(self, status: dict, seconds: float) -> None:
        if self.log is None:
            return
        total, done = status.get("total", 0), status.get("created", 0) + status.get("updated", 0)
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.refresh()
            return
        if time.monotonic() - self.last < 5.0:
            return
        self.last = time.monotonic()
        rate = done / seconds if seconds else 0.0
        eta = f"{(total - done) / rate:.0f}s" if rate and total else "?"
        self.log(f"reindex: {done}/{total} docs, {rate:.0f} docs/s, ETA {eta}")

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
