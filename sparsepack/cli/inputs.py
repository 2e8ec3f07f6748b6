"""Reading the files a command names, without loading the ML libraries."""
from __future__ import annotations


def load_manifest_data(path: str) -> dict:
    """A package's validated manifest (schema and artifact paths; no hashing), from its folder or manifest.json."""
    from ..packaging.manifest import load

    return load(path).data
