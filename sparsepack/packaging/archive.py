"""Deterministic zips: fixed timestamps and permissions, sorted entries, so the same input gives the same sha256."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
FORBIDDEN_SUFFIXES = (".jar", ".class", ".so", ".dylib", ".dll")  # rejected by newer ML Commons


def write_zip(path: Path, entries: dict[str, bytes]) -> None:
    for name in entries:
        if "/" in name or name.lower().endswith(FORBIDDEN_SUFFIXES):
            raise ValueError(f"zip entry {name!r} is not allowed at the root of an ML Commons archive")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, entries[name])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}
