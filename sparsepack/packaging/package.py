"""``sparsepack package``: model -> ML Commons artifacts + manifest + proof of parity, written atomically."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..contract.formats import FORMATS, for_format
from ..contract.limits import document_max_length
from ..contract.manifest import Manifest
from ..contract.package_dir import MANIFEST
from ..errors import SparsepackError
from ..templates import write_package_bodies
from .build import build_package
from .evaluation import read_user_texts
from .exporter import EXPORTERS
from .gpu import GpuOptions
from .introspect import ModelSpec, load_model
from .model_card import model_card
from .onnx_export import check_onnx_threads
from .opcheck import LIBTORCH_BY_LINE
from .quantize import int8_options
from .tokenizer_export import dumps


def _log(msg: str) -> None:
    print(f"sparsepack: {msg}", file=sys.stderr, flush=True)


def package(
    model: str,
    out: str | Path,
    revision: str | None = None,
    trust_remote_code: bool = False,
    max_length: int | None = None,
    prune_ratio: float = 0.0,
    targets: tuple[str, ...] = tuple(LIBTORCH_BY_LINE),
    force: bool = False,
    artifact_format: str = "torchscript",
    log: Callable[[str], None] = _log,
    spec: ModelSpec | None = None,
    precision: str = "fp32",
    verify_devices: str = "auto",
    fp16_device: str = "cuda",
    quantize: str | None = None,
    quality_gate: str | None = None,
    onnx_threads: int | None = None,
    stats_corpus: str | None = None,
    stats_queries: str | None = None,
) -> dict:
    """``spec``: an already loaded model (``load_model``), so a caller that needs the model afterwards loads it once.
    ``verify_devices``: where the TorchScript proof runs (auto = CPU plus CUDA when visible). ``precision`` fp16: a
    GPU-only document artifact, traced on ``fp16_device`` and gated by ranking agreement with the fp32 trace (tests
    exercise the gate with ``fp16_device="cpu"``; users cannot: without CUDA fp16 is refused).
    ``artifact_format``: torchscript, onnx or both (one document artifact each, each with its own proof).
    ``quantize`` int8: also an int8 ONNX artifact, written only if it passes ``quality_gate`` (ndcg=X,recall=Y).
    ``onnx_threads``: the onnxruntime threads per inference each ONNX zip sets on the ML node (default 1, as ML Commons
    runs libtorch; 0: onnxruntime's default, a thread per core).
    ``stats_corpus`` / ``stats_queries``: JSONL ``{"id", "text"}`` files whose output weights the manifest records too,
    next to those of the proof battery and a synthetic corpus."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise SparsepackError(f"{out} already exists and is not empty; choose another -o or pass --force")
    if not 0.0 <= prune_ratio < 1.0:
        raise SparsepackError(
            f"--prune-ratio {prune_ratio} is outside [0, 1); use e.g. 0.1 to keep weights above 10% of the max"
        )
    unknown = [t for t in targets if t not in LIBTORCH_BY_LINE]
    if unknown:
        raise SparsepackError(f"unknown OpenSearch line {unknown[0]!r}; use one of {', '.join(LIBTORCH_BY_LINE)}")
    if artifact_format not in FORMATS:
        raise SparsepackError(f"--format {artifact_format!r} is unknown; use one of {', '.join(FORMATS)}")
    gpu = GpuOptions.resolve(precision, verify_devices, fp16_device, artifact_format)
    int8_gate = int8_options(quantize, quality_gate, artifact_format)
    onnx_threads = check_onnx_threads(onnx_threads, artifact_format)
    user_texts = read_user_texts(stats_corpus, stats_queries)

    if spec is None:
        log(f"loading {model}")
        spec = load_model(model, revision, trust_remote_code)
    length = document_max_length(spec.max_length, max_length)
    log(
        f"{spec.mode} model, activation {spec.activation}, {spec.pooling} pooling, vocab {spec.vocab_size}, max_length {length}"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # readable by a service user (URL registration, local node)
    try:
        manifest = build_package(
            spec,
            staging,
            length,
            prune_ratio,
            targets,
            [EXPORTERS[f]() for f in FORMATS[artifact_format]],
            log,
            gpu,
            int8_gate,
            onnx_threads,
            user_texts,
        )
        for fmt in Manifest.from_dict(manifest, "the manifest being written").document_formats:
            write_package_bodies(staging, for_format(manifest, fmt))  # register-meta + model-config next to each zip
        (staging / MANIFEST).write_bytes(dumps(manifest))
        (staging / "README.md").write_text(model_card(Manifest.from_dict(manifest)), encoding="utf-8")
        _replace_dir(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"wrote {out}")
    return manifest


def _replace_dir(staging: Path, out: Path) -> None:
    if out.exists():
        old = out.with_name(f".{out.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
        staging.rename(out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(out)
