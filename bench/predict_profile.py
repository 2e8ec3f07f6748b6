"""Where the time of one `_predict` of a long document goes on the node: client wall time, ML Commons' own
model_inference_stats, the artifact alone in Python (one thread), and a Java Flight Recorder profile of the node
during the calls: Java code in ms per call by category (translator, ML Commons, JSON, HTTP/transport), and the predict
thread's native time split between the tokenizer and the model run.

The JFR profile reads the JVM from /proc, so the node must be local; `jcmd` runs as the node's user. Samples of a
thread in Java code (jdk.ExecutionSample) and in native code such as libtorch or the Rust tokenizer
(jdk.NativeMethodSample) are both taken every --period ms, but JFR samples only one native thread per period, so native
time is given as shares of the predict thread's native samples; a sample's category is its first known frame from the
top.

    python bench/predict_profile.py [--kind trained|realistic|tiny] [--calls 200] [--period 2] [--port 10910]
                                    [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cluster import _model, profile_ms  # noqa: E402
from common import machine_line, unzip_artifact  # noqa: E402
from ingest import Tee  # noqa: E402

from sparsepack.packaging.package import package  # noqa: E402
from sparsepack.registry import models  # noqa: E402
from sparsepack.registry.connection import ConnectionOptions, connect  # noqa: E402
from sparsepack.rollout.options import ReleaseOptions  # noqa: E402
from sparsepack.rollout.run import release  # noqa: E402

# First match from the top of a sample's stack decides its category. Native samples include threads parked in epoll:
# those are waiting, not working, and are counted apart.
IDLE = ("sun.nio.ch.EPoll.wait", "java.lang.Object.wait", "jdk.internal.misc.Unsafe.park")
CATEGORIES = (
    ("model run: libtorch", ("ai.djl.pytorch.jni.PyTorchLibrary.moduleRunMethod", "ai.djl.pytorch.jni.IValue")),
    ("model run: onnxruntime", ("ai.onnxruntime.OrtSession",)),
    ("tokenizer (Rust, JNI)", ("ai.djl.huggingface.tokenizers",)),
    ("translator in/out (DJL NDArray)", ("ai.djl.",)),
    ("ML Commons (predict task, output)", ("org.opensearch.ml.",)),
    ("JSON (xcontent)", ("xcontent", "com.fasterxml.jackson")),
    ("HTTP / transport (netty)", ("io.netty.", "org.opensearch.http.", "org.opensearch.transport.")),
)


def category(frames: list[str]) -> str:
    if frames and frames[0] in IDLE:
        return "idle (waiting in epoll/park)"
    for frame in frames:
        for name, needles in CATEGORIES:
            if any(n in frame for n in needles):
                return name
    return "other: " + (frames[0] if frames else "?")


class Recorder:
    """JFR on the node's JVM, as the node's user: start, stop, and the samples as (thread, frames top first)."""

    def __init__(self, pid: int, period_ms: int):
        java = Path(os.readlink(f"/proc/{pid}/exe"))
        self.jcmd, self.jfr = str(java.parent / "jcmd"), str(java.parent / "jfr")
        self.pid, self.user = pid, pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
        self.dir = Path(tempfile.mkdtemp(prefix="sparsepack-jfr-"))
        self.dir.chmod(0o777)
        settings = self.dir / "sampling.jfc"
        subprocess.run(
            [self.jfr, "configure", "--input", "default", f"jdk.ExecutionSample#period={period_ms}ms",
             f"jdk.NativeMethodSample#period={period_ms}ms", "--output", str(settings)],
            check=True, capture_output=True,
        )  # fmt: skip
        settings.chmod(0o644)
        self.settings, self.file = settings, self.dir / "predict.jfr"

    def _jcmd(self, *args: str) -> None:
        cmd = [self.jcmd, str(self.pid), *args]
        if os.geteuid() == 0 and self.user != "root":
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        self._jcmd("JFR.start", "name=sparsepack", f"settings={self.settings}")

    def stop(self) -> list[tuple[str, list[str], bool]]:
        self._jcmd("JFR.stop", "name=sparsepack", f"filename={self.file}")
        out = subprocess.run(
            [self.jfr, "print", "--json", "--stack-depth", "64", "--events", "jdk.ExecutionSample,jdk.NativeMethodSample",
             str(self.file)],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        samples = []
        for event in json.loads(out.stdout)["recording"]["events"]:
            values = event["values"]
            thread = values["sampledThread"]["javaName"] or values["sampledThread"]["osName"]
            frames = [
                f"{f['method']['type']['name'].replace('/', '.')}.{f['method']['name']}"
                for f in (values.get("stackTrace") or {}).get("frames", [])
            ]
            samples.append((thread, frames, event["type"] == "jdk.NativeMethodSample"))
        return samples

    def close(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def pool(thread: str) -> str:
    """opensearch[node-0][opensearch_ml_predict][T#1] -> opensearch_ml_predict"""
    parts = re.findall(r"\[([^\]]+)\]", thread)
    return parts[1] if len(parts) > 1 else re.sub(r"\d+", "N", thread)


def long_texts(vocab: dict, n: int, seed: int = 7) -> list[str]:
    words = sorted(w for w in vocab if re.fullmatch(r"[a-z]{3,}", w))
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(250, 320))) for _ in range(n)]


