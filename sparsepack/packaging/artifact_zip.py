"""An artifact zip read back as ML Commons reads it: the model entry loaded from disk, the tokenizer (and idf) parsed."""

from __future__ import annotations

import json
import tempfile
import zipfile
from pathlib import Path

MODEL_SUFFIXES = {"TORCH_SCRIPT": ".pt", "ONNX": ".onnx"}


def unzip_model(zip_path: Path, into: Path) -> tuple[Path, dict]:
    """(the model entry written under ``into``, the parsed tokenizer.json)."""
    with zipfile.ZipFile(zip_path) as zf:
        name = next(n for n in zf.namelist() if n.endswith(tuple(MODEL_SUFFIXES.values())))
        target = into / Path(name).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zf.read(name))
        return target, json.loads(zf.read("tokenizer.json"))


def exporter_for(model_path: Path):
    from .exporter import EXPORTERS

    return EXPORTERS["onnx" if model_path.suffix == ".onnx" else "torchscript"]()


def load_from_zip(zip_path: Path, into: Path | None = None, device: str | None = None):
    """(the loaded artifact, its tokenizer data). ``into``: where the model entry stays (None: a temporary folder,
    removed once loaded); ``device``: where a TorchScript artifact is mapped (None: the exporter's default)."""
    if into is None:
        with tempfile.TemporaryDirectory(prefix="sparsepack-unzip-") as tmp:
            return load_from_zip(zip_path, Path(tmp), device)
    path, tokenizer_data = unzip_model(zip_path, into)
    exporter = exporter_for(path)
    return (exporter.load(path) if device is None else exporter.load(path, device)), tokenizer_data


def query_side(zip_path: Path) -> tuple[dict, dict | None]:
    """A SPARSE_TOKENIZE zip: (tokenizer data, idf or None)."""
    with zipfile.ZipFile(zip_path) as zf:
        names = zf.namelist()
        return json.loads(zf.read("tokenizer.json")), json.loads(zf.read("idf.json")) if "idf.json" in names else None
