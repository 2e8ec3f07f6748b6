"""Migrating an alias from model v1 to v2 on the real 3.6.0 node, with the application writing and searching through
the alias meanwhile: nothing lost, nothing stale, the new vectors are v2's; interrupted and resumed; a failed
verification and a rollback leave the old index serving; a semantic field counts as a use of its model."""

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest
from conftest import cluster_for, conn, drop_group

from sparsepack.migrate import MigrationError, MigrationOptions, migrate, provenance, rollback
from sparsepack.migrate import verify as verify_step
from sparsepack.registry import references, smoke
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release
from sparsepack.templates import render

pytestmark = pytest.mark.cluster
V1, V2 = "bert-bi-relu", "distil-bi-log1p"
WORDS = (
    "rain river city search vector token model weather cloud water news year people language word query "
    "engine sparse document index"
).split()


@pytest.fixture(scope="module")
def models_v1_v2(node_3x, package_factory):
    cl = cluster_for(node_3x)
    ids = {}
    for name, group in ((V1, "t-mig-v1"), (V2, "t-mig-v2")):
        manifest, pkg = package_factory(name)
        rep = release(str(pkg), conn(node_3x), ReleaseOptions(group=group, smoke=False, progress=False, timeout=180))
        assert rep["passed"], rep.get("error")
        ids[name] = (rep["model_ids"]["document"], manifest)
    yield {"url": node_3x, "cluster": cl, "v1": ids[V1][0], "v2": ids[V2][0], "manifest": ids[V1][1]}
    for group in ("t-mig-v1", "t-mig-v2"):
        drop_group(cl, group)


def text(rng):
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))


def production(env, alias, docs=300):
    """An alias over an index whose ingest and search pipelines use v1, seeded with ``docs`` documents."""
    cl, manifest, version = env["cluster"], env["manifest"], "3.6.0"
    ingest, search, index = f"{alias}-ingest", f"{alias}-search", f"{alias}-v1"
    cl.request(
        "PUT", f"/_ingest/pipeline/{ingest}", body=render("ingest-pipeline", manifest, version, model_id=env["v1"])
    )
    cl.request(
        "PUT", f"/_search/pipeline/{search}", body=render("search-pipeline", manifest, version, model_id=env["v1"])
    )
    body = render("index-mapping", manifest, version, ingest_pipeline=ingest, search_pipeline=search, shards=2)
    cl.request("PUT", f"/{index}", body={**body, "aliases": {alias: {}}})
    rng = random.Random(alias)
    expected = {}
    lines = []
    for i in range(docs):
        expected[f"d{i}"] = {"text": text(rng), "n": i}
        lines += [{"index": {"_index": alias, "_id": f"d{i}"}}, expected[f"d{i}"]]
    res = cl.client.bulk(body=lines, params={"refresh": "true"})
    assert not res["errors"]
    return expected


def drop(env, alias):
    cl = env["cluster"]
    for index in cl.client.indices.get(index=f"{alias}-*", params={"expand_wildcards": "all"}) or {}:
        cl.request("DELETE", f"/{index}", ok_404=True)
    for name in references.ingest_pipelines(cl):
        if name.startswith(alias):
            cl.request("DELETE", f"/_ingest/pipeline/{name}", ok_404=True)
    for name in references.search_pipelines(cl):
        if name.startswith(alias):
            cl.request("DELETE", f"/_search/pipeline/{name}", ok_404=True)


NEURAL_SPARSE_SEARCH = {"size": 5, "query": {"neural_sparse": {"text_sparse": {"query_text": "rain over the city"}}}}


# neural-search 3.6.0 encodes a neural query on a semantic field with the search model of the index the alias names
# when the query arrives, then rewrites it against the index the alias names after the encoding: a search that
# straddles the swap finds no encoding for the new index's model and fails with this (docs/release.md says to retry).
SEMANTIC_SWAP_RACE = "Not able to find the sparse embedding"


