"""Typed failures of a migration: they carry the figures the CLI and callers need, and the alias state."""

from __future__ import annotations

from ..errors import ClusterError, SparsepackError


class MigrationError(ClusterError):
    """A step failed; ``alias_on`` names the index the alias serves from afterwards (the old one unless swapped)."""

    def __init__(
        self,
        message: str,
        step: str,
        alias_on: str | None = None,
        details: dict | None = None,
        status: int | None = None,
    ):
        super().__init__(message)
        self.step, self.alias_on, self.details, self.status = step, alias_on, details or {}, status


class RefusedWritePattern(SparsepackError):
    """The index is written in a way the carry-over cannot reproduce exactly; refused before anything is created."""

    def __init__(self, index: str, reason: str):
        super().__init__(f"cannot migrate {index} without loss: {reason}")
        self.index, self.reason = index, reason
