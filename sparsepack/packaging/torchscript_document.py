"""The TorchScript document artifact: trace, check the operators each target line's libtorch has, zip, reload from the
zip on every device asked for and prove it; an fp16 variant is gated by ranking against the proven fp32 trace."""

from __future__ import annotations

from pathlib import Path

from ..errors import QualityGateError, SparsepackError
from . import parity
from .archive import artifact_entry, write_artifact_zip
from .artifact_zip import load_from_zip
from .document import DocumentArtifact, example_batch
from .gpu import GpuOptions, PlacedArtifact, half_precision_gate
from .opcheck import compatibility
from .portability import require_device_portable
from .tokenizer_export import dumps


def torchscript_document(
    spec,
    wrapper,
    doc_tok,
    staging,
    work,
    name,
    license_bytes,
    prune_ratio,
    targets,
    exporter,
    log,
    gpu: GpuOptions,
    references: dict | None = None,
) -> DocumentArtifact:
    log("tracing the document encoder (eager attention)")
    pt_path = work / f"{name}{exporter.suffix}"
    # the proof's reference does not depend on the artifact: compute it while the trace worker starts up
    prefill = None if references is None else (lambda: parity.cached_reference(spec, doc_tok, cache=references))
    exporter.export(wrapper, example_batch(doc_tok), pt_path, while_waiting=prefill)
    require_device_portable(pt_path)
    ops = exporter.operators(pt_path)
    compat = compatibility(ops)
    for line in targets:
        if not compat[line]["compatible"]:
            op = compat[line]["missing_ops"][0]
            raise SparsepackError(
                f"traced graph uses {op}, unknown to libtorch {compat[line]['libtorch']} (OpenSearch {line}); "
                f"trace with eager attention or drop {line} with --opensearch"
            )

    doc_zip = staging / f"{name}-sparse-encoding.zip"
    _write_document_zip(doc_zip, pt_path, doc_tok, license_bytes)
    log(f"validating the document artifact against encode_document on {', '.join(gpu.devices)}")
    loaded = {d: load_from_zip(doc_zip, work / "reloaded", d) for d in gpu.devices}
    placed = PlacedArtifact({d: artifact for d, (artifact, _) in loaded.items()})
    unpacked_tok = loaded["cpu"][1]
    doc_parity = parity.validate_document(
        spec, placed, unpacked_tok, reference_cache=references, prune_ratio=prune_ratio
    )
    parity.require(doc_parity, "document")
    if gpu.precision == "fp16":
        doc_parity = _half_precision_document(
            spec, wrapper, doc_tok, doc_zip, work, name, license_bytes, exporter, placed, doc_parity, gpu, log
        )
    entry = artifact_entry(doc_zip, "document", "SPARSE_ENCODING", exporter.model_format, format="torchscript")
    return DocumentArtifact(entry, placed, unpacked_tok, ops, compat, doc_parity)


def _write_document_zip(doc_zip: Path, pt_path: Path, doc_tok: dict, license_bytes: bytes | None) -> None:
    write_artifact_zip(
        doc_zip,
        {pt_path.name: pt_path.read_bytes(), "tokenizer.json": dumps(doc_tok)},
        license_bytes,
        stored=(pt_path.name,),
    )


def _half_precision_document(
    spec,
    wrapper,
    doc_tok,
    doc_zip,
    work,
    name,
    license_bytes,
    exporter,
    fp32: PlacedArtifact,
    fp32_parity: dict,
    gpu: GpuOptions,
    log,
) -> dict:
    """Replace the fp32 document zip with an fp16 trace, once its ranking agrees with the proven fp32 trace."""
    log(f"tracing the fp16 document encoder on {gpu.fp16_device}")
    half_dir = work / "fp16"
    half_dir.mkdir()
    pt16 = half_dir / f"{name}{exporter.suffix}"
    exporter.export(wrapper, example_batch(doc_tok), pt16, device=gpu.fp16_device, half=True)
    require_device_portable(pt16)
    fp16 = exporter.load(pt16, gpu.fp16_device)
    fp32_there = (
        fp32[gpu.fp16_device]
        if gpu.fp16_device in fp32
        else exporter.load(work / "reloaded" / f"{name}{exporter.suffix}", gpu.fp16_device)
    )
    log("gating the fp16 artifact: ranking agreement with the fp32 trace")
    gate = half_precision_gate(spec, fp32_there, fp16, doc_tok, gpu.fp16_device)
    if not gate["passed"]:
        raise QualityGateError(
            f"fp16 artifact fails the quality gate: nDCG@10 {gate['ndcg_at_10']:.4f} (>= "
            f"{gate['thresholds']['ndcg_at_10']}), Jaccard {gate['jaccard']:.4f} (>= "
            f"{gate['thresholds']['jaccard']}); use the fp32 artifact for this model"
        )
    _write_document_zip(doc_zip, pt16, doc_tok, license_bytes)
    return {
        **fp32_parity,
        "precision": "fp16",
        "of": "the fp32 trace the fp16 artifact was gated against",
        "quality_gate": gate,
    }