class App:
    """Writes (insert, update, delete; retried while blocked, as a client would on 403) and searches through the
    alias; ``expected`` holds what every acknowledged write left. A search that fails with the semantic swap race is
    retried once and counted in ``swap_races``, as docs/release.md tells applications to do. ``search_body`` is what
    the searcher sends (the default relies on the index's search pipeline for the model id); ``pause`` spaces the
    writes out (seconds).
    ``resolve``: each request names the index the alias points at, read just before (a 403 from the blocked old index
    is retried, so it reads the alias again and finds the new index once swapped)."""

    def __init__(self, url, alias, expected, max_ops=400, seconds=90, search_body=None, pause=0.0, resolve=False):
        self.cl, self.alias, self.expected = cluster_for(url).client, alias, expected
        self.search_cl = cluster_for(url).client
        self.search_body, self.pause, self.resolve = search_body or NEURAL_SPARSE_SEARCH, pause, resolve
        self.max_ops, self.deadline = max_ops, time.monotonic() + seconds
        self.stop, self.ops, self.search_errors, self.searches, self.write_retries = threading.Event(), 0, [], 0, 0
        self.swap_races = 0
        self.rng = random.Random(5)
        self.threads = [threading.Thread(target=self.write), threading.Thread(target=self.search)]

    def __enter__(self):
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        for t in self.threads:
            t.join(60)

    def target(self, client):
        if not self.resolve:
            return self.alias
        (index,) = client.indices.get_alias(name=self.alias)
        return index

    def _retry(self, fn):
        from opensearchpy import exceptions as ex

        while True:
            try:
                return fn()
            except ex.TransportError as exc:
                if exc.status_code in (403, 429) and time.monotonic() < self.deadline + 60:
                    self.write_retries += 1
                    time.sleep(0.05)
                    continue
                raise

    def write(self):
        n = 0
        while not self.stop.is_set() and self.ops < self.max_ops and time.monotonic() < self.deadline:
            kind = self.rng.choice(("insert", "update", "delete"))
            if kind == "insert" or not self.expected:
                doc_id, doc = f"w{n}", {"text": text(self.rng), "n": -n}
                n += 1
                self._retry(lambda: self.cl.index(index=self.target(self.cl), id=doc_id, body=doc))
                self.expected[doc_id] = doc
            elif kind == "update":
                doc_id = self.rng.choice(sorted(self.expected))
                doc = {"text": text(self.rng), "n": self.expected[doc_id]["n"] + 1000}
                self._retry(lambda: self.cl.index(index=self.target(self.cl), id=doc_id, body=doc))
                self.expected[doc_id] = doc
            else:
                doc_id = self.rng.choice(sorted(self.expected))
                self._retry(lambda: self.cl.delete(index=self.target(self.cl), id=doc_id))
                del self.expected[doc_id]
            self.ops += 1
            if self.pause:
                time.sleep(self.pause)

    def search(self):
        while not self.stop.is_set():
            try:
                try:
                    self.search_cl.search(index=self.target(self.search_cl), body=self.search_body)
                except Exception as exc:  # noqa: BLE001 - only the swap race is retried, once
                    if SEMANTIC_SWAP_RACE not in str(exc):
                        raise
                    self.swap_races += 1
                    self.search_cl.search(index=self.target(self.search_cl), body=self.search_body)
                self.searches += 1
            except Exception as exc:  # noqa: BLE001 - every failure is counted
                self.search_errors.append(repr(exc)[:200])
            time.sleep(0.1)


def all_docs(cl, alias):
    cl.indices.refresh(index=alias)
    hits = cl.search(index=alias, body={"size": 10000, "_source": ["text", "n"]}, params={"search_pipeline": "_none"})
    return {h["_id"]: h["_source"] for h in hits["hits"]["hits"]}


