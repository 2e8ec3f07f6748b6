"""The one boundary through which every command reads a package: load (schema, paths) -> verify (sizes, hashes,
zip entries) -> use. A package is untrusted input: it may come from a CI artifact store or another machine.

Every refusal is a SparsepackError (exit 2) raised before anything is written, extracted, uploaded or registered.
"""
from __future__ import annotations

import json
import stat
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..contract.limits import weight_problem
from ..contract.package_dir import MANIFEST, is_package, manifest_path
from ..errors import SparsepackError

REQUIRED = {"name": str, "mode": str, "artifacts": list, "compatible_opensearch": list}
ARTIFACT_REQUIRED = {"role": str, "file": str, "sha256": str, "size_bytes": int, "function_name": str, "model_format": str}
# Entries of an artifact zip that the smoke test and ML Commons parse as JSON.
JSON_ENTRIES = ("tokenizer.json", "idf.json")
_RERUN = "re-run `sparsepack package MODEL -o DIR`"


@dataclass(frozen=True)
class Artifact:
    role: str
    file: str
    sha256: str
    size_bytes: int
    path: Path


@dataclass(frozen=True)
class Manifest:
    data: dict          # the validated manifest, as templates and reports use it
    root: Path          # the package folder
    artifacts: tuple[Artifact, ...]

    @property
    def path(self) -> Path:
        return self.root / MANIFEST


def load(path: str | Path) -> Manifest:
    """Parse and validate the manifest of a package folder (or a manifest.json path): schema and artifact paths.
    Cheap (no hashing); :func:`verify` checks the files themselves."""
    mpath = manifest_path(path)
    if not mpath.exists():
        raise SparsepackError(f"no {MANIFEST} at {path}; {_RERUN} first")
    try:
        data = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SparsepackError(f"{mpath} is not valid JSON ({getattr(exc, 'msg', exc)}); {_RERUN}") from None
    return validate(data, mpath.parent)


def validate(data, root: Path) -> Manifest:
    """The schema and artifact-path checks of :func:`load`, for a manifest already in memory."""
    mpath = root / MANIFEST
    if not isinstance(data, dict):
        raise SparsepackError(f"{mpath} is not a JSON object; it was not written by sparsepack package")
    for key, kind in REQUIRED.items():
        if key not in data:
            raise SparsepackError(f"{mpath} lacks {key!r}; it was not written by sparsepack package")
        if not isinstance(data[key], kind):
            raise SparsepackError(f"{mpath}: {key!r} must be a {kind.__name__}; {_RERUN}")
    if not data["artifacts"]:
        raise SparsepackError(f"{mpath} lists no artifacts; {_RERUN}")
    return Manifest(data, root, tuple(_artifact(entry, n, root, mpath) for n, entry in enumerate(data["artifacts"])))


def _artifact(entry, n: int, root: Path, mpath: Path) -> Artifact:
    if not isinstance(entry, dict):
        raise SparsepackError(f"{mpath}: artifacts[{n}] is not an object; {_RERUN}")
    for key, kind in ARTIFACT_REQUIRED.items():
        if not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
            raise SparsepackError(f"{mpath}: artifacts[{n}] needs {key!r} ({kind.__name__}); {_RERUN}")
    name = entry["file"]
    # A package is flat: a file name, never a path that could leave the folder (../x.zip, /etc/x, sub/../../x).
    if name in ("", ".", "..") or "/" in name or "\\" in name or Path(name).is_absolute():
        raise SparsepackError(f"{mpath}: artifact file {name!r} is not a plain file name inside the package folder; "
                              f"refusing a path outside {root}")
    path = root / name
    if path.is_symlink() or (path.exists() and path.resolve().parent != root.resolve()):
        raise SparsepackError(f"{mpath}: artifact {name} is a link (to {path.resolve()}); copy the real file into the "
                              f"package folder")
    if entry["size_bytes"] < 0:
        raise SparsepackError(f"{mpath}: artifacts[{n}] size_bytes is negative; {_RERUN}")
    return Artifact(entry["role"], name, entry["sha256"].lower(), entry["size_bytes"], path)


