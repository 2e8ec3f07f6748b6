"""``sparsepack package``: model -> ML Commons artifacts + manifest + proof of parity, written atomically."""
from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path
from typing import Callable

from .. import __version__
from ..contract.formats import FORMATS, for_format
from ..contract.limits import ML_COMMONS_MAX_LENGTH, document_max_length
from ..contract.naming import slug
from ..contract.package_dir import MANIFEST
from ..errors import QualityGateError, SparsepackError
from ..templates import write_package_bodies
from . import parity
from .archive import artifact_entry, write_artifact_zip
from .artifact_zip import load_from_zip, query_side
from .exporter import EXPORTERS
from .introspect import ModelSpec, load_model
from .onnx_export import DEFAULT_ONNX_THREADS, check_onnx_threads, onnx_document_artifact
from .opcheck import LIBTORCH_BY_LINE, compatibility
from .quantize import int8_document_artifact, int8_options
from .query_weights import apply_idf_rule, bi_encoder_record, lowest_weight_query
from .tokenizer_export import dumps, idf_json, server_token_strings, tokenizer_json
from .gpu import GpuOptions, PlacedArtifact, half_precision_gate
from .portability import require_device_portable
from .wrapper import SparseDocumentEncoder



def _log(msg: str) -> None:
    print(f"sparsepack: {msg}", file=sys.stderr, flush=True)


