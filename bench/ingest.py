"""Ingest through the node's `sparse_encoding` pipeline: the processor's batch_size (1, 8, 32, 64) and ONNX against
TorchScript, on varied documents of four lengths, for the trained SPLADE-tiny model and a realistic-size one.

Every bulk goes into a fresh index through one pipeline per (model, batch_size); all variants are deployed at once
and measured in alternation, so a change in the machine's load hits all alike. Each (variant, length) gets an
untimed warm-up first. The JVM's cores used come from /proc (local node only). "fixed 300-word" repeats the old
bench's document (one sentence twelve times, a counter appended): the figures the README once quoted came from it.

    python bench/ingest.py [--url URL] [--kinds trained,realistic] [--batch-sizes 1,8,32,64] [--bulk-docs 128]
                           [--rounds 2] [--bands 5-15,250-320] [--port 10900] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import random
import re
import shutil
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cluster import JvmCpu, _model, delete_releases  # noqa: E402
from common import LONG_DOC, machine_line  # noqa: E402

from sparsepack.contract.formats import for_format  # noqa: E402
from sparsepack.packaging.package import package  # noqa: E402
from sparsepack.packaging.parity import DjlStyleTokenizer  # noqa: E402
from sparsepack.registry.connection import ConnectionOptions, connect  # noqa: E402
from sparsepack.rollout.options import ReleaseOptions  # noqa: E402
from sparsepack.rollout.run import release  # noqa: E402
from sparsepack.templates import render  # noqa: E402

BANDS = {"5-15 words": (5, 15), "100-150 words": (100, 150), "250-320 words": (250, 320), "400-480 words": (400, 480)}
FORMATS = ("torchscript", "onnx")


def varied_texts(tok: DjlStyleTokenizer, vocab: dict, band: tuple[int, int], n: int, seed: int) -> list[str]:
    """n documents of random whole words from the model's vocabulary, each its own length within ``band``."""
    words = sorted(w for w in vocab if re.fullmatch(r"[a-z]{3,}", w))
    rng = random.Random(seed)
    return [" ".join(rng.choices(words, k=rng.randint(*band))) for _ in range(n)]


def ingest(cl, view: dict, model_id: str | None, batch_size: int, texts: list[str]) -> float:
    """docs/s of one bulk of ``texts`` into a fresh index, through a sparse_encoding pipeline with ``batch_size``
    (``model_id`` None: a plain rank_features index with no pipeline, what neither format touches)."""
    stamp = time.time_ns()
    index, pipe = f"bench-ingest-{stamp}", f"bench-ingest-{stamp}"
    if model_id:
        body = render("ingest-pipeline", view, "3.6", model_id=model_id, batch_size=batch_size)
        cl.request("PUT", f"/_ingest/pipeline/{pipe}", body=body)
        cl.request("PUT", f"/{index}", body=render("index-mapping", view, "3.6", ingest_pipeline=pipe))
    else:
        cl.request("PUT", f"/{index}", body=render("index-mapping", view, "3.6"))
    try:
        lines = []
        for i, text in enumerate(texts):
            lines += [json.dumps({"index": {"_index": index, "_id": str(i)}}), json.dumps({"text": text})]
        t0 = time.perf_counter()
        res = cl.request("POST", "/_bulk", body="\n".join(lines) + "\n", params={"refresh": "true"})
        seconds = time.perf_counter() - t0
        if res["errors"]:
            first = next(it["index"]["error"] for it in res["items"] if "error" in it["index"])
            raise SystemExit(f"bulk ingest failed: {first}")
        return len(texts) / seconds
    finally:
        cl.request("DELETE", f"/{index}", ok_404=True)
        if model_id:
            cl.request("DELETE", f"/_ingest/pipeline/{pipe}", ok_404=True)