def verify(manifest: Manifest) -> None:
    """Before any upload, extraction or registration: each zip is the size and sha256 the manifest recorded, holds
    no entry that could escape a folder it is extracted to, and its JSON entries parse."""
    from .archive import sha256_file

    for art in manifest.artifacts:
        if not art.path.exists():
            raise SparsepackError(f"{art.path} is missing; {_RERUN}")
        size = art.path.stat().st_size
        if size != art.size_bytes:
            more = "larger" if size > art.size_bytes else "smaller"
            raise SparsepackError(f"{art.file} is {size:,} bytes, {more} than the {art.size_bytes:,} the manifest says; "
                                  f"the zip was modified or replaced: {_RERUN}")
        digest = sha256_file(art.path)
        if digest != art.sha256:
            raise SparsepackError(f"{art.file}: sha256 {digest[:12]}... differs from the manifest's {art.sha256[:12]}...; "
                                  f"the zip was modified: {_RERUN}")
        check_zip(art.path)


def check_zip(path: Path) -> None:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise SparsepackError(f"{path.name} is not a zip archive; {_RERUN}") from None
    with zf:
        for info in zf.infolist():
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts
            if info.filename.startswith(("/", "\\")) or ".." in parts or (parts and ":" in parts[0]):
                raise SparsepackError(f"{path.name} holds the entry {info.filename!r}, a path outside the folder it is "
                                      f"extracted to; refusing the package: {_RERUN}")
            if stat.S_ISLNK(info.external_attr >> 16):
                raise SparsepackError(f"{path.name} holds the symbolic link {info.filename!r}; ML Commons artifacts hold "
                                      f"plain files only: {_RERUN}")
        for name in JSON_ENTRIES:
            if name in zf.namelist():
                try:
                    parsed = json.loads(zf.read(name))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise SparsepackError(f"{path.name}: {name} is not valid JSON "
                                          f"({getattr(exc, 'msg', type(exc).__name__)}); {_RERUN}") from None
                if name == "idf.json":
                    check_idf_weights(path.name, parsed)


def check_idf_weights(zip_name: str, idf) -> None:
    """Every weight the cluster's SPARSE_TOKENIZE model can produce must be one neural-search accepts, or each query
    holding that token is an HTTP 400 (a package from before the rule, or an edited idf.json)."""
    for token, weight in (idf.items() if isinstance(idf, dict) else []):
        problem = weight_problem(weight)
        if problem:
            raise SparsepackError(f"{zip_name}: idf.json weight of {token!r} {problem}; neural-search accepts (0, 64] only "
                                  f"and would refuse every query with it: {_RERUN}")


def _looks_like_path(text: str) -> bool:
    """A Hugging Face id is ``name`` or ``org/name``; anything else names a local path."""
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text


def check_model_source(model: str) -> None:
    """``package MODEL``, before loading any library: a package folder or a missing path is refused at once."""
    path = Path(model).expanduser()
    if is_package(path):
        raise SparsepackError(f"{model} is a sparsepack package (it has {MANIFEST}), not a model; pass it to "
                              f"`sparsepack release {model}` (or package the model it was built from)")
    if _looks_like_path(model) and not path.exists():
        raise SparsepackError(f"no model at {model}; give an existing SparseEncoder folder or a Hugging Face id (org/name)")
    _check_model_json(path)


# JSON files of a model folder (and its modules' subfolders) that the loaders parse; a broken one is named here rather
# than surfacing as a parser message from deep inside transformers.
MODEL_JSON = ("tokenizer.json", "config.json", "tokenizer_config.json", "special_tokens_map.json", "modules.json",
              "config_sentence_transformers.json")


def _check_model_json(path: Path) -> None:
    if not path.is_dir():
        return
    for name in MODEL_JSON:
        for found in sorted(path.glob(name)) + sorted(path.glob(f"*/{name}")):
            try:
                json.loads(found.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SparsepackError(f"{found} is not valid JSON ({getattr(exc, 'msg', type(exc).__name__)}); "
                                      f"restore the model's {name} (re-download or re-save it)") from None


def check_release_target(target: str) -> None:
    """``release TARGET``, before loading any library: a path that does not exist is refused at once."""
    path = Path(target).expanduser()
    if _looks_like_path(target) and not path.exists():
        raise SparsepackError(f"no package or model at {target}; give a package folder (`sparsepack package MODEL -o DIR`), "
                              f"a SparseEncoder folder, or a Hugging Face id (org/name)")
    if not is_package(path):
        _check_model_json(path)


def check_package_path(target: str) -> None:
    """``verify PACKAGE``, before loading any library: it must be a package folder (or its manifest.json)."""
    path = Path(target).expanduser()
    if not is_package(path):
        what = "no such path" if not path.exists() else f"no {MANIFEST} there"
        raise SparsepackError(f"{target} is not a sparsepack package ({what}); give the folder `sparsepack package` wrote")
