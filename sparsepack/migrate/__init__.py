"""Move the documents behind an alias to a new model without losing a write: a new index beside the old one, filled by
a server-side reindex through copies of its pipelines, changes made meanwhile carried over under a short write block,
verified against the new model, then one atomic alias swap (rollback and finish as separate steps)."""

from .errors import MigrationError, RefusedWritePattern
from .provenance import index_provenance
from .report import MigrationOptions, MigrationReport
from .run import finish, migrate, rollback

__all__ = [
    "MigrationError",
    "MigrationOptions",
    "MigrationReport",
    "RefusedWritePattern",
    "finish",
    "index_provenance",
    "migrate",
    "rollback",
]
