"""``sparsepack package``: model -> ML Commons artifacts + manifest + proof of parity, written atomically."""
from __future__ import annotations

import json
import re
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Callable

from .. import __version__
from ..errors import SparsepackError
from ..templates import write_package_bodies
from . import parity
from .archive import read_zip, sha256_file, write_zip
from .exporter import EXPORTERS
from .introspect import ModelSpec, load_model
from .onnx_export import FORMATS, for_format, onnx_document_artifact
from .opcheck import LIBTORCH_BY_LINE, compatibility
from .tokenizer_export import ML_COMMONS_MAX_LENGTH, dumps, idf_json, server_token_strings, tokenizer_json
from .wrapper import SparseDocumentEncoder

MANIFEST = "manifest.json"


def _log(msg: str) -> None:
    print(f"sparsepack: {msg}", file=sys.stderr, flush=True)


def slug(source: str) -> str:
    name = Path(source.rstrip("/")).name or "model"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.") or "model"


def resolve_max_length(spec: ModelSpec, requested: int | None) -> int:
    model_max = int(spec.max_length)
    if requested is None:
        return min(model_max, ML_COMMONS_MAX_LENGTH)
    if requested < 8:
        raise SparsepackError(f"--max-length {requested} is too small; use at least 8 tokens")
    if requested > ML_COMMONS_MAX_LENGTH:
        raise SparsepackError(f"--max-length {requested} exceeds 512, where ML Commons clamps every document; use <= 512")
    if requested > model_max:
        raise SparsepackError(f"--max-length {requested} exceeds the model's max_seq_length {model_max}; use <= {model_max}")
    return requested


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
            spec: ModelSpec | None = None) -> dict:
    """``spec``: an already loaded model (``load_model``), so a caller that needs the model afterwards loads it once.
    ``artifact_format``: torchscript, onnx or both (one document artifact each, each with its own proof)."""
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

    if spec is None:
        log(f"loading {model}")
        spec = load_model(model, revision, trust_remote_code)
    length = resolve_max_length(spec, max_length)
    log(f"{spec.mode} model, activation {spec.activation}, {spec.pooling} pooling, vocab {spec.vocab_size}, max_length {length}")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    staging.chmod(0o755)  # readable by a service user (URL registration, local node)
    try:
        manifest = _build(spec, staging, length, prune_ratio, targets, [EXPORTERS[f]() for f in FORMATS[artifact_format]], log)
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


def _build(spec: ModelSpec, staging: Path, length: int, prune_ratio: float, targets, exporters, log) -> dict:
    name = slug(spec.source)
    license_bytes = spec.license_file.read_bytes() if spec.license_file else None
    work = staging / ".work"
    work.mkdir()

    doc_tok = tokenizer_json(spec.tokenizer, length)
    wrapper = SparseDocumentEncoder(spec.mlm, spec.activation, spec.pooling, spec.special_ids, spec.vocab_size, prune_ratio)
    artifacts, result, first = [], {}, None
    for exporter in exporters:  # the first format fills the manifest's top-level proof, operators and compatibility
        if exporter.model_format == "ONNX":
            art, loaded, unpacked_tok, ops, compat, doc_parity = onnx_document_artifact(
                spec, wrapper, doc_tok, staging, work, name, license_bytes, prune_ratio, _example_batch(doc_tok), log)
        else:
            ops, compat, loaded, unpacked_tok, doc_parity = _torchscript_document(
                spec, wrapper, doc_tok, staging, work, name, license_bytes, prune_ratio, targets, exporter, log)
            art = {**_artifact_entry(staging / f"{name}-sparse-encoding.zip", "document", "SPARSE_ENCODING",
                                     exporter.model_format), "format": "torchscript"}
        suffix = "" if first is None else f"_{art['format']}"
        art["parity"] = f"document{suffix}"
        result[f"document{suffix}"] = doc_parity
        artifacts.append(art)
        if spec.mode == "bi-encoder":
            log(f"validating the {art['format']} artifact as query encoder against encode_query")
            result[f"query{suffix}"] = parity.validate_query_bi_encoder(spec, loaded, unpacked_tok)
            if prune_ratio == 0.0:
                parity.require(result[f"query{suffix}"], "query")
        first = first or (ops, compat)
    if spec.mode == "inference-free":
        _query_tokenize_artifact(spec, staging, length, license_bytes, name, artifacts, result, log)
    shutil.rmtree(work)
    return _manifest(spec, name, length, prune_ratio, *first, result, artifacts)


