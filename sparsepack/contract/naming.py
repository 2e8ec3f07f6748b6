"""Names sparsepack gives things: a package from its model source, a model group from its package."""

from __future__ import annotations

import re
from pathlib import Path


def slug(source: str) -> str:
    name = Path(source.rstrip("/")).name or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def default_group_name(package_name: str) -> str:
    """The model group a release registers into when none is named (and the render default)."""
    return f"{package_name}-sparsepack"
