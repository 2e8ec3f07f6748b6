"""What a package folder is: a folder holding manifest.json (or that file itself)."""
from __future__ import annotations

from pathlib import Path

MANIFEST = "manifest.json"


def manifest_path(path: str | Path) -> Path:
    p = Path(path)
    return p / MANIFEST if p.is_dir() else p


def is_package(path: str | Path) -> bool:
    """A package folder, or the manifest.json of one."""
    p = Path(path).expanduser()
    return (p / MANIFEST).is_file() or (p.name == MANIFEST and p.is_file())