def _torchscript_document(spec, wrapper, doc_tok, staging, work, name, license_bytes, prune_ratio, targets, exporter, log):
    log("tracing the document encoder (eager attention)")
    pt_path = work / f"{name}{exporter.suffix}"
    exporter.export(wrapper, _example_batch(doc_tok), pt_path)
    ops = exporter.operators(pt_path)
    compat = compatibility(ops)
    for line in targets:
        if not compat[line]["compatible"]:
            op = compat[line]["missing_ops"][0]
            raise SparsepackError(f"traced graph uses {op}, unknown to libtorch {compat[line]['libtorch']} (OpenSearch {line}); "
                                  f"trace with eager attention or drop {line} with --opensearch")

    doc_entries = {pt_path.name: pt_path.read_bytes(), "tokenizer.json": dumps(doc_tok)}
    if license_bytes:
        doc_entries["LICENSE"] = license_bytes
    doc_zip = staging / f"{name}-sparse-encoding.zip"
    write_zip(doc_zip, doc_entries)

    log("validating the document artifact against encode_document")
    artifact = _load_from_zip(doc_zip, exporter, work)
    unpacked_tok = json.loads(read_zip(doc_zip)["tokenizer.json"])
    doc_parity = parity.validate_document(spec, artifact, unpacked_tok)
    if prune_ratio == 0.0:
        parity.require(doc_parity, "document")
    return ops, compat, artifact, unpacked_tok, doc_parity


def _query_tokenize_artifact(spec, staging, length, license_bytes, name, artifacts, result, log):
    q_length = min(int(spec.query_tokenizer.model_max_length or length), ML_COMMONS_MAX_LENGTH)
    q_tok = tokenizer_json(spec.query_tokenizer, q_length)
    names = server_token_strings(q_tok, spec.vocab_size)
    idf = idf_json(spec.query_module.weight.detach().float(), names)
    q_entries = {"tokenizer.json": dumps(q_tok), "idf.json": dumps(idf)}
    if license_bytes:
        q_entries["LICENSE"] = license_bytes
    q_zip = staging / f"{name}-sparse-tokenize.zip"
    write_zip(q_zip, q_entries)
    log("validating the query tokenizer artifact against encode_query")
    unpacked = read_zip(q_zip)
    result["query"] = parity.validate_query_tokenize(spec, json.loads(unpacked["tokenizer.json"]), json.loads(unpacked["idf.json"]))
    parity.require(result["query"], "query")
    artifacts.append(_artifact_entry(q_zip, "query", "SPARSE_TOKENIZE", "TORCH_SCRIPT"))


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


def _load_from_zip(doc_zip: Path, exporter, work: Path):
    with zipfile.ZipFile(doc_zip) as zf:
        pt_names = [n for n in zf.namelist() if n.endswith(exporter.suffix)]
        target = work / "reloaded" / pt_names[0]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(zf.read(pt_names[0]))
    return exporter.load(target)


def _artifact_entry(path: Path, role: str, function_name: str, model_format: str) -> dict:
    return {"role": role, "file": path.name, "function_name": function_name, "model_format": model_format,
            "sha256": sha256_file(path), "size_bytes": path.stat().st_size}


def load_manifest(path: str | Path) -> tuple[dict, Path]:
    """The manifest and its directory, from a package dir or a manifest.json path; artifacts re-hashed."""
    p = Path(path)
    manifest_path = p / MANIFEST if p.is_dir() else p
    if not manifest_path.exists():
        raise SparsepackError(f"no {MANIFEST} at {p}; run `sparsepack package MODEL -o DIR` first")
    try:
        manifest = json.loads(manifest_path.read_text())
    except json.JSONDecodeError as exc:
        raise SparsepackError(f"{manifest_path} is not valid JSON ({exc.msg}); re-run sparsepack package") from exc
    for key in ("artifacts", "compatible_opensearch", "mode"):
        if key not in manifest:
            raise SparsepackError(f"{manifest_path} lacks {key!r}; it was not written by sparsepack package")
    return manifest, manifest_path.parent


def verify_artifacts(manifest: dict, root: Path) -> None:
    """Refuse before any upload when a zip differs from what the manifest recorded."""
    for art in manifest["artifacts"]:
        path = root / art["file"]
        if not path.exists():
            raise SparsepackError(f"{path} is missing; re-run sparsepack package")
        digest = sha256_file(path)
        if digest != art["sha256"]:
            raise SparsepackError(f"{path.name}: sha256 {digest[:12]}... differs from the manifest's {art['sha256'][:12]}...; "
                                  f"the zip was modified: re-run sparsepack package")


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
- Libraries: {', '.join(f'{k} {v}' for k, v in manifest['libraries'].items())}

| role | file | function | sha256 | bytes |
|---|---|---|---|---|
{rows}

## Parity with the source model
- Documents: {doc['texts']} texts, batch sizes {', '.join(k.split('_')[1] for k in doc['by_batch_size'])}: identical token sets
  {doc['identical_token_sets']}, max |Δ| {doc['max_abs_diff']:.2e} (tolerance {doc['tolerance']:.0e}). {doc['special_tokens']}.
- Queries: {query['texts']} texts against `{query['reference']}`: {'passed' if query['passed'] else 'FAILED'}.

## Register it
```
OPENSEARCH_PASSWORD=... sparsepack release PACKAGE_DIR --url https://localhost:9200 --username admin
```
or render the bodies yourself: `sparsepack render register-meta --manifest manifest.json --target-version 3.6`.
"""
