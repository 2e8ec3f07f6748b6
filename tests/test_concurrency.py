"""Concurrent release runs against one real 3.6.0 node: leases converge them, a killed run's lease expires, live runs'
models survive --clear-previous, and preflight refuses a node without free model slots."""

import json
import os
import subprocess
import sys
import threading
import time
import uuid

import pytest
from conftest import cluster_for, conn
from faultproxy import Fault, FaultProxy

from sparsepack.errors import SparsepackError
from sparsepack.registry import lease, models
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release

OPTS = dict(progress=False, timeout=180)
ML_MAX = "plugins.ml_commons.max_model_on_node"


def groups_named(cl, name):
    cl.request("POST", "/.plugins-ml-model-group/_refresh", ok_404=True)
    res = cl.request("POST", f"{models.BASE}/model_groups/_search", body={"query": {"term": {"name.keyword": name}}})
    return [h["_id"] for h in res["hits"]["hits"]]


def group_models(cl, name):
    cl.request("POST", "/.plugins-ml-model/_refresh", ok_404=True)
    return [m for gid in groups_named(cl, name) for m in models.models_in_group(cl, gid)]


def cleanup(cl, name):
    for m in group_models(cl, name):
        models.delete(cl, m["model_id"])
    for gid in groups_named(cl, name):
        models.delete_group(cl, gid)


def start_release(url, pkg, group, report, ttl=None):
    env = {**os.environ, **({lease.TTL_ENV: str(ttl)} if ttl else {})}
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sparsepack.cli",
            "release",
            str(pkg),
            "--url",
            url,
            "--group",
            group,
            "--json",
            "--report",
            str(report),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def finish(procs, timeout=600):
    errs = [p.communicate(timeout=timeout)[1] for p in procs]
    return [p.returncode for p in procs], errs


def test_lease_ttl_is_bounded(monkeypatch):
    monkeypatch.delenv(lease.TTL_ENV, raising=False)
    assert lease.lease_ttl() == lease.DEFAULT_TTL <= 120
    monkeypatch.setenv(lease.TTL_ENV, "7")
    assert lease.lease_ttl() == 7
    for bad in ("500", "0", "soon"):
        monkeypatch.setenv(lease.TTL_ENV, bad)
        with pytest.raises(SparsepackError, match=lease.TTL_ENV):
            lease.lease_ttl()


def test_four_concurrent_releases_converge(node_3x, package_factory, tmp_path):
    manifest, pkg = package_factory("bert-if-log1p")
    roles = {a["role"] for a in manifest["artifacts"]}
    cl = cluster_for(node_3x)
    group = f"t-race-{uuid.uuid4().hex[:6]}"
    try:
        t0 = time.perf_counter()
        procs = [start_release(node_3x, pkg, group, tmp_path / f"r{i}.json") for i in range(4)]
        codes, errs = finish(procs)
        concurrent = time.perf_counter() - t0
        assert codes == [0, 0, 0, 0], errs
        reports = [json.loads((tmp_path / f"r{i}.json").read_text()) for i in range(4)]
        assert all(r["passed"] for r in reports)
        assert len({json.dumps(r["model_ids"], sort_keys=True) for r in reports}) == 1  # the same ids in every report
        registers = [r["steps"]["register"] for r in reports]
        assert sum(reg["group_created"] for reg in registers) == 1
        for role in roles:  # exactly one run uploaded each artifact; the other three say they reused it
            flags = [reg["models"][role]["reused"] for reg in registers]
            assert flags.count(False) == 1 and flags.count(True) == 3
        assert len(groups_named(cl, group)) == 1
        in_group = group_models(cl, group)
        assert len(in_group) == len(roles)
        assert {m["model_id"] for m in in_group} == set(reports[0]["model_ids"].values())
        assert all(m["model_state"] == "DEPLOYED" for m in in_group)
        assert lease.models_in_flight(cl, registers[0]["model_group_id"]) == set()  # every run let go of its models
        cleanup(cl, group)

        t0 = time.perf_counter()
        codes, errs = finish([start_release(node_3x, pkg, group, tmp_path / "single.json")])
        single = time.perf_counter() - t0
        assert codes == [0], errs
        waits = [
            max((m.get("waited_for_other_run_seconds", 0) for m in reg["models"].values()), default=0)
            for reg in registers
        ]
        print(
            f"\n4 concurrent releases: {concurrent:.1f} s wall; 1 release: {single:.1f} s; ratio {concurrent / single:.2f}; "
            f"register step per run {[reg['seconds'] for reg in registers]} s, of which waiting on a lease {waits} s"
        )
    finally:
        cleanup(cl, group)


