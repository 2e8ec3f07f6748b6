"""Where the int8 artifact's time goes on trained SPLADE-tiny, from onnxruntime's own profiler: op-type shares at
batch 1, one thread, short document, ONNX fp32 vs the gated int8 variant, and whether quantizing the tied masked-LM
decoder MatMul (128 x 30,522 per token) as well - int8 table x dynamically quantised activations, one scale per token,
no second copy of the table - still passes the ranking gate and is faster. Printed, never asserted.

    python bench/int8_profile.py [--runs N] [--no-gate]

The gate is the package's: nDCG@10 and recall@100 >= 0.98 vs the fp32 source model on the built-in corpus of 500
documents and 100 queries (a few minutes on 2 cores: the model and each variant rank the corpus).
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import LONG_DOC, SHORT_DOC, docs_per_second, machine_line, unzip_artifact  # noqa: E402

from sparsepack.packaging.onnx_export import INPUT_NAMES, OUTPUT_NAME, OnnxArtifact  # noqa: E402
from sparsepack.packaging.package import package  # noqa: E402
from sparsepack.packaging.quantize import candidate_exclusions, quantize_int8  # noqa: E402
from sparsepack.wheel_models import build_trained_splade  # noqa: E402


def quantize_decoder(src: Path, dst: Path, per_token: bool = False) -> dict:
    """The int8 artifact with its tied decoder MatMul made int8 too: MatMulInteger of the activations (quantised per
    call) by the transposed int8 embedding table (a Transpose node of the stored table, folded at session start: no
    second copy), rescaled by activation scale x the table's per-vocabulary-token scale. Activations: one scale for
    the whole call (DynamicQuantizeLinear; onnxruntime fuses the chain into DynamicQuantizeMatMul) or, ``per_token``,
    one symmetric scale per input token (its own max |x| / 127, stored uint8 around zero point 128)."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.load(str(src))
    g = model.graph
    tied = next(n for n in g.node if n.op_type == "Transpose" and n.name.startswith("sparsepack_tied_"))
    idx, mm = next((i, n) for i, n in enumerate(g.node) if n.op_type == "MatMul" and n.input[1] == tied.output[0])
    table = tied.input[0]
    q, s = f"{table}_int8", f"{table}_scale"
    if q not in {i.name for i in g.initializer}:
        raise SystemExit("the tied table is not stored int8: run quantize_int8 first")
    p = "sparsepack_decoder_int8"
    if per_token:
        import numpy as np
        from onnx import numpy_helper

        g.initializer.extend(
            [
                numpy_helper.from_array(np.array(v, dtype=dt), f"{p}_{n}")
                for n, v, dt in (
                    ("eps", 1e-12, np.float32),
                    ("q", 127.0, np.float32),
                    ("c128", 128.0, np.float32),
                    ("zp", 128, np.uint8),
                )
            ]
        )
        nodes = [
            helper.make_node("Transpose", [q], [f"{p}_qT"], name=f"{p}_qT", perm=[1, 0]),
            helper.make_node("Transpose", [s], [f"{p}_sT"], name=f"{p}_sT", perm=[1, 0]),
            helper.make_node("Abs", [mm.input[0]], [f"{p}_abs"], name=f"{p}_abs"),
            helper.make_node("ReduceMax", [f"{p}_abs"], [f"{p}_max"], name=f"{p}_max", axes=[-1], keepdims=1),
            helper.make_node("Max", [f"{p}_max", f"{p}_eps"], [f"{p}_max1"], name=f"{p}_max1"),
            helper.make_node("Div", [f"{p}_max1", f"{p}_q"], [f"{p}_xs"], name=f"{p}_xs"),
            helper.make_node("Div", [mm.input[0], f"{p}_xs"], [f"{p}_xd"], name=f"{p}_xd"),
            helper.make_node("Round", [f"{p}_xd"], [f"{p}_xr"], name=f"{p}_xr"),
            helper.make_node("Add", [f"{p}_xr", f"{p}_c128"], [f"{p}_xa"], name=f"{p}_xa"),
            helper.make_node("Cast", [f"{p}_xa"], [f"{p}_x"], name=f"{p}_x", to=TensorProto.UINT8),
            helper.make_node("MatMulInteger", [f"{p}_x", f"{p}_qT", f"{p}_zp"], [f"{p}_acc"], name=f"{p}_mm"),
            helper.make_node("Cast", [f"{p}_acc"], [f"{p}_accf"], name=f"{p}_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{p}_accf", f"{p}_xs"], [f"{p}_rowscaled"], name=f"{p}_rowscale"),
            helper.make_node("Mul", [f"{p}_rowscaled", f"{p}_sT"], [mm.output[0]], name=f"{p}_rescale"),
        ]
    else:
        nodes = [
            helper.make_node("Transpose", [q], [f"{p}_qT"], name=f"{p}_qT", perm=[1, 0]),
            helper.make_node("Transpose", [s], [f"{p}_sT"], name=f"{p}_sT", perm=[1, 0]),
            helper.make_node("DynamicQuantizeLinear", [mm.input[0]], [f"{p}_x", f"{p}_xs", f"{p}_xzp"], name=f"{p}_dq"),
            helper.make_node("MatMulInteger", [f"{p}_x", f"{p}_qT", f"{p}_xzp"], [f"{p}_acc"], name=f"{p}_mm"),
            helper.make_node("Cast", [f"{p}_acc"], [f"{p}_accf"], name=f"{p}_cast", to=TensorProto.FLOAT),
            helper.make_node("Mul", [f"{p}_xs", f"{p}_sT"], [f"{p}_scale"], name=f"{p}_scale"),
            helper.make_node("Mul", [f"{p}_accf", f"{p}_scale"], [mm.output[0]], name=f"{p}_rescale"),
        ]
    g.node.remove(mm)
    for offset, node in enumerate(nodes):
        g.node.insert(idx + offset, node)
    onnx.checker.check_model(model)
    dst.write_bytes(model.SerializeToString())
    return {"replaced": mm.name}