def test_migrate_under_writes_and_searches_then_rollback(models_v1_v2):
    env, alias = models_v1_v2, "t-mig-live"
    cl = env["cluster"]
    drop(env, alias)
    expected = production(env, alias)
    try:
        with App(env["url"], alias, expected) as app:
            time.sleep(2)
            report = migrate(cl, alias, env["v2"], options=MigrationOptions(slices=2, requests_per_second=150))
            writes_at_swap = app.ops
            while app.ops < writes_at_swap + 20 and app.ops < app.max_ops and time.monotonic() < app.deadline:
                time.sleep(0.2)  # the application goes on writing on the new index
        assert report.passed and report.swapped, report.error
        new = report.new_index
        assert cl.client.indices.get_alias(name=alias).keys() == {new}
        assert app.search_errors == [] and app.searches > 0
        assert writes_at_swap > 20, "the writer must have written during the migration"
        assert all_docs(cl.client, alias) == expected  # ids and _source: nothing lost, nothing stale
        assert report.verification["vectors"]["passed"] and report.verification["vectors"]["texts"] >= 50
        assert report.verification["queries"]["passed"] and report.verification["counts"]["passed"]
        assert report.seconds_blocked is not None and report.seconds_blocked < 10
        # independently of the report: documents (including those written after the swap) hold v2's vectors
        sample = cl.client.search(index=alias, body={"size": 30, "sort": [{"n": "asc"}]})["hits"]["hits"]
        got = [h["_source"]["text_sparse"] for h in sample]
        want = smoke.predict(cl, env["v2"], [h["_source"]["text"] for h in sample])
        assert smoke.compare_maps(got, want, smoke.PREDICT_TOLERANCE)["passed"]
        meta = provenance.read_meta(cl, new)
        assert meta["document_model"]["model_id"] == env["v2"] and meta["migrated_from"] == f"{alias}-v1"
        assert provenance.index_provenance(cl)[new]["document_model_id"] == env["v2"]
        with pytest.raises(Exception, match="cluster_block_exception|blocked"):
            cl.client.index(index=f"{alias}-v1", id="x", body={"text": "old index stays blocked"})

        back = rollback(cl, alias)
        assert back.passed and cl.client.indices.get_alias(name=alias).keys() == {f"{alias}-v1"}
        assert all_docs(cl.client, alias) == expected  # the writes made after the swap were carried back
        cl.client.index(index=alias, id="after-rollback", body={"text": "rain"}, params={"refresh": "true"})

        # a verification failure (the new model's _predict disagreeing with what was stored) keeps the alias
        real = verify_step.predict
        verify_step.predict = lambda c, m, t, **kw: [{k: v * 1.5 for k, v in r.items()} for r in real(c, m, t, **kw)]
        try:
            with pytest.raises(MigrationError, match="verification") as info:
                migrate(cl, alias, env["v2"], options=MigrationOptions(new_index=f"{alias}-bad", cleanup=True))
        finally:
            verify_step.predict = real
        assert info.value.alias_on == f"{alias}-v1" and info.value.step == "verify"
        assert cl.client.indices.get_alias(name=alias).keys() == {f"{alias}-v1"}
        assert not cl.client.indices.exists(index=f"{alias}-bad")
        cl.client.index(index=alias, id="after-failure", body={"text": "rain"})  # not blocked: serving as before
    finally:
        drop(env, alias)


def _stderr_if_done(proc: subprocess.Popen) -> str:
    return proc.communicate(timeout=10)[1] if proc.poll() is not None else "still running"


