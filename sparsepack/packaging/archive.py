"""Deterministic zips: fixed timestamps and permissions, sorted entries, so the same input gives the same sha256."""

from __future__ import annotations

import zipfile
from pathlib import Path

from ..contract.package_dir import sha256_file

FIXED_TIME = (1980, 1, 1, 0, 0, 0)
FORBIDDEN_SUFFIXES = (".jar", ".class", ".so", ".dylib", ".dll")  # rejected by newer ML Commons


def write_zip(path: Path, entries: dict[str, bytes], stored: tuple[str, ...] = ()) -> None:
    """``stored``: entries written without compression. fp32 weights deflate by only ~7% at ~25 MB/s on one core,
    so a 268 MB model entry costs 10 s or more to compress for 20 MB saved; the TorchScript archive inside is itself
    an uncompressed zip that libtorch reads as such."""
    for name in entries:
        if "/" in name or name.lower().endswith(FORBIDDEN_SUFFIXES):
            raise ValueError(f"zip entry {name!r} is not allowed at the root of an ML Commons archive")
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=FIXED_TIME)
            info.compress_type = zipfile.ZIP_STORED if name in stored else zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            info.create_system = 3
            zf.writestr(info, entries[name])


def read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def write_artifact_zip(
    path: Path, entries: dict[str, bytes], license_bytes: bytes | None = None, stored: tuple[str, ...] = ()
) -> None:
    """An ML Commons artifact zip: ``entries`` plus the model's LICENSE when it has one."""
    write_zip(path, {**entries, **({"LICENSE": license_bytes} if license_bytes else {})}, stored)


def artifact_entry(path: Path, role: str, function_name: str, model_format: str, **extra) -> dict:
    """The manifest's record of one artifact zip: what ML Commons registers it as, its hash and size, then ``extra``."""
    return {
        "role": role,
        "file": path.name,
        "function_name": function_name,
        "model_format": model_format,
        "sha256": sha256_file(path),
        "size_bytes": path.stat().st_size,
        **extra,
    }
