"""What a migration is asked to do, and what it reports."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field


@dataclass
class MigrationOptions:
    new_index: str | None = None  # default: <alias>-<short document model id>
    slices: str | int = "auto"
    requests_per_second: float | None = None  # None: unthrottled
    cleanup: bool = False  # on failure, remove the new index and the pipelines made for it
    sample_size: int = 50  # documents whose stored vectors are compared with the new model's _predict
    query_samples: int = 5
    timeout: float = 3600.0  # seconds for the reindex task
    catchup_rounds: int = 3  # carry-over rounds while writes still flow, before the write block
    progress: Callable[[str], None] | None = None  # a line per progress update; None: silent


@dataclass
class MigrationReport:
    alias: str
    old_index: str | None = None
    new_index: str | None = None
    document_model_id: str | None = None
    query_model_id: str | None = None
    pipelines: dict = field(default_factory=dict)  # created copies: {"ingest": {old: new}, "search": {old: new}}
    reindex: dict = field(default_factory=dict)
    carried_over: dict = field(default_factory=dict)
    verification: dict = field(default_factory=dict)
    seconds_blocked: float | None = None
    steps: dict = field(default_factory=dict)  # step -> seconds
    swapped: bool = False
    passed: bool = False
    alias_on: str | None = None
    error: str | None = None
    failed_step: str | None = None

    @contextmanager
    def step(self, name: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.steps[name] = round(time.perf_counter() - t0, 3)

    def as_dict(self) -> dict:
        return asdict(self)