def test_two_packages_into_one_group_concurrently(node_3x, package_factory, tmp_path):
    cl = cluster_for(node_3x)
    group = f"t-race-two-{uuid.uuid4().hex[:6]}"
    a, b = package_factory("bert-if-log1p"), package_factory("bert-bi-relu")
    try:
        codes, errs = finish(
            [
                start_release(node_3x, a[1], group, tmp_path / "a.json"),
                start_release(node_3x, b[1], group, tmp_path / "b.json"),
            ]
        )
        assert codes == [0, 0], errs
        ra, rb = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
        assert ra["steps"]["register"]["model_group_id"] == rb["steps"]["register"]["model_group_id"]
        assert len(groups_named(cl, group)) == 1
        ids = set(ra["model_ids"].values()) | set(rb["model_ids"].values())
        assert len(ids) == len(a[0]["artifacts"]) + len(b[0]["artifacts"])
        assert {m["model_id"] for m in group_models(cl, group)} == ids
    finally:
        cleanup(cl, group)


def test_killed_run_lease_expires_and_next_run_cleans_its_upload(node_3x, package_factory, tmp_path):
    manifest, pkg = package_factory("bert-if-log1p")
    cl = cluster_for(node_3x)
    group = f"t-kill-{uuid.uuid4().hex[:6]}"
    ttl = 5
    gate = threading.Event()

    def hold_chunk():  # the chunk never reaches the node: the run is killed while "uploading" it
        gate.wait(300)
        raise ConnectionAbortedError("test over")

    port = int(node_3x.rsplit(":", 1)[1])
    proxy = FaultProxy(port, [Fault("POST", r"upload_chunk", "call", before=hold_chunk)]).start()
    proxy.server.handle_error = lambda request, address: None  # the aborted chunk is expected, not worth a traceback
    try:
        proc = start_release(proxy.url, pkg, group, tmp_path / "killed.json", ttl=ttl)
        cl.wait_for(lambda: proxy.faults[0].hits or proc.poll() is not None, 180, "the run to start uploading", 0.2)
        assert proc.poll() is None, proc.stderr.read()
        proc.kill()  # SIGKILL: no rollback, no lease release
        proc.wait()
        cl.request("POST", f"/{lease.INDEX}/_refresh")
        held = cl.request(
            "POST",
            f"/{lease.INDEX}/_search",
            body={
                "query": {
                    "bool": {
                        "filter": [
                            {"term": {"kind": "model"}},
                            {"term": {"state": "held"}},
                            {"term": {"group_id": groups_named(cl, group)[0]}},
                        ]
                    }
                }
            },
        )
        dead = held["hits"]["hits"][0]["_source"]
        stale = [m["model_id"] for m in group_models(cl, group) if m["model_state"] == "REGISTERING"]
        assert len(stale) == 1
        assert lease.models_in_flight(cl, groups_named(cl, group)[0]) == set(
            stale
        )  # the upload is protected until expiry

        t0 = time.perf_counter()
        report = release(str(pkg), conn(node_3x), ReleaseOptions(group=group, smoke=False, lease_ttl=ttl, **OPTS))
        took = time.perf_counter() - t0
        assert report["passed"], report.get("error")
        reg = report["steps"]["register"]
        assert reg["lease"]["took_over_expired_from"] == [dead["owner"]]
        assert reg["removed_stale"] == stale
        assert took >= ttl  # it waited for the dead run's lease to expire, it did not break it early
        left = group_models(cl, group)
        assert len(left) == len(manifest["artifacts"]) and all(m["model_state"] == "DEPLOYED" for m in left)
        print(f"\nrun after a SIGKILLed one (lease ttl {ttl} s): {took:.1f} s")
    finally:
        gate.set()
        proxy.stop()
        cleanup(cl, group)


