"""What a package folder is, and the one boundary through which every command reads one: load (schema, paths) ->
verify (sizes, hashes, zip entries) -> use. A package is untrusted input: it may come from a CI artifact store or
another machine. Every refusal is a SparsepackError raised before anything is written, extracted, uploaded or
registered."""

from __future__ import annotations

import hashlib
import json
import stat
import zipfile
from pathlib import Path, PurePosixPath

from ..errors import SparsepackError
from .limits import weight_problem
from .manifest import RERUN as _RERUN
from .manifest import Manifest

MANIFEST = "manifest.json"
# Entries of an artifact zip that the smoke test and ML Commons parse as JSON.
JSON_ENTRIES = ("tokenizer.json", "idf.json")


def manifest_path(path: str | Path) -> Path:
    p = Path(path)
    return p / MANIFEST if p.is_dir() else p


def is_package(path: str | Path) -> bool:
    """A package folder, or the manifest.json of one."""
    p = Path(path).expanduser()
    return (p / MANIFEST).is_file() or (p.name == MANIFEST and p.is_file())


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def load_package(path: str | Path) -> Manifest:
    """Parse and validate the manifest of a package folder (or a manifest.json path): every key a command reads, and
    artifact paths that stay inside the folder. Cheap (no hashing); :func:`verify_package_files` checks the files."""
    mpath = manifest_path(path)
    if not mpath.exists():
        raise SparsepackError(f"no {MANIFEST} at {path}; {_RERUN} first")
    try:
        data = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SparsepackError(f"{mpath} is not valid JSON ({getattr(exc, 'msg', exc)}); {_RERUN}") from None
    return checked_paths(Manifest.from_dict(data, str(mpath), root=mpath.parent))


def checked_paths(manifest: Manifest) -> Manifest:
    """Each artifact a plain file of the package folder: never a path that could leave it, nor a link."""
    root = manifest.package_root
    mpath = root / MANIFEST
    for n, art in enumerate(manifest.artifacts):
        name = art.file
        # A package is flat: a file name, never a path that could leave the folder (../x.zip, /etc/x, sub/../../x).
        if name in ("", ".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
            raise SparsepackError(
                f"{mpath}: artifact file {name!r} is not a plain file name inside the package folder; "
                f"refusing a path outside {root}"
            )
        path = root / name
        if path.is_symlink() or (path.exists() and path.resolve().parent != root.resolve()):
            raise SparsepackError(
                f"{mpath}: artifact {name} is a link (to {path.resolve()}); copy the real file into the package folder"
            )
        if art.size_bytes < 0:
            raise SparsepackError(f"{mpath}: artifacts[{n}] size_bytes is negative; {_RERUN}")
    return manifest


def verify_package_files(manifest: Manifest) -> None:
    """Before any upload, extraction or registration: each zip is the size and sha256 the manifest recorded, holds
    no entry that could escape a folder it is extracted to, and its JSON entries parse."""
    for art in manifest.artifacts:
        path = manifest.path_of(art)
        if not path.exists():
            raise SparsepackError(f"{path} is missing; {_RERUN}")
        size = path.stat().st_size
        if size != art.size_bytes:
            more = "larger" if size > art.size_bytes else "smaller"
            raise SparsepackError(
                f"{art.file} is {size:,} bytes, {more} than the {art.size_bytes:,} the manifest says; "
                f"the zip was modified or replaced: {_RERUN}"
            )
        digest = sha256_file(path)
        if digest != art.sha256.lower():
            raise SparsepackError(
                f"{art.file}: sha256 {digest[:12]}... differs from the manifest's {art.sha256[:12]}...; "
                f"the zip was modified: {_RERUN}"
            )
        check_zip(path)


def check_zip(path: Path) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise SparsepackError(f"{path.name} is not a zip archive; {_RERUN}") from None
    with zf:
        for info in zf.infolist():
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise SparsepackError(
                    f"{path.name} holds the entry {info.filename!r}, a path outside the folder it is "
                    f"extracted to; refusing the package: {_RERUN}"
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise SparsepackError(
                    f"{path.name} holds the symbolic link {info.filename!r}; ML Commons artifacts hold "
                    f"plain files only: {_RERUN}"
                )
        for name in JSON_ENTRIES:
            if name in zf.namelist():
                try:
                    parsed = json.loads(zf.read(name))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise SparsepackError(
                        f"{path.name}: {name} is not valid JSON ({getattr(exc, 'msg', type(exc).__name__)}); {_RERUN}"
                    ) from None
                if name == "idf.json":
                    check_idf_weights(path.name, parsed)


def check_idf_weights(zip_name: str, idf) -> None:
    """Every weight the cluster's SPARSE_TOKENIZE model can produce must be one neural-search accepts, or each query
    holding that token is an HTTP 400 (a package from before the rule, or an edited idf.json)."""
    for token, weight in idf.items() if isinstance(idf, dict) else []:
        problem = weight_problem(weight)
        if problem:
            raise SparsepackError(
                f"{zip_name}: idf.json weight of {token!r} {problem}; neural-search accepts (0, 64] only "
                f"and would refuse every query with it: {_RERUN}"
            )


def verify_artifacts(manifest: Manifest | dict, root: str | Path | None = None) -> None:
    """:func:`verify_package_files` of a manifest already in memory (a dict: checked as :func:`load_package` would)."""
    if isinstance(manifest, dict):
        if root is None:
            raise SparsepackError("a manifest given as a mapping needs root, the package folder it describes")
        manifest = Manifest.from_dict(manifest, str(Path(root) / MANIFEST), root=Path(root))
    verify_package_files(checked_paths(manifest))
