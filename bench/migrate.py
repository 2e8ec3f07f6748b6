"""Migration figures on one cluster in one run: reindex docs/s of a migration next to plain bulk ingest through the same
(new-model) pipeline, seconds writes were blocked when CHANGES writes (inserts, updates, deletes) landed during the
copy, verification and swap time, and each node's predictions (ML Commons profile API) during the migration. By
default the migration runs as `sparsepack migrate` does (carry-over rounds while writes flow, again after
verification, then the block); --worst-case carries every change under the block.
Usage: python bench/migrate.py [--url URL | --nodes N [--port P]] [--kind demo|realistic] [--docs N] [--changes N]
                               [--worst-case] [--out FILE]
(two models of --kind are packaged and released into groups bench-mig-v1/-v2, removed at the end; without --url a
fresh local 3.6.0 cluster of --nodes nodes is started, with ML Commons allowed on every node, and stopped at the end)"""

from __future__ import annotations

import argparse
import atexit
import dataclasses
import random
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import build, machine_line, realistic_spec  # noqa: E402,F401 - sets the offline environment first
from ingest import Tee  # noqa: E402

from sparsepack.demo import DemoSpec, build_demo_model  # noqa: E402
from sparsepack.migrate import MigrationOptions, migrate  # noqa: E402
from sparsepack.packaging.package import package  # noqa: E402
from sparsepack.registry import models  # noqa: E402
from sparsepack.registry.connection import ConnectionOptions, connect  # noqa: E402
from sparsepack.rollout.options import ReleaseOptions  # noqa: E402
from sparsepack.rollout.run import release  # noqa: E402
from sparsepack.templates import render  # noqa: E402

WORDS = "rain river city search vector token model weather cloud water news year people language word query".split()
ALIAS = "bench-mig"


def texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20))) for _ in range(n)]


def bulk(client, index: str, docs: dict[str, str]) -> None:
    lines = []
    for doc_id, text in docs.items():
        lines += [{"index": {"_index": index, "_id": doc_id}}, {"text": text}]
    for start in range(0, len(lines), 400):
        res = client.bulk(body=lines[start : start + 400], params={"timeout": "5m"}, request_timeout=600)
        assert not res["errors"], res["items"][0]


def specs(kind: str) -> dict[str, DemoSpec]:
    if kind == "realistic":  # the realistic size (67M, 6 layers x 768) twice, with different weights
        base = realistic_spec()
        return {"v1": base, "v2": dataclasses.replace(base, seed=base.seed + 1)}
    return {
        "v1": DemoSpec(arch="bert", mode="bi-encoder", activation="relu", seed=2),
        "v2": DemoSpec(arch="distilbert", mode="bi-encoder", activation="log1p_relu", seed=4),
    }


