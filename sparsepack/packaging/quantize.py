"""int8 ONNX document artifact: smaller and faster on CPU nodes, but not equal to the model, so a ranking gate decides.

Two parts, each where int8 pays:
- the encoder's MatMuls with constant weights run as onnxruntime dynamic int8 (``MatMulInteger``: weights int8,
  activations quantised per call) - the speed. The weights use 7 bits (-64..64): on CPUs without VNNI (AVX2, and
  AVX-512 before Cascade Lake) onnxruntime adds each pair of uint8 x int8 products in 16 bits, which 8-bit weights
  overflow (255 x 127 x 2 > 32767), so the same file would rank worse there than on the VNNI machine that gated it;
  with 7-bit weights every CPU computes the exact integer sums, and the gate's figures hold on any ML node;
- the word-embedding matrix, which the masked-LM decoder shares (tied) and which is most of a small model's bytes,
  is stored int8 with one scale per token and rebuilt as float32 by ``Cast`` x ``Mul`` - constant inputs only, so
  onnxruntime folds them once when the session starts and the decoder still multiplies in float32 - the size.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from ..errors import SparsepackError

SCHEMES = ("dynamic", "dynamic-per-channel")
WEIGHT_LIMIT = 64  # 7-bit weights: 255 x 64 x 2 = 32,640 fits the int16 pair sums of non-VNNI kernels


def quantize_int8(src: Path, dst: Path, scheme: str = "dynamic-per-channel", exclude: tuple[str, ...] = ()) -> dict:
    """``src`` fp32 ONNX -> ``dst`` int8 ONNX. ``exclude``: MatMul node names kept in float32."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if scheme not in SCHEMES:
        raise SparsepackError(f"int8 scheme {scheme!r} is unknown; use one of {', '.join(SCHEMES)}")
    with tempfile.TemporaryDirectory(prefix="sparsepack-int8-") as tmp:
        staged = Path(tmp) / "int8.onnx"
        logging.disable(logging.WARNING)  # the quantizer advises "pre-processing" on the root logger, for CNNs
        try:
            quantize_dynamic(
                str(src),
                str(staged),
                weight_type=QuantType.QInt8,
                per_channel=scheme.endswith("per-channel"),
                reduce_range=True,
                op_types_to_quantize=["MatMul"],
                nodes_to_exclude=list(exclude),
                extra_options={"MatMulConstBOnly": True},
            )
        finally:
            logging.disable(logging.NOTSET)
        model = onnx.load(str(staged))
    quantized = sum(1 for n in model.graph.node if n.op_type == "MatMulInteger")
    widest = max_matmul_weight(model)
    if widest > WEIGHT_LIMIT:
        raise SparsepackError(
            f"the int8 quantizer wrote MatMul weights up to {widest}, over the {WEIGHT_LIMIT} that keep the integer "
            f"sums exact on every CPU; package without int8, or with another onnxruntime version"
        )
    embedding = quantize_embedding_table(model)
    _strip_ort_metadata(model)
    onnx.checker.check_model(model)
    dst.write_bytes(model.SerializeToString())
    return {
        "scheme": scheme,
        "matmuls_int8": quantized,
        "max_abs_weight": widest,
        "excluded": sorted(exclude),
        "embedding": embedding,
    }


def max_matmul_weight(model) -> int:
    """The largest |int8 weight| any ``MatMulInteger`` multiplies by (0 when none does)."""
    from onnx import numpy_helper

    consts = {i.name: i for i in model.graph.initializer}
    weights = [consts[n.input[1]] for n in model.graph.node if n.op_type == "MatMulInteger" and n.input[1] in consts]
    return max((int(np.abs(numpy_helper.to_array(w).astype(np.int16)).max()) for w in weights), default=0)


