"""One package's artifacts and manifest, built in a staging folder: each document format, the query side, int8."""

from __future__ import annotations

import shutil
from pathlib import Path

from .. import __version__
from ..contract.naming import slug
from . import parity
from .document import example_batch
from .evaluation import vocabulary
from .gpu import GpuOptions
from .introspect import ModelSpec
from .onnx_export import DEFAULT_ONNX_THREADS, onnx_document_artifact
from .quantize import int8_document_artifact
from .query_artifact import bi_encoder_query_weights, query_tokenize_artifact
from .tokenizer_export import tokenizer_json
from .torchscript_document import torchscript_document
from .weight_stats import package_weight_stats
from .wrapper import SparseDocumentEncoder


def build_package(
    spec: ModelSpec,
    staging: Path,
    length: int,
    prune_ratio: float,
    targets,
    exporters,
    log,
    gpu: GpuOptions | None = None,
    int8_gate=None,
    onnx_threads: int = DEFAULT_ONNX_THREADS,
    user_texts: dict | None = None,
) -> dict:
    gpu = gpu or GpuOptions()
    name = slug(spec.source)
    license_bytes = spec.license_file.read_bytes() if spec.license_file else None
    work = staging / ".work"
    work.mkdir()

    doc_tok = tokenizer_json(spec.tokenizer, length)
    wrapper = SparseDocumentEncoder(
        spec.mlm, spec.activation, spec.pooling, spec.special_ids, spec.vocab_size, prune_ratio
    )
    artifacts: list[dict] = []
    result: dict = {}
    first: tuple[set[str], dict] | None = None  # the first format's operators and compatibility
    references: dict = {}  # encode_document's battery output, computed once for every format's proof
    if spec.mode == "bi-encoder":  # a model whose queries the cluster would refuse: said before any trace
        query_weights = bi_encoder_query_weights(spec, doc_tok, prune_ratio, references)
    for exporter in exporters:  # the first format fills the manifest's top-level proof, operators and compatibility
        if exporter.model_format == "ONNX":
            doc = onnx_document_artifact(
                spec,
                wrapper,
                doc_tok,
                staging,
                work,
                name,
                license_bytes,
                prune_ratio,
                example_batch(doc_tok),
                log,
                references,
                onnx_threads,
            )
        else:
            doc = torchscript_document(
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
                gpu,
                references,
            )
        art = doc.entry
        suffix = "" if first is None else f"_{art['format']}"
        art["parity"] = f"document{suffix}"
        result[f"document{suffix}"] = doc.proof
        artifacts.append(art)
        if spec.mode == "bi-encoder":
            log(f"validating the {art['format']} artifact as query encoder against encode_query")
            result[f"query{suffix}"] = parity.validate_query_bi_encoder(
                spec, doc.loaded, doc.tokenizer_data, prune_ratio=prune_ratio
            )
            parity.require(result[f"query{suffix}"], "query")
        first = first or (doc.operators, doc.compatibility)
    query_rule_weights = None
    if spec.mode == "inference-free":
        query_weights, query_rule_weights = query_tokenize_artifact(
            spec, staging, length, license_bytes, name, artifacts, result, log
        )
    if int8_gate is not None:
        artifacts.append(
            int8_document_artifact(
                spec,
                work / f"{name}.onnx",
                doc_tok,
                staging,
                name,
                license_bytes,
                int8_gate,
                artifacts,
                log,
                onnx_threads,
            )
        )
    shutil.rmtree(work)
    assert first is not None  # every artifact format names at least one exporter
    log("measuring the output weights (SEISMIC quantization ceilings are fitted to them)")
    stats = package_weight_stats(
        spec, doc_tok, prune_ratio, references, query_rule_weights, log, vocabulary(doc_tok), user_texts
    )
    return {
        **_manifest(spec, name, length, prune_ratio, *first, result, artifacts),
        "query_weights": query_weights,
        **_device_fields(gpu, exporters),
        "weight_stats": stats,
    }


def _device_fields(gpu: GpuOptions, exporters) -> dict:
    """TorchScript traces are checked free of device constants (``require_device_portable``) before anything else."""
    torchscript = any(e.model_format == "TORCH_SCRIPT" for e in exporters)
    return {
        "device_portable": torchscript or None,
        "precision": gpu.precision,
        "requires_gpu": gpu.precision == "fp16",
        "verified_devices": list(gpu.devices),
    }


def _manifest(spec, name, length, prune_ratio, ops, compat, result, artifacts) -> dict:
    return {
        "sparsepack_version": __version__,
        "name": name,
        "source": {"model": spec.source, "revision": spec.revision},
        "mode": spec.mode,
        "activation": spec.activation,
        "pooling": spec.pooling,
        "max_length": length,
        "model_max_length": spec.max_length,
        "vocab_size": spec.vocab_size,
        "special_token_ids": spec.special_ids,
        "pruning": {"enabled": prune_ratio > 0, "type": "max_ratio", "ratio": prune_ratio}
        if prune_ratio
        else {"enabled": False},
        "libraries": _library_versions(),
        "attention": "eager",
        "operators": sorted(ops),
        "compatible_opensearch": sorted(line for line, c in compat.items() if c["compatible"]),
        "opensearch_compatibility": compat,
        "parity": result,
        "formats": [a["format"] for a in artifacts if a["role"] == "document"],
        "artifacts": artifacts,
    }


def _library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "transformers", "sentence-transformers", "tokenizers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "absent"
    return out