def predictions_per_node(cl, model_id: str) -> dict[str, dict]:
    """node name -> the model's stats on that node from ML Commons' stats API (predict requests, failures)."""
    names = {nid: n["name"] for nid, n in cl.request("GET", "/_nodes/_all/_none")["nodes"].items()}
    stats = cl.request("GET", "/_plugins/_ml/stats")
    return {
        names.get(nid, nid): node.get("models", {}).get(model_id, {}).get("predict", {})
        for nid, node in stats.get("nodes", {}).items()
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", help="a running cluster (default: start a local one)")
    ap.add_argument("--nodes", type=int, default=1, help="nodes of the local cluster")
    ap.add_argument("--port", type=int, default=10920)
    ap.add_argument("--kind", default="demo", choices=("demo", "realistic"))
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--worst-case", action="store_true", help="no carry-over round before the block")
    ap.add_argument("--out", help="also write the output to this file")
    args = ap.parse_args()
    if args.out:
        sys.stdout = Tee(args.out)  # type: ignore[assignment]
    print(machine_line(), flush=True)
    if args.url:
        run(args, args.url)
        return
    from sparsepack.node import lifecycle

    state = lifecycle.start(
        "3.6.0", port=args.port, nodes=args.nodes, fresh=True, timeout=900, log=lambda m: print(m, file=sys.stderr)
    )
    try:
        run(args, state.url)
    finally:
        lifecycle.stop(args.port, quiet=True)


def run(args, url: str) -> None:
    conn = ConnectionOptions.from_env(url=url, timeout=600)
    cl = connect(conn)
    # Every node may run models, so a model deploys on each node of a multi-node cluster.
    cl.request("PUT", "/_cluster/settings", body={"persistent": {"plugins.ml_commons.only_run_on_ml_node": False}})
    work = Path(tempfile.mkdtemp(prefix="bench-migrate-"))
    atexit.register(shutil.rmtree, work, True)  # realistic-size models and packages are ~1 GB
    ids, manifests = {}, {}
    for tag, spec in specs(args.kind).items():
        model = build_demo_model(work / f"model-{tag}", spec)
        manifests[tag] = package(str(model), work / f"pkg-{tag}", log=lambda m: None)
        rep = release(
            str(work / f"pkg-{tag}"), conn, ReleaseOptions(group=f"bench-mig-{tag}", smoke=False, progress=False)
        )
        assert rep["passed"], rep.get("error")
        ids[tag] = rep["model_ids"]["document"]
    version = cl.info()["version"]["number"]
    for tag in ("v1", "v2"):
        cl.request(
            "PUT",
            f"/_ingest/pipeline/{ALIAS}-{tag}",
            body=render("ingest-pipeline", manifests[tag], version, model_id=ids[tag]),
        )
    cl.request(
        "PUT",
        f"/{ALIAS}-v1",
        body={
            **render("index-mapping", manifests["v1"], version, shards=2, ingest_pipeline=f"{ALIAS}-v1"),
            "aliases": {ALIAS: {}},
        },
    )
    cl.request(
        "PUT",
        f"/{ALIAS}-plain",
        body=render("index-mapping", manifests["v2"], version, shards=2, ingest_pipeline=f"{ALIAS}-v2"),
    )
    corpus = dict(zip((f"d{i}" for i in range(args.docs)), texts(args.docs, 1)))
    t0 = time.perf_counter()
    bulk(cl.client, ALIAS, corpus)
    print(f"loaded {args.docs} documents through the v1 pipeline in {time.perf_counter() - t0:.0f}s", flush=True)
    t0 = time.perf_counter()
    bulk(cl.client, f"{ALIAS}-plain", corpus)  # the same documents through the new model's pipeline
    plain = args.docs / (time.perf_counter() - t0)
    print(f"plain bulk through the v2 pipeline: {plain:.1f} docs/s", flush=True)
    cl.client.indices.refresh(index=ALIAS)
    cl.request("DELETE", f"/{ALIAS}-plain")
    before = predictions_per_node(cl, ids["v2"])

    def writer():  # the changes land while the copy runs
        time.sleep(1.0)
        rng, new = random.Random(9), texts(args.changes, 2)
        lines = []
        for i in range(args.changes):
            kind = i % 3
            if kind == 0:
                lines += [{"index": {"_index": ALIAS, "_id": f"w{i}"}}, {"text": new[i]}]
            elif kind == 1:
                lines += [{"index": {"_index": ALIAS, "_id": f"d{rng.randrange(args.docs)}"}}, {"text": new[i]}]
            else:
                lines += [{"delete": {"_index": ALIAS, "_id": f"d{rng.randrange(args.docs)}"}}]
        cl.client.bulk(body=lines, params={"timeout": "5m"}, request_timeout=600)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        opts = MigrationOptions(catchup_rounds=0) if args.worst_case else MigrationOptions()
        report = migrate(cl, ALIAS, ids["v2"], options=opts)
    finally:
        thread.join()
    under = report.carried_over.get("under_block", [])
    mode = "worst case: every change carried under the block" if args.worst_case else "default carry-over rounds"
    after = predictions_per_node(cl, ids["v2"])
    nodes = len(cl.request("GET", "/_nodes/_all/_none")["nodes"])
    print(
        f"OpenSearch {version}, {nodes} node(s), {args.kind} models, {args.docs} documents, {args.changes} writes "
        f"during the copy ({mode})"
    )
    print(f"carried over before the block: {report.carried_over.get('rounds_before_block')}")
    print(f"carried over after verification: {report.carried_over.get('rounds_after_verify')}")
    print(f"plain bulk ingest through the v2 pipeline: {plain:.1f} docs/s")
    print(
        f"migration reindex:                         {report.reindex.get('docs_per_second')} docs/s "
        f"({report.reindex.get('seconds')} s)"
    )
    rate = report.reindex.get("docs_per_second") or 0
    print(f"migration / plain bulk: {rate / plain:.2f}x (goal >= 0.9x)")
    print(f"carried over under the block: {under}")
    print(f"seconds writes were blocked: {report.seconds_blocked}")
    print(
        f"verification {report.steps.get('verify')} s, the swap (one _aliases call) {report.steps.get('swap')} s, "
        f"blocked phase incl. swap {report.steps.get('blocked')} s; steps {report.steps}"
    )
    for node in sorted(after):
        print(f"new model's ML stats on {node}: {after[node]} (before the migration: {before.get(node)})")
    assert report.passed, report.error
    for index in (f"{ALIAS}-v1", report.new_index):
        cl.request("DELETE", f"/{index}", ok_404=True)
    for tag in ("v1", "v2"):
        for name in (f"{ALIAS}-v1-{ids['v2'].lower()[:8]}", f"{ALIAS}-{tag}"):
            cl.request("DELETE", f"/_ingest/pipeline/{name}", ok_404=True)
        gid = models.find_group(cl, f"bench-mig-{tag}")
        for m in models.models_in_group(cl, gid) if gid else []:
            models.delete(cl, m["model_id"], check_references=False)


if __name__ == "__main__":
    main()