def profile(path: Path, feed: dict, runs: int) -> tuple[dict, dict, float]:
    """onnxruntime's profiler over ``runs`` calls after one warm-up: seconds per op type and per node, and the mean
    model_run time (ms), all per call."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.log_severity_level = 3
    options.enable_profiling = True
    options.profile_file_prefix = str(path.with_suffix(""))
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    session.run([OUTPUT_NAME], feed)
    for _ in range(runs):
        session.run([OUTPUT_NAME], feed)
    events = json.loads(Path(session.end_profiling()).read_text())
    run_events = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])
    cutoff = run_events[0]["ts"] + run_events[0]["dur"]  # drop the warm-up
    by_op, by_node = defaultdict(float), defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= cutoff:
            by_op[e["args"]["op_name"]] += e["dur"] / runs / 1000
            by_node[(e["args"]["op_name"], e["name"][: -len("_kernel_time")])] += e["dur"] / runs / 1000
    mean_run = sum(e["dur"] for e in run_events[1:]) / max(len(run_events) - 1, 1) / 1000
    return dict(by_op), dict(by_node), mean_run


def gate_variants(model_dir: Path, tok_data: dict, vocab_size: int, variants: dict[str, Path]) -> dict[str, dict]:
    from sparsepack.metrics.gate import MIN_DOCUMENTS, MIN_QUERIES, Gate
    from sparsepack.packaging.evaluation import artifact_encoder, evaluate, load_corpus, model_encoder
    from sparsepack.packaging.introspect import load_model

    spec = load_model(str(model_dir))
    truth = model_encoder(str(model_dir), int(tok_data["truncation"]["max_length"]), spec=spec)
    corpus = load_corpus(None, None, None, truth.vocab, MIN_DOCUMENTS, MIN_QUERIES)
    vectors = (truth.queries(corpus.queries), truth.documents(corpus.docs))
    truth = type(truth)(truth.name, lambda t: vectors[1], lambda t: vectors[0], truth.vocab)
    out = {}
    for label, path in variants.items():
        figures = Gate().check(
            evaluate(truth, artifact_encoder(label, OnnxArtifact(path), tok_data, vocab_size), corpus)
        )
        out[label] = figures
        print(
            f"  gate {label:38s} nDCG@10 {figures['ndcg_at_10']:.4f}  recall@100 {figures['recall_at_100']:.4f}  "
            f"{'PASS' if figures['passed'] else 'fail'}",
            flush=True,
        )
    return out


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    print(machine_line(), flush=True)
    import warnings

    warnings.filterwarnings("ignore")
    runs = int(sys.argv[sys.argv.index("--runs") + 1]) if "--runs" in sys.argv else 300
    torch.set_num_threads(1)
    root = Path(tempfile.mkdtemp(prefix="sparsepack-int8prof-"))
    atexit.register(shutil.rmtree, root, True)
    model_dir = build_trained_splade(root / "model-trained")
    manifest = package(str(model_dir), root / "pkg", artifact_format="both", log=lambda m: None)
    files = {a["format"]: root / "pkg" / a["file"] for a in manifest["artifacts"] if a["role"] == "document"}
    fp32, tok = unzip_artifact(files["onnx"], ".onnx", root)
    pt, _ = unzip_artifact(files["torchscript"], ".pt", root)
    tok_data = tok.data
    exclusions = dict(candidate_exclusions(fp32))
    variants = {"onnx fp32": fp32}
    for label in ("all-matmuls", "sensitive-fp32"):
        variants[f"int8 {label}"] = root / f"int8-{label}.onnx"
        quantize_int8(fp32, variants[f"int8 {label}"], exclude=exclusions[label])
        variants[f"int8 {label} + int8 decoder"] = root / f"int8-{label}-dec.onnx"
        quantize_decoder(variants[f"int8 {label}"], variants[f"int8 {label} + int8 decoder"])
        variants[f"int8 {label} + decoder per-token"] = root / f"int8-{label}-dec-pt.onnx"
        quantize_decoder(variants[f"int8 {label}"], variants[f"int8 {label} + decoder per-token"], per_token=True)
    print(
        f"trained SPLADE-tiny (2x128, vocab {manifest['vocab_size']}), onnxruntime profiler, batch 1, 1 thread, "
        f"{runs} runs per variant; {_load()}",
        flush=True,
    )
    for label, path in variants.items():
        print(f"  file {label:38s} {path.stat().st_size / 1e6:6.2f} MB")

    ts = torch.jit.load(str(pt))
    for doc_label, text in (("short", SHORT_DOC), ("300-word", LONG_DOC)):
        batch = tok.batch([text])
        feed = {INPUT_NAMES[0]: batch["input_ids"].numpy(), INPUT_NAMES[1]: batch["attention_mask"].numpy()}
        print(f"\n{doc_label} document ({batch['input_ids'].shape[1]} tokens), {_load()}")
        with torch.inference_mode():
            speeds = {"torchscript fp32": docs_per_second(lambda t: ts(tok.batch([t])), text)}
            for label, path in variants.items():
                runner = OnnxArtifact(path, threads=1)
                speeds[label] = docs_per_second(lambda t, r=runner: r(tok.batch([t])), text)
        for label, value in speeds.items():
            print(
                f"  {label:38s} {value:8.1f} docs/s  {value / speeds['torchscript fp32']:5.2f}x TorchScript fp32  "
                f"{value / speeds.get('onnx fp32', value):5.2f}x ONNX fp32"
            )
        if doc_label != "short":
            continue
        for label, path in variants.items():
            by_op, by_node, mean_run = profile(path, feed, runs)
            total = sum(by_op.values())
            print(f"  profile {label}: model_run {mean_run:.3f} ms/call, kernels {total:.3f} ms/call")
            for op, ms in sorted(by_op.items(), key=lambda kv: -kv[1])[:8]:
                print(f"      {op:28s} {ms:7.3f} ms  {100 * ms / total:5.1f}%")
            top = sorted(by_node.items(), key=lambda kv: -kv[1])[:3]
            print("      top nodes: " + "; ".join(f"{n} ({op}) {ms:.3f} ms" for (op, n), ms in top))
    if "--no-gate" not in sys.argv:
        print(f"\nranking gate vs the fp32 model (500 documents, 100 queries), {_load()}", flush=True)
        t0 = time.perf_counter()
        gate_variants(
            model_dir, tok_data, manifest["vocab_size"], {k: v for k, v in variants.items() if k != "onnx fp32"}
        )
        print(f"  ({time.perf_counter() - t0:.0f}s)")


if __name__ == "__main__":
    main()
