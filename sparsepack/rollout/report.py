"""The JSON report of a release or smoke run. It only records: no step reads its state back out of it."""

from __future__ import annotations

import time
from contextlib import contextmanager

from .. import __version__
from ..errors import ClusterError
from ..registry.connection import ConnectionOptions


class Report:
    def __init__(self, target: str, conn: ConnectionOptions):
        self._data: dict = {
            "sparsepack_version": __version__,
            "target": target,
            "connection": conn.redacted(),
            "steps": {},
            "passed": False,
            "failed_step": None,
        }

    @contextmanager
    def step(self, name: str):
        """Times one step and yields its entry to fill; an exception, or ``passed: False`` in the entry, fails it."""
        t0 = time.perf_counter()
        entry = self._data["steps"].setdefault(name, {})
        try:
            yield entry
        except BaseException as exc:
            entry.update(passed=False, error=str(exc), seconds=round(time.perf_counter() - t0, 3))
            self._fail_at(name)
            raise
        entry.setdefault("passed", True)
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        if not entry["passed"]:
            self._fail_at(name)
            raise ClusterError(f"{name} failed; see the report's steps.{name}")

    @property
    def failed_step(self) -> str | None:
        return self._data["failed_step"]

    def _fail_at(self, name: str) -> None:
        self._data["failed_step"] = self._data["failed_step"] or name

    def record(self, key: str, value) -> None:
        """A top-level section: package, cluster, model_ids, kept, rollback, ..."""
        self._data[key] = value

    def warn(self, *warnings: str) -> None:
        if warnings:
            self._data.setdefault("warnings", []).extend(warnings)

    def record_cluster(self, version: str, ml_nodes: list[str]) -> None:
        self.record("cluster", {"version": version, "ml_nodes": ml_nodes})

    def record_model_ids(self, ids: dict[str, str]) -> None:
        self.record("model_ids", ids)

    def mark_passed(self) -> None:
        self._data["passed"] = True

    def record_failure(
        self,
        message: str,
        exit_code: int | None = None,
        outside_steps: str | None = None,
        parameter: str | None = None,
    ) -> None:
        """The run's error; ``outside_steps``: the failed step to name when no step failed (it came between them);
        ``parameter``: the option the error is about, so the CLI can name its flag."""
        self._data["error"] = message
        if parameter:
            self._data["error_parameter"] = parameter
        if exit_code is not None:
            self._data["exit_code"] = exit_code
        if outside_steps:
            self._fail_at(outside_steps)

    def as_dict(self) -> dict:
        return self._data
