"""Re-prove a package where it will run: its saved document artifacts, read from the zips, against the source model,
on this machine's devices.

A package built by a CPU-only CI job was proven on CPU only. The admin of a GPU ML node (or anyone who received the
package) runs ``sparsepack verify PACKAGE --model MODEL`` there: the same batteries and tolerance as ``package``, every
document artifact the manifest lists, every device asked for. fp32 artifacts must match ``encode_document`` run on CPU
in fp32 (TF32 off); an fp16 artifact is held to its ranking gate against the fp32 model.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..contract.manifest import Artifact, Manifest
from ..contract.package_dir import load_package, verify_package_files
from ..errors import ParityError, QualityGateError, SparsepackError
from ..metrics.gate import HALF_PRECISION_GATE
from . import parity
from .artifact_zip import unzip_model
from .devices import cuda_available, resolve_verify_devices
from .exporter import TorchScriptExporter
from .gpu import half_precision_gate
from .portability import device_constants_in_archive


def verify_package(
    package_dir: str | Path,
    model: str | None = None,
    devices: str = "auto",
    revision: str | None = None,
    trust_remote_code: bool = False,
    log: Callable[[str], None] = lambda m: None,
) -> dict:
    """The report of every document artifact on every device; raises ParityError / QualityGateError (exit 3) when one
    fails, after checking all of them, so the report names every failure."""
    manifest = load_package(package_dir)
    verify_package_files(manifest)  # size, sha256, safe entries: the files are the ones the manifest proved
    wanted = resolve_verify_devices(devices, "--devices")
    documents = [a for a in manifest.artifacts if a.role == "document"]
    source = model or manifest.source.model
    if model is None and not Path(source).exists() and source.startswith((".", "/", "~")):
        raise SparsepackError(
            f"the package's source model {source} is not on this machine; pass --model with its "
            "directory or Hugging Face id"
        )
    t0 = time.perf_counter()
    log(f"loading {source}")
    from .introspect import load_model

    spec = load_model(source, revision or manifest.source.revision, trust_remote_code)
    for field in ("vocab_size", "mode", "activation", "pooling"):
        if getattr(spec, field) != getattr(manifest, field):
            raise SparsepackError(
                f"{source} has {field} {getattr(spec, field)}, the package {getattr(manifest, field)}: this is "
                "not the package's source model; pass --model with the model it was built from"
            )
    work = Path(tempfile.mkdtemp(prefix="sparsepack-verify-"))
    try:
        results = [_verify_document(spec, manifest, manifest.path_of(a), a, wanted, work, log) for a in documents]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = {
        "package": str(manifest.root),
        "name": manifest.name,
        "model": source,
        "precision": manifest.precision,
        "devices": wanted,
        "artifacts": results,
        "seconds": round(time.perf_counter() - t0, 1),
        "passed": all(r["passed"] for r in results),
    }
    failed = [r for r in results if not r["passed"]]
    if failed:
        first = failed[0]
        error = (QualityGateError if "quality_gate" in first else ParityError)(
            f"{first['file']} fails on {first['failed_on']}: {first['why']}; do not release this package to such nodes"
        )
        error.report = report
        raise error
    return report


def _verify_document(
    spec, manifest: Manifest, zip_path: Path, entry: Artifact, devices: list[str], work: Path, log
) -> dict:
    fmt = entry.document_format
    target, tokenizer_data = unzip_model(zip_path, work / fmt)
    base = {"file": entry.file, "format": fmt}
    if fmt != "torchscript":  # ONNX runs on CPU ML nodes only: its proof is CPU's, whatever devices were asked
        return _verify_onnx(spec, manifest, target, tokenizer_data, entry, base, log)
    leftover = device_constants_in_archive(target)
    if leftover:
        return {
            **base,
            "passed": False,
            "failed_on": "every device but the one it was traced on",
            "why": f"{len(leftover)} torch.device constant(s) left in {leftover[0]}",
            "device_constants": leftover,
        }
    exporter = TorchScriptExporter()
    if manifest.precision == "fp16":
        return _verify_half(spec, target, tokenizer_data, exporter, base, log)
    log(f"validating {entry.file} on {', '.join(devices)} against encode_document on CPU")
    loaded = {d: exporter.load(target, d) for d in devices}
    doc = parity.validate_document(spec, loaded, tokenizer_data, prune_ratio=_prune_ratio(manifest))
    return {
        **base,
        "precision": "fp32",
        "device_portable": True,
        **_summary(doc, manifest),
        **_as_query_encoder(spec, manifest, loaded, tokenizer_data),
    }


def _as_query_encoder(spec, manifest: Manifest, loaded, tokenizer_data: dict) -> dict:
    """A bi-encoder's document artifact also encodes queries on the cluster: held to ``encode_query`` the same way."""
    if spec.mode != "bi-encoder":
        return {}
    query = parity.validate_query_bi_encoder(spec, loaded, tokenizer_data, prune_ratio=_prune_ratio(manifest))
    out: dict[str, Any] = {
        "query": {
            "passed": query["passed"],
            "max_abs_diff": query["max_abs_diff"],
            "identical_token_sets": query["identical_token_sets"],
            "devices": query["devices"],
        }
    }
    failed = [d for d, r in query["by_device"].items() if not r["passed"]]
    if failed:
        r = query["by_device"][failed[0]]
        out.update(
            passed=False,
            failed_on=failed[0],
            why=f"as query encoder, max |d| {r['max_abs_diff']:.2e} (tolerance {r['tolerance']:.0e}) vs encode_query",
        )
    return out


