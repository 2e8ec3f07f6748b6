"""The ``migrate`` release step: each alias asked for moves onto the new version (see sparsepack/migrate/), and the
previous version its old index still uses stays, so the migration can be rolled back."""

from __future__ import annotations

import sys

from ..migrate import MigrationError, MigrationOptions, migrate, provenance
from ..migrate import source as migrate_source
from ..registry.references import Reference
from .context import ReleaseContext


def plan(ctx: ReleaseContext) -> dict[str, str]:
    """Before anything is created: each alias serves from one index a migration can copy; alias -> that index."""
    sources: dict[str, str] = {}
    cluster = ctx.cluster
    assert cluster is not None  # connected before the upgrade plan
    for alias in ctx.opts.migrate_aliases:
        src = migrate_source.resolve(cluster, alias)
        migrate_source.refuse_lossy_patterns(src)
        sources[alias] = src.name
    return sources


def kept_for_rollback(refs: list[Reference], sources: dict[str, str]) -> dict[str, list[str]]:
    """model id -> why it stays: an old index a migration keeps for its rollback still uses it."""
    alias_of = {index: alias for alias, index in sources.items()}
    kept: dict[str, list[str]] = {}
    for ref in refs:
        if ref.kind == "index" and ref.name in alias_of:
            kept.setdefault(ref.model_id, []).append(
                f"index {ref.name} ({ref.via}), which alias {alias_of[ref.name]} served from before its migration, "
                f"is kept so the migration can be rolled back; the model can go once the migration is finished"
            )
    return kept


def migrate_aliases(ctx: ReleaseContext) -> None:
    """Each alias onto the new document (and query) model; the first failure stops, its alias still on its old
    index, and the new version stays (it passed every check)."""
    cluster = ctx.cluster
    assert cluster is not None  # connected before the upgrade plan
    with ctx.report.step("migrate") as entry:
        entry["aliases"] = {}
        for alias in ctx.opts.migrate_aliases:
            opts = MigrationOptions(progress=_progress if ctx.opts.progress else None)
            try:
                report = migrate(cluster, alias, ctx.model_ids["document"], ctx.model_ids.get("query"), opts)
            except MigrationError as exc:
                entry["aliases"][alias] = {
                    "passed": False,
                    "failed_step": exc.step,
                    "alias_on": exc.alias_on,
                    "details": exc.details,
                }
                raise
            entry["aliases"][alias] = report.as_dict()
            # A re-run after the swap finds the alias already on the new index: its old one is in the migration state.
            state = (provenance.read_meta(cluster, report.new_index or "") or {}).get("migration") or {}
            if state.get("source") and state.get("stage") == "swapped":
                ctx.migration_sources[alias] = state["source"]


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
