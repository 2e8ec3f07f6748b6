"""The package's README.md: what was built, from what, proven how, and how to register it."""

from __future__ import annotations

from ..contract.limits import CEILING_RULE
from ..contract.manifest import CEILING_OF_SIDE, Manifest


def _query_weights_line(rule: dict | None) -> str:
    if not rule:
        return ""
    if "max_weight" in rule:
        return f"- Query weights (bi-encoder, neural-search accepts (0, 64]): battery maximum {rule['max_weight']:.4g}."
    return (
        f"- Query weights kept in (0, 64]: {rule['floored_tokens']} zero-IDF tokens raised to {rule['floor']:.3g}, "
        f"scale {rule['scale']:g} (see the manifest's `query_weights`)."
    )


def _weight_lines(manifest: Manifest) -> str:
    stats = manifest.weight_stats
    if stats is None:
        return ""
    lines = ["", "## Output weights (SEISMIC quantization ceilings)", f"Rule: {CEILING_RULE}."]
    fitted = stats.fitted_ceilings()
    for side, parameter in CEILING_OF_SIDE.items():
        for f in getattr(stats, side):
            clipped = (
                ""
                if f.above_default_ceiling is None
                else (f"; {f.above_default_ceiling:.2%} above the server default {f.default_ceiling:g} (clipped there)")
            )
            lines.append(
                f"- {side.capitalize()} on {f.measured_on}: max {f.max:.4g}, p99.9 {f.p99_9:.4g}, p99 {f.p99:.4g} "
                f"({f.weights:,} weights of {f.texts:,} texts){clipped}"
            )
        if parameter in fitted:
            lines.append(f"- `{parameter}` rendered by default: **{fitted[parameter]:g}**")
    return "\n".join(lines) + "\n"


def _device_line(manifest: Manifest) -> str:
    devices = ", ".join(manifest.parity.document.devices)
    if manifest.requires_gpu:
        return f"**fp16, GPU ML nodes only** (release with --node-attr/--nodes); proven on {devices}"
    return f"Device-portable (runs on CPU and GPU ML nodes); proven on {devices}"


def _onnx_threads_line(manifest: Manifest) -> str:
    onnx = [a for a in manifest.artifacts if a.runtime_options]
    if not onnx:
        return ""
    threads = onnx[0].runtime_options.intra_op_threads
    how = f"{threads} per inference (`serving.properties`)" if isinstance(threads, int) else threads
    return f"\n- ONNX on the ML node: onnxruntime threads {how}"


def model_card(manifest: Manifest) -> str:
    rows = "\n".join(
        f"| {a.role} | `{a.file}` | {a.function_name} | `{a.sha256[:16]}…` | {a.size_bytes:,} |"
        for a in manifest.artifacts
    )
    doc = manifest.parity.document
    query = manifest.parity.query
    src = manifest.source
    return f"""# {manifest.name}: OpenSearch neural sparse artifacts

Built by sparsepack {manifest.sparsepack_version} from `{src.model}`{f" (revision `{src.revision}`)" if src.revision else ""}.

- Mode: **{manifest.mode}**; activation `{manifest.activation}`, `{manifest.pooling}` pooling
- Documents truncated at {manifest.max_length} tokens (explicit truncation block in `tokenizer.json`)
- Vocabulary: {manifest.vocab_size} tokens; special tokens zeroed inside the TorchScript graph
- Traced with eager attention; loads on OpenSearch {", ".join(manifest.compatible_opensearch) or "none"}
- {_device_line(manifest)}{_onnx_threads_line(manifest)}
- Libraries: {", ".join(f"{k} {v}" for k, v in manifest.libraries.items())}

| role | file | function | sha256 | bytes |
|---|---|---|---|---|
{rows}

## Parity with the source model
- Documents: {doc.texts} texts, batch sizes {", ".join(k.split("_")[1] for k in doc.by_batch_size)}: identical token sets
  {doc.identical_token_sets}, max |Δ| {doc.max_abs_diff:.2e} (tolerance {doc.tolerance:.0e}). {doc.special_tokens}.
- Queries: {query.texts} texts against `{query.reference}`: {"passed" if query.passed else "FAILED"}.
{_query_weights_line(manifest.query_weights)}
{_weight_lines(manifest)}
## Register it
```
OPENSEARCH_PASSWORD=... sparsepack release PACKAGE_DIR --url https://localhost:9200 --username admin
```
or render the bodies yourself: `sparsepack render register-meta --manifest manifest.json --target-version 3.6`.
"""