def _prune_ratio(manifest: Manifest) -> float:
    return manifest.pruning.ratio


def _summary(doc: dict, manifest: Manifest) -> dict:
    failed = [d for d, r in doc["by_device"].items() if not r["passed"]]
    out = {
        "passed": doc["passed"],
        "devices": doc["devices"],
        "max_abs_diff": doc["max_abs_diff"],
        "tolerance": doc["tolerance"],
        "by_device": doc["by_device"],
    }
    if failed:
        r = doc["by_device"][failed[0]]
        out.update(
            failed_on=failed[0],
            why=f"max |d| {r['max_abs_diff']:.2e} (tolerance {r['tolerance']:.0e}), "
            f"identical token sets: {r['identical_token_sets']}",
        )
    return out


def _verify_onnx(
    spec, manifest: Manifest, target: Path, tokenizer_data: dict, entry: Artifact, base: dict, log
) -> dict:
    from .onnx_export import OnnxArtifact, runtime_version

    if entry.format == "onnx-int8":  # int8 is proven by ranking, not bit parity: its gate ran at package time
        return {
            **base,
            "passed": True,
            "devices": ["cpu"],
            "checked": "sha256 and size only (its ranking gate is in the manifest)",
            "quality_gate": entry.quality_gate,
        }
    log(f"validating {entry.file} with onnxruntime {runtime_version()} against encode_document on CPU")
    loaded = {"cpu": OnnxArtifact(target)}
    doc = parity.validate_document(spec, loaded, tokenizer_data, prune_ratio=_prune_ratio(manifest))
    return {
        **base,
        "runtime": f"onnxruntime {runtime_version()}",
        **_summary(doc, manifest),
        **_as_query_encoder(spec, manifest, loaded, tokenizer_data),
    }


def _verify_half(spec, target: Path, tokenizer_data: dict, exporter, base: dict, log) -> dict:
    if not cuda_available():
        raise SparsepackError(
            "this package is fp16 (a GPU-only artifact) and no CUDA device is visible here; verify it on a GPU machine"
        )
    from .wrapper import SparseDocumentEncoder

    log(f"gating {base['file']} (fp16, CUDA) by ranking against the fp32 model on CPU")
    reference = SparseDocumentEncoder(
        spec.mlm, spec.activation, spec.pooling, spec.special_ids, spec.vocab_size, 0.0
    ).eval()

    def fp32_on_cpu(batch):
        return reference({k: v.cpu() for k, v in batch.items()})

    gate = half_precision_gate(
        spec, fp32_on_cpu, exporter.load(target, "cuda"), tokenizer_data, "cuda", HALF_PRECISION_GATE
    )
    out = {
        **base,
        "precision": "fp16",
        "device_portable": True,
        "devices": ["cuda"],
        "quality_gate": gate,
        "passed": gate["passed"],
    }
    if not gate["passed"]:
        out.update(
            failed_on="cuda", why=f"nDCG@10 {gate['ndcg_at_10']:.4f}, Jaccard {gate['jaccard']:.4f} below the gate"
        )
    return out