def inexact_integer_sums(model_path: Path, batch: dict) -> tuple[int, int]:
    """Run the int8 ONNX file with onnxruntime on this CPU on a tokenizer batch (``input_ids``, ``attention_mask``) and
    compare every ``MatMulInteger`` output with the exact integer product of its inputs: (sums that differ, sums).
    Non-zero means this CPU's int8 kernel saturated."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    from .onnx_export import INPUT_NAMES

    inputs = {name: batch[key].numpy() for name, key in zip(INPUT_NAMES, ("input_ids", "attention_mask"), strict=True)}

    model = onnx.load(str(model_path))
    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMulInteger"]
    exposed = {o.name for o in model.graph.output}
    for name in dict.fromkeys(x for n in matmuls for x in (*n.input, *n.output) if x and x not in consts):
        if name not in exposed:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    values = dict(zip([o.name for o in session.get_outputs()], session.run(None, inputs), strict=True))

    def value(name: str) -> np.ndarray:
        return (values[name] if name in values else consts[name]).astype(np.int64)

    wrong = total = 0
    for node in matmuls:
        a, b = value(node.input[0]), value(node.input[1])
        zero_a = value(node.input[2]) if len(node.input) > 2 and node.input[2] else 0
        zero_b = value(node.input[3]) if len(node.input) > 3 and node.input[3] else 0
        exact = np.matmul(a - zero_a, b - zero_b)
        wrong += int((value(node.output[0]) != exact).sum())
        total += exact.size
    return wrong, total


def quantize_embedding_table(model) -> dict:
    """Store the (tied) word-embedding initializer int8 with a per-row scale; rebuild it as float32 in the graph."""
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    table = next((i for i in graph.initializer if i.name.endswith("word_embeddings.weight")), None)
    if table is None:
        raise SparsepackError(
            "no word_embeddings.weight initializer in the ONNX graph; int8 needs a BERT-style encoder"
        )
    weights = numpy_helper.to_array(table).astype(np.float32)
    scale = np.abs(weights).max(axis=1, keepdims=True) / 127.0
    scale[scale == 0] = 1.0
    q = np.clip(np.rint(weights / scale), -127, 127).astype(np.int8)
    name = table.name
    graph.initializer.remove(table)
    graph.initializer.extend(
        [numpy_helper.from_array(q, f"{name}_int8"), numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale")]
    )
    cast = helper.make_node(
        "Cast", [f"{name}_int8"], [f"{name}_float"], name="sparsepack_embedding_cast", to=TensorProto.FLOAT
    )
    mul = helper.make_node("Mul", [f"{name}_float", f"{name}_scale"], [name], name="sparsepack_embedding_scale")
    graph.node.insert(0, mul)
    graph.node.insert(0, cast)
    rebuilt = q.astype(np.float32) * scale
    return {"initializer": name, "shape": list(weights.shape), "max_abs_error": float(np.abs(rebuilt - weights).max())}


def _strip_ort_metadata(model) -> None:
    """The quantizer stamps its own producer; keep the file's bytes a function of the inputs only."""
    del model.metadata_props[:]


# Tried in order until one passes the gate: every constant-weight MatMul int8; then the layers whose inputs carry
# the widest ranges kept in float32 (the FFN output after GELU, the masked-LM head's transform right before the
# decoder); last, the embedding table only (no int8 arithmetic: size, not speed).
_SENSITIVE = ("/output/dense/", "/ffn/lin2/", "predictions/transform", "vocab_transform")


def candidate_exclusions(fp32_path: Path) -> list[tuple[str, tuple[str, ...]]]:
    import onnx

    model = onnx.load(str(fp32_path))
    consts = {i.name for i in model.graph.initializer}
    matmuls = [n.name for n in model.graph.node if n.op_type == "MatMul" and any(i in consts for i in n.input)]
    sensitive = tuple(n for n in matmuls if any(s in n for s in _SENSITIVE) and "/attention/" not in n)
    return [("all-matmuls", ()), ("sensitive-fp32", sensitive), ("embedding-only", tuple(matmuls))]


def int8_options(quantize: str | None, quality_gate: str | None, artifact_format: str):
    """The gate to hold an int8 artifact to, or None when no int8 artifact is asked for."""
    from ..metrics.gate import Gate

    if quantize is None:
        if quality_gate:
            raise SparsepackError("--quality-gate applies to --quantize int8; add --quantize int8 or drop it")
        return None
    if quantize != "int8":
        raise SparsepackError(f"--quantize {quantize!r} is unknown; use int8")
    if artifact_format == "torchscript":
        raise SparsepackError("--quantize int8 builds an ONNX artifact; add --format onnx or --format both")
    return Gate.parse(quality_gate)


