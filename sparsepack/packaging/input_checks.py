"""Refusals before any library loads: a command's MODEL / PACKAGE / TARGET argument is what that command takes."""

from __future__ import annotations

import json
from pathlib import Path

from ..contract.package_dir import MANIFEST, is_package
from ..errors import SparsepackError


def _looks_like_path(text: str) -> bool:
    """A Hugging Face id is ``name`` or ``org/name``; anything else names a local path."""
    return text.startswith((".", "/", "~")) or text.count("/") > 1 or "\\" in text


def check_model_source(model: str) -> None:
    """``package MODEL``, before loading any library: a package folder or a missing path is refused at once."""
    path = Path(model).expanduser()
    if is_package(path):
        raise SparsepackError(
            f"{model} is a sparsepack package (it has {MANIFEST}), not a model; pass it to "
            f"`sparsepack release {model}` (or package the model it was built from)"
        )
    if _looks_like_path(model) and not path.exists():
        raise SparsepackError(
            f"no model at {model}; give an existing SparseEncoder folder or a Hugging Face id (org/name)"
        )
    _check_model_json(path)


# JSON files of a model folder (and its modules' subfolders) that the loaders parse; a broken one is named here rather
# than surfacing as a parser message from deep inside transformers.
MODEL_JSON = (
    "tokenizer.json",
    "config.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "config_sentence_transformers.json",
)


def _check_model_json(path: Path) -> None:
    if not path.is_dir():
        return
    for name in MODEL_JSON:
        for found in sorted(path.glob(name)) + sorted(path.glob(f"*/{name}")):
            try:
                json.loads(found.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise SparsepackError(
                    f"{found} is not valid JSON ({getattr(exc, 'msg', type(exc).__name__)}); "
                    f"restore the model's {name} (re-download or re-save it)"
                ) from None


def check_release_target(target: str) -> None:
    """``release TARGET``, before loading any library: a path that does not exist is refused at once."""
    path = Path(target).expanduser()
    if _looks_like_path(target) and not path.exists():
        raise SparsepackError(
            f"no package or model at {target}; give a package folder (`sparsepack package MODEL -o DIR`), "
            f"a SparseEncoder folder, or a Hugging Face id (org/name)"
        )
    if not is_package(path):
        _check_model_json(path)


def check_package_path(target: str) -> None:
    """``verify PACKAGE``, before loading any library: it must be a package folder (or its manifest.json)."""
    path = Path(target).expanduser()
    if not is_package(path):
        what = "no such path" if not path.exists() else f"no {MANIFEST} there"
        raise SparsepackError(
            f"{target} is not a sparsepack package ({what}); give the folder `sparsepack package` wrote"
        )
