"""GPU ML node speed: the fp32 and fp16 document artifacts vs SparseEncoder.encode_document on CUDA, at batch 1 and
32, on a short and a ~300-word document. Prints docs/s and ratios, the GPU and the torch version (never asserted).

    python bench/gpu.py [--out DIR] [--models tiny,realistic] [--device cuda]

``--device cpu`` dry-runs the whole script on a machine without CUDA (figures meaningless, code path checked).
With ``--out`` the figures are also written to DIR/gpu-bench.json.
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
from common import LONG_DOC, SHORT_DOC, build, machine_line, unzip_artifact  # noqa: E402

from sparsepack._st_compat import sparse_encoder_class  # noqa: E402
from sparsepack.errors import ParityError  # noqa: E402
from sparsepack.packaging.devices import device_facts, strict_fp32  # noqa: E402
from sparsepack.packaging.package import package  # noqa: E402


def docs_per_second(fn, batch: list[str], device: str, min_seconds: float = 2.0, min_calls: int = 5) -> float:
    def synced():
        fn(batch)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    synced()  # warm-up
    synced()
    calls, t0 = 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - t0 < min_seconds:
        synced()
        calls += 1
    return calls * len(batch) / (time.perf_counter() - t0)


def load_document_artifact(pkg: Path, manifest: dict, device: str, root: Path):
    doc = next(a for a in manifest["artifacts"] if a["role"] == "document")
    target, tok = unzip_artifact(pkg / doc["file"], ".pt", root / manifest["precision"])
    return torch.jit.load(str(target), map_location=device), tok


def main() -> None:
    print(machine_line(), flush=True)
    import warnings

    warnings.filterwarnings("ignore")
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="tiny,realistic")
    ap.add_argument("--out")
    args = ap.parse_args()
    device = args.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("bench/gpu.py: no CUDA device visible; run it on a GPU machine (or --device cpu to dry-run)")
    root = Path(tempfile.mkdtemp(prefix="sparsepack-gpu-bench-"))
    atexit.register(shutil.rmtree, root, True)
    facts = device_facts(device)
    print(f"device {facts.get('name', device)}, torch {torch.__version__}, CUDA {torch.version.cuda}, TF32 off")
    results = {"device": facts, "models": {}}
    for kind in args.models.split(","):
        model_dir = build(kind, root)
        packages = {}
        parity_refused = None
        for precision in ("fp32", "fp16"):
            t0 = time.perf_counter()
            out = root / f"pkg-{kind}-{precision}"
            verify = "cpu,cuda" if device.startswith("cuda") else "cpu"
            try:
                manifest = package(
                    str(model_dir),
                    out,
                    precision=precision,
                    verify_devices=verify,
                    fp16_device=device,
                    log=lambda m: None,
                )
            except ParityError as exc:  # a speed run still needs its artifacts: record the refusal, prove on CPU only
                parity_refused = str(exc)
                print(f"{kind} {precision}: {exc}; measuring speed with a CPU-proven package")
                manifest = package(
                    str(model_dir),
                    out,
                    precision=precision,
                    verify_devices="cpu",
                    fp16_device=device,
                    force=True,
                    log=lambda m: None,
                )
            packages[precision] = (out, manifest, time.perf_counter() - t0)
        encoder = sparse_encoder_class()(str(model_dir), device=device)  # as users load it
        fp32_doc = packages["fp32"][1]["parity"]["document"]
        gate = packages["fp16"][1]["parity"]["document"]["quality_gate"]
        entry = {
            "packaging_seconds": {p: round(v[2], 1) for p, v in packages.items()},
            "parity_by_device": {d: f["max_abs_diff"] for d, f in fp32_doc["by_device"].items()},
            "fp16_gate": {k: gate[k] for k in ("ndcg_at_10", "jaccard", "max_abs_diff", "documents", "queries")},
            "docs_per_second": {},
            "cuda_parity_refused": parity_refused,
        }
        print(
            f"\n{kind}: fp32 parity max |d| by device {entry['parity_by_device']}; fp16 gate nDCG@10 "
            f"{gate['ndcg_at_10']:.4f}, Jaccard {gate['jaccard']:.4f}"
        )
        artifacts = {p: load_document_artifact(v[0], v[1], device, root) for p, v in packages.items()}
        for label, text in (("short", SHORT_DOC), ("300-word", LONG_DOC)):
            for bs in (1, 32):
                batch = [text] * bs
                with torch.inference_mode(), strict_fp32():
                    eager = docs_per_second(
                        lambda b: encoder.encode_document(b, batch_size=bs, convert_to_tensor=True), batch, device
                    )
                    speeds = {
                        p: docs_per_second(
                            lambda b, a=a, t=t: a({k: v.to(device) for k, v in t.batch(b).items()}), batch, device
                        )
                        for p, (a, t) in artifacts.items()
                    }
                    # model time only: the batch tokenized and placed on the device once (what the GPU spends; the
                    # end-to-end figures above also pay this machine's CPU tokenization every call)
                    placed = {
                        p: {k: v.to(device) for k, v in t.batch(batch).items()} for p, (a, t) in artifacts.items()
                    }
                    model_only = {
                        p: docs_per_second(lambda b, a=a, x=placed[p]: a(x), batch, device)
                        for p, (a, t) in artifacts.items()
                    }
                row = {"encode_document": eager, **speeds, **{f"{p}_model_only": v for p, v in model_only.items()}}
                entry["docs_per_second"][f"{label}_batch{bs}"] = {k: round(v, 2) for k, v in row.items()}
                print(
                    f"  {label:9s} batch {bs:2d}: encode_document {eager:8.1f}  fp32 {speeds['fp32']:8.1f} "
                    f"({speeds['fp32'] / eager:4.2f}x)  fp16 {speeds['fp16']:8.1f} docs/s "
                    f"({speeds['fp16'] / eager:4.2f}x encode_document, {speeds['fp16'] / speeds['fp32']:4.2f}x fp32); "
                    f"model only: fp32 {model_only['fp32']:8.1f}  fp16 {model_only['fp16']:8.1f} docs/s "
                    f"({model_only['fp16'] / model_only['fp32']:4.2f}x)"
                )
        results["models"][kind] = entry
        if args.out:  # after each model: a run cut short by its time limit keeps what it measured
            Path(args.out).mkdir(parents=True, exist_ok=True)
            (Path(args.out) / "gpu-bench.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