def _library_versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for dist in ("torch", "transformers", "sentence-transformers", "tokenizers"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            out[dist] = "absent"
    return out


def _example_batch(tokenizer_data: dict) -> dict:
    # Padding in the example makes the trace record the attention-mask path batches need.
    return parity.DjlStyleTokenizer(tokenizer_data).batch(["hello world", parity.DOCUMENT_BATTERY[1]])


def package(model: str, out: str | Path, revision: str | None = None, trust_remote_code: bool = False,
            max_length: int | None = None, prune_ratio: float = 0.0, targets: tuple[str, ...] = tuple(LIBTORCH_BY_LINE),
            force: bool = False, artifact_format: str = "torchscript", log: Callable[[str], None] = _log,
            spec: ModelSpec | None = None, precision: str = "fp32", verify_devices: str = "auto",
            fp16_device: str = "cuda", quantize: str | None = None, quality_gate: str | None = None,
            onnx_threads: int | None = None) -> dict:
    """``spec``: an already loaded model (``load_model``), so a caller that needs the model afterwards loads it once.
    ``verify_devices``: where the TorchScript proof runs (auto = CPU plus CUDA when visible). ``precision`` fp16: a
    GPU-only document artifact, traced on ``fp16_device`` and gated by ranking agreement with the fp32 trace (tests
    exercise the gate with ``fp16_device="cpu"``; users cannot: without CUDA fp16 is refused).
    ``artifact_format``: torchscript, onnx or both (one document artifact each, each with its own proof).
    ``quantize`` int8: also an int8 ONNX artifact, written only if it passes ``quality_gate`` (ndcg=X,recall=Y).
    ``onnx_threads``: the onnxruntime threads per inference each ONNX zip sets on the ML node (default 1, as ML Commons
    runs libtorch; 0: onnxruntime's default, a thread per core)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not force:
        raise SparsepackError(f"{out} already exists and is not empty; choose another -o or pass --force")
    if not 0.0 <= prune_ratio < 1.0:
        raise SparsepackError(f"--prune-ratio {prune_ratio} is outside [0, 1); use e.g. 0.1 to keep weights above 10% of the max")
    unknown = [t for t in targets if t not in LIBTORCH_BY_LINE]
    if unknown:
        raise SparsepackError(f"unknown OpenSearch line {unknown[0]!r}; use one of {', '.join(LIBTORCH_BY_LINE)}")
    if artifact_format not in FORMATS:
        raise SparsepackError(f"--format {artifact_format!r} is unknown; use one of {', '.join(FORMATS)}")
    gpu = GpuOptions.resolve(precision, verify_devices, fp16_device, artifact_format)
    int8_gate = int8_options(quantize, quality_gate, artifact_format)
    onnx_threads = check_onnx_threads(onnx_threads, artifact_format)

    if spec is None:
        log(f"loading {model}")
        spec = load_model(model, revision, trust_remote_code)
    length = document_max_length(spec.max_length, max_length)
    log(f"{spec.mode} model, activation {spec.activation}, {spec.pooling} pooling, vocab {spec.vocab_size}, max_length {length}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # readable by a service user (URL registration, local node)
    try:
        manifest = _build(spec, staging, length, prune_ratio, targets, [EXPORTERS[f]() for f in FORMATS[artifact_format]], log,
                          gpu, int8_gate, onnx_threads)
        for fmt in manifest["formats"]:  # register-meta + model-config next to each zip
            write_package_bodies(staging, for_format(manifest, fmt))
        (staging / MANIFEST).write_bytes(dumps(manifest))
        (staging / "README.md").write_text(model_card(manifest), encoding="utf-8")
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


def _build(spec: ModelSpec, staging: Path, length: int, prune_ratio: float, targets, exporters, log,
           gpu: GpuOptions = GpuOptions(), int8_gate=None, onnx_threads: int = DEFAULT_ONNX_THREADS) -> dict:
    name = slug(spec.source)
    license_bytes = spec.license_file.read_bytes() if spec.license_file else None
    work = staging / ".work"
    work.mkdir()

    doc_tok = tokenizer_json(spec.tokenizer, length)
    wrapper = SparseDocumentEncoder(spec.mlm, spec.activation, spec.pooling, spec.special_ids, spec.vocab_size, prune_ratio)
    artifacts, result, first = [], {}, None
    references: dict = {}  # encode_document's battery output, computed once for every format's proof
    if spec.mode == "bi-encoder":  # a model whose queries the cluster would refuse: said before any trace
        query_weights = _bi_encoder_query_weights(spec, doc_tok, prune_ratio, references)
    for exporter in exporters:  # the first format fills the manifest's top-level proof, operators and compatibility
        if exporter.model_format == "ONNX":
            art, loaded, unpacked_tok, ops, compat, doc_parity = onnx_document_artifact(
                spec, wrapper, doc_tok, staging, work, name, license_bytes, prune_ratio, _example_batch(doc_tok), log,
                references, onnx_threads)
        else:
            ops, compat, loaded, unpacked_tok, doc_parity = _torchscript_document(
                spec, wrapper, doc_tok, staging, work, name, license_bytes, prune_ratio, targets, exporter, log, gpu,
                references)
            art = artifact_entry(staging / f"{name}-sparse-encoding.zip", "document", "SPARSE_ENCODING",
                                 exporter.model_format, format="torchscript")
        suffix = "" if first is None else f"_{art['format']}"
        art["parity"] = f"document{suffix}"
        result[f"document{suffix}"] = doc_parity
        artifacts.append(art)
        if spec.mode == "bi-encoder":
            log(f"validating the {art['format']} artifact as query encoder against encode_query")
            result[f"query{suffix}"] = parity.validate_query_bi_encoder(spec, loaded, unpacked_tok, prune_ratio=prune_ratio)
            parity.require(result[f"query{suffix}"], "query")
        first = first or (ops, compat)
    if spec.mode == "inference-free":
        query_weights = _query_tokenize_artifact(spec, staging, length, license_bytes, name, artifacts, result, log)
    if int8_gate is not None:
        artifacts.append(int8_document_artifact(spec, work / f"{name}.onnx", doc_tok, staging, name, license_bytes,
                                                int8_gate, artifacts, log, onnx_threads))
    shutil.rmtree(work)
    return {**_manifest(spec, name, length, prune_ratio, *first, result, artifacts), "query_weights": query_weights,
            **_device_fields(gpu, exporters)}


def _torchscript_document(spec, wrapper, doc_tok, staging, work, name, license_bytes, prune_ratio, targets, exporter, log,
                          gpu: GpuOptions, references: dict | None = None):
    log("tracing the document encoder (eager attention)")
    pt_path = work / f"{name}{exporter.suffix}"
    # the proof's reference does not depend on the artifact: compute it while the trace worker starts up
    prefill = None if references is None else (lambda: parity.cached_reference(spec, doc_tok, cache=references))
    exporter.export(wrapper, _example_batch(doc_tok), pt_path, while_waiting=prefill)
    require_device_portable(pt_path)
    ops = exporter.operators(pt_path)
    compat = compatibility(ops)
    for line in targets:
        if not compat[line]["compatible"]:
            op = compat[line]["missing_ops"][0]
            raise SparsepackError(f"traced graph uses {op}, unknown to libtorch {compat[line]['libtorch']} (OpenSearch {line}); "
                                  f"trace with eager attention or drop {line} with --opensearch")

    doc_zip = staging / f"{name}-sparse-encoding.zip"
    _write_document_zip(doc_zip, pt_path, doc_tok, license_bytes)
    log(f"validating the document artifact against encode_document on {', '.join(gpu.devices)}")
    loaded = {d: load_from_zip(doc_zip, work / "reloaded", d) for d in gpu.devices}
    placed = PlacedArtifact({d: artifact for d, (artifact, _) in loaded.items()})
    unpacked_tok = loaded["cpu"][1]
    doc_parity = parity.validate_document(spec, placed, unpacked_tok, reference_cache=references, prune_ratio=prune_ratio)
    parity.require(doc_parity, "document")
    if gpu.precision == "fp16":
        doc_parity = _half_precision_document(spec, wrapper, doc_tok, doc_zip, work, name, license_bytes, exporter, placed,
                                              doc_parity, gpu, log)
    return ops, compat, placed, unpacked_tok, doc_parity


def _write_document_zip(doc_zip: Path, pt_path: Path, doc_tok: dict, license_bytes: bytes | None) -> None:
    write_artifact_zip(doc_zip, {pt_path.name: pt_path.read_bytes(), "tokenizer.json": dumps(doc_tok)}, license_bytes,
                       stored=(pt_path.name,))


def _half_precision_document(spec, wrapper, doc_tok, doc_zip, work, name, license_bytes, exporter, fp32: PlacedArtifact,
                             fp32_parity: dict, gpu: GpuOptions, log) -> dict:
    """Replace the fp32 document zip with an fp16 trace, once its ranking agrees with the proven fp32 trace."""
    log(f"tracing the fp16 document encoder on {gpu.fp16_device}")
    half_dir = work / "fp16"
    half_dir.mkdir()
    pt16 = half_dir / f"{name}{exporter.suffix}"
    exporter.export(wrapper, _example_batch(doc_tok), pt16, device=gpu.fp16_device, half=True)
    require_device_portable(pt16)
    fp16 = exporter.load(pt16, gpu.fp16_device)
    fp32_there = fp32[gpu.fp16_device] if gpu.fp16_device in fp32 else exporter.load(work / "reloaded" / f"{name}{exporter.suffix}", gpu.fp16_device)
    log("gating the fp16 artifact: ranking agreement with the fp32 trace")
    gate = half_precision_gate(spec, fp32_there, fp16, doc_tok, gpu.fp16_device)
    if not gate["passed"]:
        raise QualityGateError(f"fp16 artifact fails the quality gate: nDCG@10 {gate['ndcg_at_10']:.4f} (>= "
                               f"{gate['thresholds']['ndcg_at_10']}), Jaccard {gate['jaccard']:.4f} (>= "
                               f"{gate['thresholds']['jaccard']}); use the fp32 artifact for this model")
    _write_document_zip(doc_zip, pt16, doc_tok, license_bytes)
    return {**fp32_parity, "precision": "fp16", "of": "the fp32 trace the fp16 artifact was gated against",
            "quality_gate": gate}


def _query_tokenize_artifact(spec, staging, length, license_bytes, name, artifacts, result, log):
    q_length = min(int(spec.query_tokenizer.model_max_length or length), ML_COMMONS_MAX_LENGTH)
    q_tok = tokenizer_json(spec.query_tokenizer, q_length)
    names = server_token_strings(q_tok, spec.vocab_size)
    weights, query_weights = apply_idf_rule(spec.query_module.weight, names)
    if query_weights["floored_tokens"] or query_weights["scale"] != 1.0:
        log(f"query weights: {query_weights['floored_tokens']} zero-IDF tokens raised to {query_weights['floor']:.3g}, "
            f"scale {query_weights['scale']:g} (neural-search accepts (0, 64] only)")
    idf = idf_json(weights, names)
    q_zip = staging / f"{name}-sparse-tokenize.zip"
    write_artifact_zip(q_zip, {"tokenizer.json": dumps(q_tok), "idf.json": dumps(idf)}, license_bytes)
    log("validating the query tokenizer artifact against encode_query")
    unpacked_q_tok, unpacked_idf = query_side(q_zip)
    probe_text, _ = lowest_weight_query(unpacked_q_tok, unpacked_idf)
    result["query"] = parity.validate_query_tokenize(spec, unpacked_q_tok, unpacked_idf,
                                                     parity.QUERY_BATTERY + ([probe_text] if probe_text else []),
                                                     rule_weights=weights, rule=query_weights)
    parity.require(result["query"], "query")
    artifacts.append(artifact_entry(q_zip, "query", "SPARSE_TOKENIZE", "TORCH_SCRIPT"))
    return query_weights


def _bi_encoder_query_weights(spec, doc_tok: dict, prune_ratio: float, references: dict) -> dict:
    """The query battery's weights against neural-search's (0, 64] (refused above 64), from the model's own
    ``encode_query`` pruned as the graph prunes: the reference the artifact's query proof is then held to at 1e-5
    (cached, so computed once). Checked before any trace, so the refusal neither waits for one nor hides behind a parity
    failure (float32 sums of weights above 64 differ by more than 1e-5)."""
    vectors, _ = parity.prune_reference(parity.cached_reference(spec, doc_tok, parity.QUERY_BATTERY,
                                                                spec.encoder.encode_query, references), prune_ratio, 0.0)
    names = server_token_strings(doc_tok, spec.vocab_size)
    return bi_encoder_record([parity.reference_token_map(v, names) for v in vectors], parity.QUERY_BATTERY)


def _device_fields(gpu: GpuOptions, exporters) -> dict:
    """TorchScript traces are checked free of device constants (``require_device_portable``) before anything else."""
    torchscript = any(e.model_format == "TORCH_SCRIPT" for e in exporters)
    return {"device_portable": torchscript or None, "precision": gpu.precision, "requires_gpu": gpu.precision == "fp16",
            "verified_devices": list(gpu.devices)}


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
        "pruning": {"enabled": prune_ratio > 0, "type": "max_ratio", "ratio": prune_ratio} if prune_ratio else {"enabled": False},
        "libraries": _library_versions(),
        "attention": "eager",
        "operators": sorted(ops),
        "compatible_opensearch": sorted(line for line, c in compat.items() if c["compatible"]),
        "opensearch_compatibility": compat,
        "parity": result,
        "formats": [a["format"] for a in artifacts if a["role"] == "document"],
        "artifacts": artifacts,
    }


def load_manifest(path: str | Path) -> tuple[dict, Path]:
    """The manifest and its directory, from a package dir or a manifest.json path, validated by
    :mod:`sparsepack.packaging.manifest` (schema, artifact paths that stay inside the folder)."""
    from . import manifest as manifest_mod

    loaded = manifest_mod.load(path)
    return loaded.data, loaded.root


def verify_artifacts(manifest: dict, root: Path) -> None:
    """Refuse before any upload when a zip differs from what the manifest recorded (size, sha256), or holds an entry
    that could escape its folder (``../``, absolute, symlink) or a JSON entry that does not parse."""
    from . import manifest as manifest_mod

    manifest_mod.verify(manifest_mod.validate(manifest, Path(root)))


def _query_weights_line(rule: dict | None) -> str:
    if not rule:
        return ""
    if "max_weight" in rule:
        return f"- Query weights (bi-encoder, neural-search accepts (0, 64]): battery maximum {rule['max_weight']:.4g}."
    return (f"- Query weights kept in (0, 64]: {rule['floored_tokens']} zero-IDF tokens raised to {rule['floor']:.3g}, "
            f"scale {rule['scale']:g} (see the manifest's `query_weights`).")


def _device_line(manifest: dict) -> str:
    devices = ", ".join(manifest.get("parity", {}).get("document", {}).get("devices", ["cpu"]))
    if manifest.get("requires_gpu"):
        return f"**fp16, GPU ML nodes only** (release with --node-attr/--nodes); proven on {devices}"
    return f"Device-portable (runs on CPU and GPU ML nodes); proven on {devices}"


def _onnx_threads_line(manifest: dict) -> str:
    onnx = [a for a in manifest["artifacts"] if a.get("runtime_options")]
    if not onnx:
        return ""
    threads = onnx[0]["runtime_options"]["intra_op_threads"]
    how = f"{threads} per inference (`serving.properties`)" if isinstance(threads, int) else threads
    return f"\n- ONNX on the ML node: onnxruntime threads {how}"


def model_card(manifest: dict) -> str:
    rows = "\n".join(f"| {a['role']} | `{a['file']}` | {a['function_name']} | `{a['sha256'][:16]}…` | {a['size_bytes']:,} |"
                     for a in manifest["artifacts"])
    doc = manifest["parity"]["document"]
    query = manifest["parity"]["query"]
    src = manifest["source"]
    return f"""# {manifest['name']}: OpenSearch neural sparse artifacts

Built by sparsepack {manifest['sparsepack_version']} from `{src['model']}`{f" (revision `{src['revision']}`)" if src['revision'] else ''}.

- Mode: **{manifest['mode']}**; activation `{manifest['activation']}`, `{manifest['pooling']}` pooling
- Documents truncated at {manifest['max_length']} tokens (explicit truncation block in `tokenizer.json`)
- Vocabulary: {manifest['vocab_size']} tokens; special tokens zeroed inside the TorchScript graph
- Traced with eager attention; loads on OpenSearch {', '.join(manifest['compatible_opensearch']) or 'none'}
- {_device_line(manifest)}{_onnx_threads_line(manifest)}
- Libraries: {', '.join(f'{k} {v}' for k, v in manifest['libraries'].items())}

| role | file | function | sha256 | bytes |
|---|---|---|---|---|
{rows}

## Parity with the source model
- Documents: {doc['texts']} texts, batch sizes {', '.join(k.split('_')[1] for k in doc['by_batch_size'])}: identical token sets
  {doc['identical_token_sets']}, max |Δ| {doc['max_abs_diff']:.2e} (tolerance {doc['tolerance']:.0e}). {doc['special_tokens']}.
- Queries: {query['texts']} texts against `{query['reference']}`: {'passed' if query['passed'] else 'FAILED'}.
{_query_weights_line(manifest.get('query_weights'))}

## Register it
```
OPENSEARCH_PASSWORD=... sparsepack release PACKAGE_DIR --url https://localhost:9200 --username admin
```
or render the bodies yourself: `sparsepack render register-meta --manifest manifest.json --target-version 3.6`.
"""
