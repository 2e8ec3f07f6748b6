"""Reading the files a command names, without loading the ML libraries."""

from __future__ import annotations


def load_manifest_data(path: str) -> dict:
    """A package's validated manifest (schema and artifact paths; no hashing), from its folder or manifest.json."""
    from ..contract.package_dir import load_package

    return load_package(path).to_dict()