def test_sigterm_mid_reindex_then_rerun_continues_one_task(models_v1_v2, tmp_path):
    env, alias = models_v1_v2, "t-mig-term"
    cl = env["cluster"]
    drop(env, alias)
    expected = production(env, alias, docs=300)
    cmd = [
        sys.executable,
        "-m",
        "sparsepack.cli",
        "migrate",
        alias,
        "--document-model",
        env["v2"],
        "--url",
        env["url"],
        "--requests-per-second",
        "10",
        "--slices",
        "1",
        "--json",
    ]
    envvars = {**os.environ, "PYTHONPATH": os.getcwd()}
    try:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=envvars, text=True)
        new = f"{alias}-{env['v2'].lower()[:8]}"
        # 300 docs at 10 docs/s keep the reindex running ~30 s once started; the start itself (a process loading its
        # imports, creating the index) is bounded by the cluster timeout on a busy machine, not by a few seconds
        deadline = time.monotonic() + 300
        task_id = None
        while time.monotonic() < deadline and not task_id and proc.poll() is None:
            meta = provenance.read_meta(cl, new) if cl.client.indices.exists(index=new) else None
            task_id = ((meta or {}).get("migration") or {}).get("task_id")
            time.sleep(0.5)
        assert task_id, f"the first run never recorded its reindex task (exit {proc.poll()}): {_stderr_if_done(proc)}"
        time.sleep(2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert not cl.client.tasks.get(task_id=task_id).get("completed"), "the task ended before the interruption"
        # the application wrote meanwhile
        cl.client.index(index=alias, id="during", body={"text": "written while no migrate ran", "n": 9999})
        expected["during"] = {"text": "written while no migrate ran", "n": 9999}
        cl.client.transport.perform_request(
            "POST", f"/_reindex/{task_id}/_rethrottle", params={"requests_per_second": "-1"}
        )
        rerun = subprocess.run(cmd, capture_output=True, text=True, env=envvars, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        report = json.loads(rerun.stdout)
        assert report["reindex"]["task_id"] == task_id and report["reindex"]["resumed"]
        assert report["alias_on"] == new and all_docs(cl.client, alias) == expected
    finally:
        if proc.poll() is None:
            proc.kill()
        drop(env, alias)


def test_semantic_field_index_blocks_deleting_its_model(models_v1_v2):
    env = models_v1_v2
    cl = env["cluster"]
    body = render("index-mapping", env["manifest"], "3.6.0", field_type="semantic", model_id=env["v1"])
    assert body["mappings"]["properties"]["text"] == {
        "type": "semantic",
        "model_id": env["v1"],
        "sparse_encoding_config": {"prune_type": "none"},  # the node would otherwise prune the model's vectors
    }
    cl.request("PUT", "/t-mig-semantic", body=body)
    try:
        with pytest.raises(references.InUseError, match="t-mig-semantic"):
            references.refuse_if_used(cl, [env["v1"]], "delete it")
        assert provenance.index_provenance(cl)["t-mig-semantic"]["document_model_id"] == env["v1"]
    finally:
        cl.request("DELETE", "/t-mig-semantic", ok_404=True)


def test_verification_message_names_only_what_failed():
    from sparsepack.migrate.run import _why

    sets_only = {"vectors": {"texts": 50, "identical_token_sets": 48, "max_abs_diff": 0.0, "tolerance": 1e-4}}
    assert _why(sets_only, "vectors") == "48/50 identical token sets"  # no "max |d| 0 > 0.0001"
    both = {"vectors": {"texts": 50, "identical_token_sets": 50, "max_abs_diff": 0.5, "tolerance": 1e-4}}
    assert _why(both, "vectors") == "50/50 identical token sets, max |d| 0.5 > 0.0001"


def test_chunked_field_pairs_each_chunk_vector_with_its_chunk_text():
    from sparsepack.migrate import verify
    from sparsepack.migrate.run import _why

    pipeline = {
        "processors": [
            {"text_chunking": {"field_map": {"text": "text_chunks"}}},
            {"sparse_encoding": {"model_id": "m", "field_map": {"text_chunks": "text_sparse"}}},
        ]
    }
    for leaf, token_ids in (("rank_features", False), ("sparse_vector", True)):
        nested = {"type": "nested", "properties": {"sparse_encoding": {"type": leaf}}}
        mappings = {"properties": {"text": {"type": "text"}, "text_chunks": {"type": "text"}, "text_sparse": nested}}
        assert verify.vector_fields(pipeline, mappings) == [
            ("text_chunks", "text_sparse", {"prune_type": None, "token_ids": token_ids, "chunked": True})
        ]
    doc = {
        "text_chunks": ["a b", "c"],
        "text_sparse": [{"sparse_encoding": {"a": 1.0}}, {"sparse_encoding": {"c": 2.0}}],
    }
    assert verify._pairs(doc, "text_chunks", "text_sparse", True) == [("a b", {"a": 1.0}), ("c", {"c": 2.0})]
    assert verify._pairs({**doc, "text_chunks": ["a b"]}, "text_chunks", "text_sparse", True) is None
    assert verify._pairs({"text_sparse": doc["text_sparse"]}, "text_chunks", "text_sparse", True) is None
    assert verify._pairs({"text_chunks": ["a"]}, "text_chunks", "text_sparse", True) == []  # nothing stored yet
    reason = "1 sampled document(s) hold chunk vectors that do not pair one to one with their chunk texts, e.g. d1"
    failed = {"vectors": {"texts": 4, "identical_token_sets": 4, "max_abs_diff": 0.0, "reason": reason}}
    assert _why(failed, "vectors") == reason


def test_stored_vectors_with_dotted_tokens_are_migrated_and_rolled_back(models_v1_v2):
    """A BERT vocabulary has tokens such as "." and "...". neural-search refuses an incoming document whose keys hold
    a dot ("Field name '...' contains invalid dot usage"), so copying the old vectors through the new pipeline failed
    every document that had one; the copies now leave out what the pipeline writes again, both ways."""
    env, alias = models_v1_v2, "t-migdots"
    cl = env["cluster"]
    drop(env, alias)
    try:
        production(env, alias, docs=20)
        for i in range(3):
            cl.client.index(
                index=f"{alias}-v1",
                id=f"dot{i}",
                body={"text": "rain over the river", "n": 100 + i, "text_sparse": {"...": 1.5, ".": 0.7, "rain": 0.5}},
                params={"pipeline": "_none", "refresh": "true"},
            )
        report = migrate(cl, alias, env["v2"])
        assert report.passed, report.error
        assert report.verification["counts"] == {"old": 23, "new": 23, "passed": True}
        for i in range(3):
            stored = cl.client.get(index=report.new_index, id=f"dot{i}")["_source"]["text_sparse"]
            assert "..." not in stored and "." not in stored and stored  # v2's vector, written again from the text
        cl.client.index(
            index=alias, id="after-swap", body={"text": "cloud water", "n": 200}, params={"refresh": "true"}
        )
        back = rollback(cl, alias)
        assert back.passed and back.alias_on == f"{alias}-v1"
        assert cl.client.get(index=alias, id="after-swap")["_source"]["text"] == "cloud water"
    finally:
        drop(env, alias)