def test_slow_holder_renews_its_lease(node_3x, package_factory, tmp_path):
    """An upload that takes 4x the ttl keeps its lease: the waiting run reuses the model, it never takes over."""
    manifest, pkg = package_factory("bert-bi-relu")
    cl = cluster_for(node_3x)
    group = f"t-slow-{uuid.uuid4().hex[:6]}"
    ttl = 2
    port = int(node_3x.rsplit(":", 1)[1])
    proxy = FaultProxy(port, [Fault("POST", r"upload_chunk", "call", before=lambda: time.sleep(4 * ttl))]).start()
    try:
        proc = start_release(proxy.url, pkg, group, tmp_path / "slow.json", ttl=ttl)
        cl.wait_for(
            lambda: proxy.faults[0].hits or proc.poll() is not None, 180, "the slow run to start uploading", 0.2
        )
        report = release(str(pkg), conn(node_3x), ReleaseOptions(group=group, smoke=False, lease_ttl=ttl, **OPTS))
        codes, errs = finish([proc])
        assert codes == [0], errs
        slow = json.loads((tmp_path / "slow.json").read_text())
        assert report["passed"], report.get("error")
        reg = report["steps"]["register"]
        assert reg["lease"]["took_over_expired_from"] == []
        assert reg["models"]["document"]["reused"] and reg["models"]["document"]["waited_for_other_run_seconds"] > ttl
        assert report["model_ids"] == slow["model_ids"]
        assert len(group_models(cl, group)) == 1
    finally:
        proxy.stop()
        cleanup(cl, group)


