"""Migration figures on one cluster in one run: reindex docs/s of a migration next to plain bulk ingest through the same
(new-model) pipeline, seconds writes were blocked when CHANGES writes (inserts, updates, deletes) landed during the
copy, verification and swap time. By default the migration runs as `sparsepack migrate` does (carry-over rounds while
writes flow, again after verification, then the block); --worst-case carries every change under the block.
Usage: python bench/migrate.py --url URL [--docs N] [--changes N] [--worst-case]
(two tiny demo models are packaged and released into groups bench-mig-v1/-v2, removed at the end)"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import build, machine_line  # noqa: E402,F401 - sets the offline environment first

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


def main() -> None:
    print(machine_line(), flush=True)
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--docs", type=int, default=2000)
    ap.add_argument("--changes", type=int, default=1000)
    ap.add_argument("--worst-case", action="store_true", help="no carry-over round before the block")
    args = ap.parse_args()
    conn = ConnectionOptions.from_env(url=args.url, timeout=600)
    cl = connect(conn)
    work = Path(tempfile.mkdtemp(prefix="bench-migrate-"))
    ids, manifests = {}, {}
    for tag, spec in (
        ("v1", DemoSpec(arch="bert", mode="bi-encoder", activation="relu", seed=2)),
        ("v2", DemoSpec(arch="distilbert", mode="bi-encoder", activation="log1p_relu", seed=4)),
    ):
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
    bulk(cl.client, ALIAS, corpus)
    t0 = time.perf_counter()
    bulk(cl.client, f"{ALIAS}-plain", corpus)  # the same documents through the new model's pipeline
    plain = args.docs / (time.perf_counter() - t0)
    cl.client.indices.refresh(index=ALIAS)

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
    print(f"OpenSearch {version}, {args.docs} documents, {args.changes} writes during the copy ({mode})")
    print(f"carried over before the block: {report.carried_over.get('rounds_before_block')}")
    print(f"carried over after verification: {report.carried_over.get('rounds_after_verify')}")
    print(f"plain bulk ingest through the v2 pipeline: {plain:.1f} docs/s")
    print(
        f"migration reindex:                         {report.reindex.get('docs_per_second')} docs/s "
        f"({report.reindex.get('seconds')} s)"
    )
    print(f"carried over under the block: {under}")
    print(f"seconds writes were blocked: {report.seconds_blocked}")
    print(
        f"verification {report.steps.get('verify')} s, blocked phase incl. swap {report.steps.get('blocked')} s; "
        f"steps {report.steps}"
    )
    for index in (f"{ALIAS}-v1", f"{ALIAS}-plain", report.new_index):
        cl.request("DELETE", f"/{index}", ok_404=True)
    for tag in ("v1", "v2"):
        for name in (f"{ALIAS}-v1-{ids['v2'].lower()[:8]}", f"{ALIAS}-{tag}"):
            cl.request("DELETE", f"/_ingest/pipeline/{name}", ok_404=True)
        gid = models.find_group(cl, f"bench-mig-{tag}")
        for m in models.models_in_group(cl, gid) if gid else []:
            models.delete(cl, m["model_id"], check_references=False)


if __name__ == "__main__":
    main()