def int8_document_artifact(
    spec,
    fp32_onnx: Path,
    doc_tok: dict,
    staging: Path,
    name: str,
    license_bytes: bytes | None,
    gate,
    artifacts: list[dict],
    log,
    threads: int = 1,
) -> dict:
    """Quantize, gate each candidate against the fp32 source model on the built-in corpus, zip the first that passes.
    None passing: QualityGateError (exit 3), and the caller's staging directory, with everything, is discarded."""
    from ..errors import QualityGateError
    from ..metrics.gate import MIN_DOCUMENTS, MIN_QUERIES
    from .archive import artifact_entry, write_artifact_zip
    from .evaluation import artifact_encoder, evaluate, load_corpus, model_encoder
    from .onnx_export import OnnxArtifact, compatibility, graph_facts, runtime_entries, runtime_options, runtime_version
    from .tokenizer_export import dumps

    truth = model_encoder(spec.source, int(doc_tok["truncation"]["max_length"]), spec=spec)
    corpus = load_corpus(None, None, None, truth.vocab, MIN_DOCUMENTS, MIN_QUERIES)
    truth_vectors = (truth.queries(corpus.queries), truth.documents(corpus.docs))
    truth = type(truth)(truth.name, lambda t: truth_vectors[1], lambda t: truth_vectors[0], truth.vocab)
    attempts = []
    for label, exclude in candidate_exclusions(fp32_onnx):
        path = fp32_onnx.with_name(f"{name}-int8.onnx")
        info = quantize_int8(fp32_onnx, path, exclude=exclude)
        log(
            f"int8 ({label}, {info['matmuls_int8']} MatMuls int8): ranking vs the fp32 model on "
            f"{len(corpus.docs)} documents, {len(corpus.queries)} queries"
        )
        candidate = artifact_encoder(f"onnx-int8 ({label})", OnnxArtifact(path), doc_tok, spec.vocab_size)
        figures = gate.check(evaluate(truth, candidate, corpus))
        attempts.append(
            {
                "variant": label,
                **info,
                "ndcg_at_10": figures["ndcg_at_10"],
                "recall_at_100": figures["recall_at_100"],
                "passed": figures["passed"],
            }
        )
        if figures["passed"]:
            break
    else:
        best = max(attempts, key=lambda a: (a["ndcg_at_10"] or 0) + (a["recall_at_100"] or 0))
        raise QualityGateError(
            f"no int8 variant passes the gate (nDCG@10 >= {gate.ndcg}, recall@100 >= {gate.recall}); "
            f"best: {best['variant']} nDCG@10 {best['ndcg_at_10']}, recall@100 {best['recall_at_100']}; "
            f"ship fp32 ONNX or lower --quality-gate knowingly"
        )
    doc_zip = staging / f"{name}-sparse-encoding-onnx-int8.zip"
    write_artifact_zip(
        doc_zip,
        {f"{name}.onnx": path.read_bytes(), "tokenizer.json": dumps(doc_tok), **runtime_entries(threads)},
        license_bytes,
    )
    facts = graph_facts(path)
    entry = artifact_entry(
        doc_zip,
        "document",
        "SPARSE_ENCODING",
        "ONNX",
        format="onnx-int8",
        opset=facts["opset"],
        ir_version=facts["ir_version"],
        runtime={"onnxruntime": runtime_version()},
        runtime_options=runtime_options(threads),
        opensearch_compatibility=compatibility(facts),
        quality_gate={
            **figures,
            "reference": "the fp32 source model (SparseEncoder)",
            "corpus": corpus.source,
            "variant": attempts[-1]["variant"],
            "attempts": attempts,
        },
    )
    torchscript = next((a for a in artifacts if a.get("format") == "torchscript"), None)
    if torchscript:
        entry["size_vs_torchscript_fp32"] = round(entry["size_bytes"] / torchscript["size_bytes"], 4)
    return entry