def test_takeover_of_an_expired_lease_is_atomic(node_3x):
    cl = cluster_for(node_3x)
    key = f"test:takeover:{uuid.uuid4().hex}"
    lease.Coordinator(cl, 30)._ensure_index()
    # what a SIGKILLed run leaves: a held lease nobody renews
    cl.request(
        "PUT",
        f"/{lease.INDEX}/_create/{lease.doc_id(key)}",
        body={"key": key, "kind": "test", "owner": "dead-run", "state": "held", "ttl_s": 1, "expires_at": 0},
    )
    results = {}
    start = threading.Barrier(3)

    def contender(name):
        coord = lease.Coordinator(cluster_for(node_3x), 60, ttl=1)
        start.wait()
        got = coord.acquire(key, "test", lambda result: result == "the-winner's", "a test lease")
        results[name] = (got, coord.took_over)
        if got is None:
            coord.finish(key, "the-winner's")
        coord.close()

    threads = [threading.Thread(target=contender, args=(n,)) for n in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    try:
        assert sorted(str(got) for got, _ in results.values()) == ["None", "the-winner's", "the-winner's"]
        assert [took for _, took in results.values() if took] == [["dead-run"]]  # exactly one took over
    finally:
        cl.request("DELETE", f"/{lease.INDEX}/_doc/{lease.doc_id(key)}", ok_404=True)


def test_clear_previous_keeps_models_of_live_runs(node_3x, package_factory):
    cl = cluster_for(node_3x)
    group = f"t-inflight-{uuid.uuid4().hex[:6]}"
    old_manifest, old_pkg = package_factory("bert-bi-relu")
    new_pkg = package_factory("bert-if-log1p")[1]
    try:
        first = release(str(old_pkg), conn(node_3x), ReleaseOptions(group=group, smoke=False, **OPTS))
        assert first["passed"], first.get("error")
        old = first["model_ids"]["document"]
        gid = first["steps"]["register"]["model_group_id"]
        live = lease.Coordinator(cl, 60)  # another run, alive, using the old version
        live.claim(gid, [old])
        assert lease.models_in_flight(cl, gid) == {old}
        assert live.models_in_flight(gid) == set()  # a run's own models are not "another run's"
        cleared = release(
            str(new_pkg), conn(node_3x), ReleaseOptions(group=group, smoke=False, clear_previous=True, **OPTS)
        )
        assert cleared["passed"], cleared.get("error")
        assert models.get_model(cl, old) is not None  # kept: a live run uses it
        live.close()

        # a live run still uploading (no model id recorded yet) protects the models with its artifact's sha256
        uploading = lease.Coordinator(cl, 60)
        sha = old_manifest["artifacts"][0]["sha256"]
        assert (
            uploading.acquire(f"model:{gid}:{sha}", "model", lambda r: False, "a test upload", group_id=gid, sha256=sha)
            is None
        )
        assert lease.models_in_flight(cl, gid) == {old}
        uploading.close()
        assert lease.models_in_flight(cl, gid) == set()

        again = release(
            str(new_pkg), conn(node_3x), ReleaseOptions(group=group, smoke=False, clear_previous=True, **OPTS)
        )
        assert again["passed"], again.get("error")
        assert models.get_model(cl, old) is None  # nobody uses it any more: cleared
    finally:
        cleanup(cl, group)


def test_preflight_refuses_a_full_node_before_uploading(node_3x, package_factory):
    cl = cluster_for(node_3x)
    group, full = f"t-cap-{uuid.uuid4().hex[:6]}", f"t-cap-full-{uuid.uuid4().hex[:6]}"
    try:
        first = release(
            str(package_factory("bert-bi-relu")[1]), conn(node_3x), ReleaseOptions(group=group, smoke=False, **OPTS)
        )
        assert first["passed"], first.get("error")
        held = models.worker_nodes(cl, first["model_ids"]["document"])
        profile = cl.request("GET", f"{models.BASE}/profile/models")["nodes"][held[0]]["models"]
        deployed = sorted(mid for mid, m in profile.items() if m.get("model_state") == "DEPLOYED")
        cl.request("PUT", "/_cluster/settings", body={"persistent": {ML_MAX: len(deployed)}})
        report = release(str(package_factory("bert-if-log1p")[1]), conn(node_3x), ReleaseOptions(group=full, **OPTS))
        assert report["failed_step"] == "preflight"
        assert ML_MAX in report["error"] and first["model_ids"]["document"] in report["error"]
        assert f"holds {len(deployed)} deployed model(s)" in report["error"] and "deploys 2 more" in report["error"]
        assert groups_named(cl, full) == []  # refused before anything was created
        again = release(
            str(package_factory("bert-bi-relu")[1]), conn(node_3x), ReleaseOptions(group=group, smoke=False, **OPTS)
        )
        assert again["passed"], again.get("error")  # its model already holds a slot: a re-run needs none
    finally:
        cl.request("PUT", "/_cluster/settings", body={"persistent": {ML_MAX: None}})
        cleanup(cl, group)


def test_forbidden_lease_index_names_the_permissions(node_3x, package_factory):
    """A role without the coordination index's permissions (the security plugin's 403, emulated by the proxy)."""
    cl = cluster_for(node_3x)
    group = f"t-lease-403-{uuid.uuid4().hex[:6]}"
    port = int(node_3x.rsplit(":", 1)[1])
    proxy = FaultProxy(port, [Fault("*", lease.INDEX, "status:403", times=100)]).start()
    try:
        report = release(str(package_factory("bert-bi-relu")[1]), conn(proxy.url), ReleaseOptions(group=group, **OPTS))
        assert report["failed_step"] == "register"
        assert lease.INDEX in report["error"] and "indices:data/write/index" in report["error"]
        assert groups_named(cl, group) == []  # refused before the group was created
    finally:
        proxy.stop()
        cleanup(cl, group)


def test_a_lease_lost_to_a_taker_is_recorded_and_left_alone(node_3x):
    """A run that went a ttl without renewing (e.g. a network partition) finds its lease taken: it must not overwrite
    the taker's lease, nor delete it when it closes."""
    cl = cluster_for(node_3x)
    key = f"test:lost:{uuid.uuid4().hex}"
    did = lease.doc_id(key)
    coord = lease.Coordinator(cl, 30, ttl=60)
    try:
        assert coord.acquire(key, "test", lambda result: False, "a test lease") is None
        cl.request(
            "PUT",
            f"/{lease.INDEX}/_doc/{did}",
            body={"key": key, "kind": "test", "owner": "the-taker", "state": "held", "ttl_s": 60, "expires_at": 0},
        )
        coord.note(key, result="mine")
        assert coord.lost == [did]
        coord.close()
        doc = cl.request("GET", f"/{lease.INDEX}/_doc/{did}")["_source"]
        assert doc["owner"] == "the-taker" and "result" not in doc
    finally:
        coord.close()
        cl.request("DELETE", f"/{lease.INDEX}/_doc/{did}", ok_404=True)


def test_lease_write_whose_response_was_lost_is_recognised(node_3x, package_factory):
    """The node applied the lease write but the client never heard; the retry's 409 must not read as another run's."""
    cl = cluster_for(node_3x)
    group = f"t-lease-drop-{uuid.uuid4().hex[:6]}"
    port = int(node_3x.rsplit(":", 1)[1])
    proxy = FaultProxy(
        port,
        [
            Fault("PUT", rf"{lease.INDEX}/_create/", "drop-after"),
            Fault("PUT", rf"{lease.INDEX}/_doc/.*if_seq_no", "drop-after"),
        ],
    ).start()
    try:
        report = release(
            str(package_factory("bert-bi-relu")[1]), conn(proxy.url), ReleaseOptions(group=group, smoke=False, **OPTS)
        )
        assert report["passed"], report.get("error")
        assert all(f.hits == 1 for f in proxy.faults)
        reg = report["steps"]["register"]
        # waiting out its own lease would end in taking it over from itself
        assert reg["lease"]["took_over_expired_from"] == [] and reg["lease"]["lost_to_other_run"] == []
        assert len(group_models(cl, group)) == 1
    finally:
        proxy.stop()
        cleanup(cl, group)


def test_failed_creator_leaves_the_group_to_a_waiting_run(node_3x, package_factory, tmp_path):
    """The run that created the group fails (its deploy is refused) while another run waits on its artifact: the
    failed run rolls back its model but not the group, and the waiting run then uploads and passes."""
    manifest, pkg = package_factory("bert-bi-relu")
    cl = cluster_for(node_3x)
    group = f"t-creator-fails-{uuid.uuid4().hex[:6]}"

    def runs_in_group():
        gid = groups_named(cl, group)[0]
        cl.request("POST", f"/{lease.INDEX}/_refresh")
        res = cl.request(
            "POST",
            f"/{lease.INDEX}/_search",
            body={"query": {"bool": {"filter": [{"term": {"kind": "run"}}, {"term": {"group_id": gid}}]}}},
        )
        return len(res["hits"]["hits"]) >= 2

    port = int(node_3x.rsplit(":", 1)[1])
    proxy = FaultProxy(
        port,
        [
            Fault("POST", r"upload_chunk", "call", before=lambda: cl.wait_for(runs_in_group, 120, "run 2")),
            Fault("POST", r"_deploy", "status:500"),
        ],
    ).start()
    try:
        creator = start_release(proxy.url, pkg, group, tmp_path / "creator.json")
        cl.wait_for(lambda: proxy.faults[0].hits or creator.poll() is not None, 180, "the creator to upload", 0.2)
        waiter = release(str(pkg), conn(node_3x), ReleaseOptions(group=group, smoke=False, **OPTS))
        codes, errs = finish([creator])
        failed = json.loads((tmp_path / "creator.json").read_text())
        assert codes == [4] and failed["failed_step"] == "deploy", errs
        gid = failed["steps"]["register"]["model_group_id"]
        assert failed["kept_group_in_use_by_other_runs"] == gid and failed["rollback"]["removed_group"] is None
        assert waiter["passed"], waiter.get("error")
        assert waiter["steps"]["register"]["model_group_id"] == gid and groups_named(cl, group) == [gid]
        assert (
            waiter["steps"]["register"]["models"]["document"]["reused"] is False
        )  # the creator's model was rolled back
        assert [m["model_id"] for m in group_models(cl, group)] == [waiter["model_ids"]["document"]]
    finally:
        proxy.stop()
        cleanup(cl, group)