def run_kind(
    url: str, root: Path, kind: str, batch_sizes: list[int], bulk_docs: int, rounds: int, cpu: JvmCpu, bands: dict
):
    from sparsepack.packaging.introspect import load_model

    spec = load_model(str(_model(kind, root)))
    t0 = time.perf_counter()
    manifest = package(spec.source, root / f"pkg-{kind}", artifact_format="both", spec=spec, log=lambda m: None)
    print(f"{kind}: packaged both formats in {time.perf_counter() - t0:.0f}s", flush=True)
    doc_zip = root / f"pkg-{kind}" / next(a["file"] for a in manifest["artifacts"] if a["role"] == "document")
    with zipfile.ZipFile(doc_zip) as zf:
        tokenizer_json = json.loads(zf.read("tokenizer.json"))
    tok = DjlStyleTokenizer(tokenizer_json)
    texts = {
        label: varied_texts(tok, tokenizer_json["model"]["vocab"], band, bulk_docs, seed=i)
        for i, (label, band) in enumerate(BANDS.items())
        if label in bands
    }
    texts["fixed 300-word (old bench)"] = [f"{LONG_DOC} #{i}" for i in range(bulk_docs)]
    cl, reports = connect(ConnectionOptions(url=url, timeout=1800.0)), {}
    view = {fmt: for_format(manifest, fmt) for fmt in FORMATS}
    try:
        for fmt in FORMATS:
            reports[fmt] = release(
                str(root / f"pkg-{kind}"),
                ConnectionOptions(url=url, timeout=1800.0),
                ReleaseOptions(
                    group=f"bench-ingest-{kind}-{fmt}-{time.time_ns()}",
                    progress=False,
                    smoke=False,
                    artifact_format=fmt,
                ),
            )
            assert reports[fmt]["passed"], reports[fmt].get("error")
        ids = {fmt: reports[fmt]["model_ids"]["document"] for fmt in FORMATS}
        version = reports["onnx"]["cluster"]["version"]
        print(f"{kind} model on OpenSearch {version}; {bulk_docs} documents per bulk; tokens per document:", flush=True)
        for label, ts in texts.items():
            lengths = [len(tok.ids(t)) for t in ts]
            print(f"  {label:27s} mean {statistics.mean(lengths):.0f} (min {min(lengths)}, max {max(lengths)})")
        for label, ts in texts.items():  # warm-up, not counted
            for fmt in FORMATS:
                ingest(cl, view[fmt], ids[fmt], 8, ts[:16])
        rates: dict[tuple, list[float]] = {}
        cores: dict[tuple, list[float]] = {}
        plan = [(label, fmt, bs) for label in bands for fmt in FORMATS for bs in batch_sizes]
        plan += [("fixed 300-word (old bench)", fmt, 8) for fmt in FORMATS]
        plan += [(label, "no model", 0) for label in texts]
        for r in range(rounds):
            for label, fmt, bs in plan if r % 2 == 0 else plan[::-1]:
                model_id = ids.get(fmt)
                rate, used = cpu.measure(
                    lambda: ingest(
                        cl, view["torchscript"] if fmt == "no model" else view[fmt], model_id, bs, texts[label]
                    )
                )
                rates.setdefault((label, fmt, bs), []).append(rate)
                cores.setdefault((label, fmt, bs), []).append(used or 0.0)
                print(
                    f"  round {r + 1} {label:27s} {fmt:11s} batch {bs:2d}: {rate:8.1f} docs/s"
                    + (f", JVM {used:.2f} cores" if used is not None else ""),
                    flush=True,
                )
    finally:
        delete_releases(cl, reports.values())
    med = {key: statistics.median(v) for key, v in rates.items()}
    used = {key: statistics.median(v) for key, v in cores.items()}
    print(f"\n{kind}: docs/s (JVM cores used), median of {rounds}")
    print("| documents | format | " + " | ".join(f"batch {bs}" for bs in batch_sizes) + " |")
    print("|---|---|" + "---|" * len(batch_sizes))
    for label in bands:
        for fmt in FORMATS:
            cells = [f"{med[(label, fmt, bs)]:.1f} ({used[(label, fmt, bs)]:.2f})" for bs in batch_sizes]
            print(f"| {label} | {fmt} | " + " | ".join(cells) + " |")
    print("\nONNX / TorchScript, same batch size:")
    for label in list(bands) + ["fixed 300-word (old bench)"]:
        sizes = batch_sizes if label in bands else [8]
        ratios = ", ".join(
            f"batch {bs} {med[(label, 'onnx', bs)] / med[(label, 'torchscript', bs)]:.2f}x" for bs in sizes
        )
        print(f"  {label:27s} {ratios}; no pipeline {med[(label, 'no model', 0)]:.0f} docs/s")
    if len(batch_sizes) < 2:
        return
    print("\nbatch_size against batch 1, same format:")
    for label in bands:
        for fmt in FORMATS:
            base = med[(label, fmt, batch_sizes[0])]
            ratios = ", ".join(f"batch {bs} {med[(label, fmt, bs)] / base:.2f}x" for bs in batch_sizes[1:])
            print(f"  {label:27s} {fmt:11s} {ratios}")


class Tee:
    def __init__(self, path: str):
        self.file, self.stdout = open(path, "w"), sys.stdout  # noqa: SIM115

    def write(self, s: str) -> None:
        self.stdout.write(s)
        self.file.write(s)

    def flush(self) -> None:
        self.stdout.flush()
        self.file.flush()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url")
    ap.add_argument("--kinds", default="trained,realistic")
    ap.add_argument("--batch-sizes", default="1,8,32,64")
    ap.add_argument("--bulk-docs", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--bands", help="document lengths, e.g. '5-15,250-320' (default: all four)")
    ap.add_argument("--port", type=int, default=10900)
    ap.add_argument("--out", help="also write the output to this file")
    args = ap.parse_args()
    if args.out:
        sys.stdout = Tee(args.out)  # type: ignore[assignment]
    print(machine_line(), flush=True)
    root = Path(tempfile.mkdtemp(prefix="sparsepack-bench-ingest-"))
    url, started, cpu = args.url, False, JvmCpu(None)
    try:
        if not url:
            from sparsepack.node import lifecycle

            state = lifecycle.start(
                "3.6.0", port=args.port, fresh=True, timeout=900, log=lambda m: print(m, file=sys.stderr)
            )
            url, started, cpu = state.url, True, JvmCpu(state.nodes[0].pid)
        for kind in args.kinds.split(","):
            wanted = args.bands.split(",") if args.bands else None
            bands = {k: v for k, v in BANDS.items() if not wanted or k.split()[0] in wanted}
            sizes = [int(b) for b in args.batch_sizes.split(",")]
            run_kind(url, root, kind, sizes, args.bulk_docs, args.rounds, cpu, bands)
    finally:
        if started:
            lifecycle.stop(args.port, quiet=True)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