def profile_format(cl, rec: Recorder, model_id: str, texts: list[str], calls: int, period: int) -> dict:
    """JFR takes every Java thread's sample each period but only one native thread's, so Java code is reported as ms
    per call, and the predict thread's native time (tokenizer, model run) as shares of its native samples."""
    for text in texts[:20]:  # warm-up
        cl.request("POST", f"/_plugins/_ml/_predict/sparse_encoding/{model_id}", body={"text_docs": [text]})
    walls = []
    rec.start()
    try:
        for i in range(calls):
            t0 = time.perf_counter()
            body = {"text_docs": [texts[i % len(texts)]]}
            cl.request("POST", f"/_plugins/_ml/_predict/sparse_encoding/{model_id}", body=body)
            walls.append((time.perf_counter() - t0) * 1000)
    finally:
        samples = rec.stop()
    java = Counter(category(frames) for _, frames, native in samples if not native)
    predict_native = Counter(
        category(frames) for thread, frames, native in samples if native and pool(thread) == "opensearch_ml_predict"
    )
    total_native = sum(predict_native.values()) or 1
    return {
        "client_ms": statistics.median(walls),
        "inference": profile_ms(cl, model_id),
        "java_ms": {k: v * period / calls for k, v in java.most_common(8)},
        "predict_native_share": {k: v / total_native for k, v in predict_native.most_common(4)},
        "samples": len(samples),
    }


def standalone_ms(root: Path, manifest: dict, fmt: str, texts: list[str]) -> float:
    """The same artifact in Python, one thread, on the same texts (tokenized beforehand)."""
    doc = next(a for a in manifest["artifacts"] if a["role"] == "document" and a.get("format", "torchscript") == fmt)
    suffix = ".pt" if fmt == "torchscript" else ".onnx"
    path, tok = unzip_artifact(root / "pkg" / doc["file"], suffix, root)
    if fmt == "torchscript":
        torch.set_num_threads(1)
        model = torch.jit.load(str(path))
        run = lambda t: model(tok.batch([t]))  # noqa: E731
    else:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        session = ort.InferenceSession(str(path), opts)
        names = {i.name for i in session.get_inputs()}
        feed = lambda t: {n: v.numpy() for k, v in tok.batch([t]).items() for n in names if n.split(".")[-1] == k}  # noqa: E731
        run = lambda t: session.run(None, feed(t))  # noqa: E731
    with torch.inference_mode():
        for t in texts[:5]:
            run(t)
        times = []
        for t in texts:
            t0 = time.perf_counter()
            run(t)
            times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", default="trained", choices=("trained", "realistic", "tiny"))
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--period", type=int, default=2, help="JFR sampling period, ms")
    ap.add_argument("--port", type=int, default=10910)
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.out:
        sys.stdout = Tee(args.out)  # type: ignore[assignment]
    print(machine_line(), flush=True)
    from sparsepack.node import lifecycle

    root = Path(tempfile.mkdtemp(prefix="sparsepack-bench-profile-"))
    state = lifecycle.start("3.6.0", port=args.port, fresh=True, timeout=900, log=lambda m: print(m, file=sys.stderr))
    rec = Recorder(state.nodes[0].pid, args.period)
    cl, reports = connect(ConnectionOptions(url=state.url, timeout=600.0)), {}
    try:
        manifest = package(str(_model(args.kind, root)), root / "pkg", artifact_format="both", log=lambda m: None)
        with zipfile.ZipFile(root / "pkg" / manifest["artifacts"][0]["file"]) as zf:
            texts = long_texts(json.loads(zf.read("tokenizer.json"))["model"]["vocab"], 50)
        for fmt in ("torchscript", "onnx"):
            reports[fmt] = release(
                str(root / "pkg"),
                ConnectionOptions(url=state.url, timeout=600.0),
                ReleaseOptions(group=f"bench-profile-{fmt}", progress=False, smoke=False, artifact_format=fmt),
            )
            assert reports[fmt]["passed"], reports[fmt].get("error")
        print(f"{args.kind} model, {args.calls} sequential _predict calls of 250-320-word documents on {state.url}")
        for fmt in ("torchscript", "onnx"):
            res = profile_format(cl, rec, reports[fmt]["model_ids"]["document"], texts, args.calls, args.period)
            alone = standalone_ms(root, manifest, fmt, texts)
            inf = res["inference"]
            print(
                f"\n{fmt}: client {res['client_ms']:.1f} ms per call (median); ML Commons model_inference_stats p50 "
                f"{inf.get('p50', float('nan')):.1f} ms; the artifact alone in Python, 1 thread: {alone:.1f} ms"
            )
            print(f"  Java code on the node, ms per call ({res['samples']} samples every {args.period} ms):")
            for name, ms in res["java_ms"].items():
                print(f"    {name:40s} {ms:7.1f}")
            print("  the predict thread's native time (share of its native samples):")
            for name, share in res["predict_native_share"].items():
                print(f"    {name:40s} {share:7.1%}")
    finally:
        for rep in reports.values():
            for mid in rep.get("model_ids", {}).values():
                models.delete(cl, mid)
        rec.close()
        lifecycle.stop(args.port, quiet=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
