"""The local node is real: both lines start, carry the four plugins, and serve what sparsepack packages."""

import json
import os
import socket
import urllib.request

import pytest
from conftest import PORT_BASE, cluster_for, default_signals

from sparsepack.errors import SparsepackError
from sparsepack.node import lifecycle
from sparsepack.node.maven import Coordinate, fetch
from sparsepack.node.plan import plan_for
from sparsepack.node.processes import node_processes, node_tmpdir
from sparsepack.node.state import STATE_FILE, cluster_dir, default_home
from sparsepack.node.wait import wait_for

PLUGINS = {"opensearch-job-scheduler", "opensearch-knn", "opensearch-ml", "opensearch-neural-search"}


def get(url, path):
    with urllib.request.urlopen(url + path, timeout=30) as r:
        return json.loads(r.read())


def test_plugins_listed(any_node):
    rows = get(any_node, "/_cat/plugins?format=json")
    assert {r["component"] for r in rows} >= PLUGINS


def test_node_binds_loopback_and_runs_as_non_root(any_node):
    info = get(any_node, "/_nodes/process,http")["nodes"]
    for node in info.values():
        assert node["http"]["publish_address"].startswith("127.0.0.1:")
        if os.environ.get("OPENSEARCH_URL") is None and os.geteuid() == 0:
            pid = node["process"]["id"]
            assert os.stat(f"/proc/{pid}").st_uid != 0


def test_node_keeps_its_temporary_files_in_its_own_folder(any_node):
    """OpenSearch's default java.io.tmpdir is a new /tmp/opensearch-<random> per launch that nothing removes; the
    node's own folder goes with the cluster."""
    local_only()
    cdir = cluster_dir(default_home(), int(any_node.rsplit(":", 1)[1]))
    for node in get(any_node, "/_nodes/jvm")["nodes"].values():
        tmpdirs = [a.split("=", 1)[1] for a in node["jvm"]["input_arguments"] if a.startswith("-Djava.io.tmpdir=")]
        assert tmpdirs == [str(node_tmpdir(cdir / node["name"]))]
        assert os.path.isdir(tmpdirs[0])


def test_rank_features_from_mapper_extras(any_node):
    cl = cluster_for(any_node)
    cl.request("PUT", "/t-rank-features", body={"mappings": {"properties": {"f": {"type": "rank_features"}}}})
    try:
        cl.request("PUT", "/t-rank-features/_doc/1", body={"f": {"rain": 2.0, "city": 0.5}}, params={"refresh": "true"})
        res = cl.request(
            "POST",
            "/t-rank-features/_search",
            body={"query": {"neural_sparse": {"f": {"query_tokens": {"rain": 1.5}}}}},
        )
        assert res["hits"]["hits"][0]["_id"] == "1"
    finally:
        cl.request("DELETE", "/t-rank-features", ok_404=True)


def test_ml_settings_applied(any_node):
    flat = get(any_node, "/_cluster/settings?flat_settings=true")["persistent"]
    assert flat["plugins.ml_commons.allow_registering_model_via_local_file"] == "true"
    assert flat["plugins.ml_commons.only_run_on_ml_node"] == "false"


def test_status_reports_running(node_3x):
    if os.environ.get("OPENSEARCH_URL"):
        pytest.skip("external cluster")
    st = lifecycle.status(int(node_3x.rsplit(":", 1)[1]))
    assert st["running"] and st["healthy"] and st["version"].startswith("3.")


def test_port_taken_is_refused(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(SparsepackError, match=f"port {port} on 127.0.0.1 is taken"):
            lifecycle.start("3.6.0", port=port, home=tmp_path)


def test_unsupported_version_names_working_ones():
    with pytest.raises(SparsepackError, match="3.6.0, 2.19.6"):
        plan_for("3.9.0")


def test_java_too_old_for_3x(monkeypatch):
    monkeypatch.setenv("SPARSEPACK_JAVA_HOME", "/usr/lib/jvm/java-17-openjdk-amd64")
    if not os.path.exists("/usr/lib/jvm/java-17-openjdk-amd64/bin/java"):
        pytest.skip("no Java 17 here")
    with pytest.raises(SparsepackError, match="is Java 17; OpenSearch 3.6.0 needs Java 21"):
        plan_for("3.6.0").java_home()


def test_artifact_not_served_names_coordinate(tmp_path):
    coord = Coordinate("org.opensearch.plugin", "opensearch-ml-plugin", "3.9.0.0", "zip")
    with pytest.raises(SparsepackError, match=r"opensearch-ml-plugin:3\.9\.0\.0@zip is not served.*3\.6\.0"):
        fetch(coord, tmp_path, "use 3.6.0 or 2.19.6")


def test_rendered_bodies_are_accepted_by_the_node(any_node, package_factory):
    """Every pipeline/mapping variant the target version allows is accepted by a real node of that version."""
    from sparsepack.templates import render

    manifest, _ = package_factory("bert-if-log1p")
    cl = cluster_for(any_node)
    version = cl.info()["version"]["number"]
    major3 = version.startswith("3.")
    ingest_variants = [
        {"model_id": "m1", "batch_size": 4, "prune_type": "max_ratio", "prune_ratio": 0.1},
        {"model_id": "m1", "chunking": True},
    ]
    if major3:
        ingest_variants.append({"model_id": "m1", "skip_existing": True})
    for i, values in enumerate(ingest_variants):
        name = f"t-accept-ingest-{i}"
        assert cl.request(
            "PUT", f"/_ingest/pipeline/{name}", body=render("ingest-pipeline", manifest, version, **values)
        )["acknowledged"]
        cl.request("DELETE", f"/_ingest/pipeline/{name}")
    body = render("search-pipeline", manifest, version, model_id="m1", prune_type="max_ratio")
    assert cl.request("PUT", "/_search/pipeline/t-accept-search", body=body)["acknowledged"]
    cl.request("DELETE", "/_search/pipeline/t-accept-search")
    mapping = render("index-mapping", manifest, version, chunking=True)
    assert cl.request("PUT", "/t-accept-index", body=mapping)["acknowledged"]
    cl.request("DELETE", "/t-accept-index")
    group = cl.request(
        "POST",
        "/_plugins/_ml/model_groups/_register",
        body=render("model-group", manifest, version, group_name="t-accept-group"),
    )
    cl.request("DELETE", f"/_plugins/_ml/model_groups/{group['model_group_id']}")
    settings = render(
        "cluster-settings",
        manifest,
        version,
        native_memory_threshold=100,
        jvm_heap_memory_threshold=100,
        disk_free_space_threshold=-1,
    )
    assert cl.request("PUT", "/_cluster/settings", body=settings)["acknowledged"]


def test_node_cli_status_and_logs(node_3x):
    import subprocess
    import sys

    if os.environ.get("OPENSEARCH_URL"):
        pytest.skip("external cluster: no local node to inspect")
    port = node_3x.rsplit(":", 1)[1]
    st = subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", "node", "status", "--port", port], capture_output=True, text=True
    )
    assert st.returncode == 0 and json.loads(st.stdout)["healthy"] is True
    logs = subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", "node", "logs", "--port", port, "--lines", "5"],
        capture_output=True,
        text=True,
    )
    assert logs.returncode == 0 and "[node-0]" in logs.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "sparsepack.cli", "node", "status", "--port", "9"], capture_output=True, text=True
    )
    assert missing.returncode == 4 and json.loads(missing.stdout)["running"] is False


def test_restart_keeps_models_and_release_after_a_real_stop_has_no_duplicates(
    restartable_node, package_factory, monkeypatch
):
    """The node is really stopped while the deploy request is on its way; after a restart (data kept) the re-run
    reuses the registered models instead of uploading them again, taking over the lease the stopped run could not
    give back. The node is the session's restartable one (shared with test_doctor and test_lifecycle): left running,
    without this test's group."""
    from conftest import PORT_RESTARTABLE, drop_group, start_restartable, stop_restartable
    from faultproxy import Fault, FaultProxy

    from sparsepack.registry import lease, models
    from sparsepack.registry.connection import ConnectionOptions
    from sparsepack.rollout.options import ReleaseOptions
    from sparsepack.rollout.run import release

    # the re-run waits out the stopped run's lease for its ttl: 10 s rather than the default 60
    monkeypatch.setenv(lease.TTL_ENV, "10")
    proxy = FaultProxy(PORT_RESTARTABLE, [Fault("POST", r"_deploy", "call", before=stop_restartable)]).start()
    pkg = package_factory("bert-bi-relu")[1]
    try:
        first = release(
            str(pkg), ConnectionOptions(url=proxy.url, retries=1), ReleaseOptions(group="t-restart", progress=False)
        )
        assert not first["passed"] and first["failed_step"] == "deploy"
        assert "cannot connect" in first["error"]
        start_restartable()  # same version and shape: data kept
        again = release(str(pkg), ConnectionOptions(url=proxy.url), ReleaseOptions(group="t-restart", progress=False))
        assert again["passed"], again.get("error")
        assert again["steps"]["register"]["models"]["document"]["reused"] is True
        stopped_run = first["steps"]["register"]["lease"]["owner"]
        assert stopped_run in again["steps"]["register"]["lease"]["took_over_expired_from"]
        cl = cluster_for(restartable_node)
        group = cl.request(
            "POST", "/_plugins/_ml/model_groups/_search", body={"query": {"term": {"name.keyword": "t-restart"}}}
        )
        assert len(group["hits"]["hits"]) == 1  # one group, holding one model
        assert len(models.models_in_group(cl, group["hits"]["hits"][0]["_id"])) == 1
    finally:
        proxy.stop()
        start_restartable()  # running again also when the test failed while it was stopped
        drop_group(cluster_for(restartable_node), "t-restart")


# Ports of the start/recovery tests: free http slots below PORT_BASE+24 (transport ports are http + 100;
# PORT_LOADED_MULTI and PORT_INJECTED start 2 nodes, on +2..+3 and +4..+5).
PORT_LOADED, PORT_LOADED_MULTI, PORT_INJECTED, PORT_RECOVERED = (
    PORT_BASE + 1,
    PORT_BASE + 2,
    PORT_BASE + 4,
    PORT_BASE + 6,
)
BUSY_SECONDS = 900  # upper bound on the load processes' life, should the finally below never run


def local_only():
    if os.environ.get("OPENSEARCH_URL"):
        pytest.skip("external cluster: no local node to start")


def jvms_of(port, home=None):
    return node_processes(cluster_dir(home or default_home(), port))


def test_start_waits_for_the_jvm_while_both_cores_are_busy():
    """One node, then a 2-node cluster, start within the one start timeout while busy loops saturate both cores."""
    import subprocess
    import sys
    import time

    local_only()
    # Other sessions, as other programs on the machine would be: the scheduler shares the CPU between sessions first.
    busy = [
        subprocess.Popen(
            [sys.executable, "-c", f"import time\nend = time.time() + {BUSY_SECONDS}\nwhile time.time() < end: pass"],
            start_new_session=True,
        )
        for _ in range(os.cpu_count() or 2)
    ]
    try:
        for port, nodes in ((PORT_LOADED, 1), (PORT_LOADED_MULTI, 2)):
            t0 = time.monotonic()
            try:
                state = lifecycle.start("3.6.0", port=port, nodes=nodes, heap="768m", fresh=True, log=print)
                print(f"{nodes} node(s) healthy under load in {time.monotonic() - t0:.1f}s")
                assert all(busy_proc.poll() is None for busy_proc in busy), "the load ended before the start did"
                health = get(state.url, "/_cluster/health")
                assert health["number_of_nodes"] == nodes and health["status"] in ("green", "yellow")
                assert {n.pid for n in state.nodes} == {p.pid for p in jvms_of(port) if p.jvm}
            finally:
                lifecycle.stop(port, quiet=True)
            assert jvms_of(port) == []
    finally:
        for busy_proc in busy:
            busy_proc.kill()
            busy_proc.wait()


@pytest.mark.parametrize(
    "failure", [SparsepackError("injected launch failure"), KeyboardInterrupt()], ids=["error", "ctrl-c"]
)
def test_failure_after_the_first_launch_leaves_no_jvm(monkeypatch, failure):
    """The second node's launch fails (or is interrupted) while node-0's JVM is starting: that JVM is stopped too."""
    local_only()
    real_launch, seen = lifecycle.launch_node, []

    def launch(install, java_home, ndir, *rest):
        if ndir.name == "node-1":
            seen.extend(jvms_of(PORT_INJECTED))
            raise failure
        real_launch(install, java_home, ndir, *rest)

    monkeypatch.setattr(lifecycle, "launch_node", launch)
    with pytest.raises(type(failure)):
        lifecycle.start("3.6.0", port=PORT_INJECTED, nodes=2, heap="512m", fresh=True, log=lambda m: None)
    assert [p.node_dir.name for p in seen if p.jvm] == ["node-0"]  # node-0's JVM had been launched
    assert jvms_of(PORT_INJECTED) == []
    assert lifecycle.status(PORT_INJECTED)["running"] is False


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_interrupted_start_stops_the_jvm(signame):
    """A real Ctrl-C (SIGINT), or a CI job cancelled (SIGTERM), sent to `sparsepack node start` while its JVM boots:
    the command exits 130 and no JVM is left.

    On a quiet machine the node can come up between seeing its JVM and the signal landing; such a try proves
    nothing about the signal, so the node is stopped and the start tried again (3 tries at most)."""
    import signal
    import subprocess
    import sys

    local_only()
    port = PORT_INJECTED
    for _ in range(3):
        proc = subprocess.Popen(
            [sys.executable, "-m", "sparsepack.cli", "node", "start", "--port", str(port), "--heap", "512m", "--fresh"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=default_signals,
        )
        try:
            wait_for(
                lambda: proc.poll() is not None or any(p.jvm for p in jvms_of(port)),
                120,
                "the node's JVM to be launched",
                interval=0.2,
            )
            assert proc.poll() is None, proc.stderr.read()
            proc.send_signal(getattr(signal, signame))
            _, err = proc.communicate(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
        if proc.returncode == 0:  # the start finished before the signal landed
            lifecycle.stop(port, quiet=True)
            continue
        break
    try:
        assert proc.returncode == 130 and "interrupted" in err, err
        assert jvms_of(port) == []
    finally:
        lifecycle.stop(port, quiet=True)


def test_cleanup_after_an_interrupted_launch_imports_nothing():
    """An interrupt landing inside a lazy import leaves half-initialised modules behind; a cleanup that then imported
    one failed ("module 'requests' has no attribute 'auth'", exit 1) with the JVM still running. The cleanup after a
    launch therefore imports nothing new, and node/ does not load the registry's client at all. Checked in a fresh
    interpreter, where nothing was imported yet."""
    import subprocess
    import sys

    local_only()
    script = (
        "import sys\n"
        "from sparsepack.node import lifecycle\n"
        "at_launch = []\n"
        "def launch(*args, **kwargs):\n"
        "    at_launch.append(set(sys.modules))\n"
        "    raise KeyboardInterrupt\n"
        "lifecycle.launch_node = launch\n"
        "try:\n"
        f"    lifecycle.start('3.6.0', port={PORT_INJECTED}, heap='512m', fresh=True, timeout=60, log=lambda m: None)\n"
        "except KeyboardInterrupt:\n"
        "    print('imported by the cleanup:', sorted(set(sys.modules) - at_launch[0]))\n"
        "    print('registry client loaded:', 'opensearchpy' in sys.modules or 'sparsepack.registry.connection' in sys.modules)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "imported by the cleanup: []" in proc.stdout, proc.stdout
    assert "registry client loaded: False" in proc.stdout, proc.stdout
    assert jvms_of(PORT_INJECTED) == []


def test_start_timeout_stops_the_jvm_it_launched():
    local_only()
    with pytest.raises(SparsepackError, match=r"raise --timeout"):
        lifecycle.start("3.6.0", port=PORT_INJECTED, heap="512m", fresh=True, timeout=3, log=lambda m: None)
    assert jvms_of(PORT_INJECTED) == []


def test_status_stop_and_start_recover_a_node_without_cluster_json(tmp_path):
    """A node whose cluster.json is gone is still found from its command line: status reports it, start says it is a
    leftover and replaces it, stop stops it."""
    import subprocess
    import sys

    local_only()
    port = PORT_RECOVERED
    state_file = cluster_dir(default_home(), port) / STATE_FILE
    try:
        first = lifecycle.start("3.6.0", port=port, heap="512m", fresh=True, log=lambda m: None)
        state_file.unlink()
        st = subprocess.run(
            [sys.executable, "-m", "sparsepack.cli", "node", "status", "--port", str(port)],
            capture_output=True,
            text=True,
        )
        report = json.loads(st.stdout)
        assert st.returncode == 0 and report["running"] and report["healthy"] and report["recorded"] is False
        assert report["pids"] == {"node-0": first.nodes[0].pid} and report["version"] == "3.6.0"

        messages = []
        second = lifecycle.start("3.6.0", port=port, heap="512m", log=messages.append)
        assert any(
            f"port {port} is held by OpenSearch left over" in m and str(first.nodes[0].pid) in m for m in messages
        )
        assert second.nodes[0].pid != first.nodes[0].pid
        assert [p.pid for p in jvms_of(port)] == [second.nodes[0].pid]
        # the same port asked for under another home: refused, with the exact command that stops this one
        home = default_home()
        with pytest.raises(SparsepackError, match=f"`SPARSEPACK_HOME={home} sparsepack node stop --port {port}`"):
            lifecycle.start("3.6.0", port=port, home=tmp_path, log=lambda m: None)

        state_file.unlink()
        out = subprocess.run(
            [sys.executable, "-m", "sparsepack.cli", "node", "stop", "--port", str(port)],
            capture_output=True,
            text=True,
        )
        assert out.returncode == 0 and "no cluster.json" in out.stderr
        assert jvms_of(port) == []
        assert lifecycle.status(port)["running"] is False
    finally:
        lifecycle.stop(port, quiet=True)


def _run_with_node_guard(tmp_path, body: str):
    import subprocess
    import sys

    (tmp_path / "test_leak.py").write_text(body)
    # the child imports the same sparsepack as this run (a worktree put first on PYTHONPATH included)
    pythonpath = os.pathsep.join(p for p in (os.path.dirname(__file__), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": pythonpath, "SPARSEPACK_TEST_PORT_BASE": str(PORT_BASE)}
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "node_guard",
            str(tmp_path / "test_leak.py"),
        ],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=300,
    )


def _stand_in(pidfile) -> str:
    """Test code that starts a process node_processes() takes for a node of ``pidfile``'s folder."""
    return (
        f"    subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', '-p', {str(pidfile)!r}],\n"
        "                     start_new_session=True)\n"
    )


def test_node_guard_fails_a_run_that_leaves_a_node_process(tmp_path):
    """The end-of-run check itself: a session that leaves a (stand-in) node process behind fails, and it is stopped,
    with the guard named as the cause in the cluster folder's stop record."""
    pidfile = tmp_path / "home" / "clusters" / str(PORT_BASE + 99) / "node-0" / "opensearch.pid"
    pidfile.parent.mkdir(parents=True)
    run = _run_with_node_guard(tmp_path, "import subprocess, sys\ndef test_leaks():\n" + _stand_in(pidfile))
    try:
        assert run.returncode == pytest.ExitCode.TESTS_FAILED, run.stdout[-2000:]
        assert "1 passed" in run.stdout and "left OpenSearch node processes running" in run.stdout
        assert node_processes(pidfile.parent.parent) == []
        record = [json.loads(line) for line in (pidfile.parent.parent / "stops.log").read_text().splitlines()]
        assert record[0]["reason"].startswith("node_guard of the test session pid")
        assert record[0]["caller"]["pid"] != os.getpid() and "pytest" in " ".join(record[0]["caller"]["argv"])
        assert [s["node"] for s in record[0]["signalled"]] == ["node-0"]
    finally:
        for proc in node_processes(pidfile.parent.parent):
            os.kill(proc.pid, 9)


def test_node_guard_leaves_the_nodes_of_another_run_on_the_same_ports(tmp_path):
    """Two runs on one port range: a node that another live run started while this one ran is not this run's leak.
    Stopping it (as the guard once did) takes that run's node down mid-run with a clean `stopping ...`."""
    cdir = tmp_path / "home" / "clusters" / str(PORT_BASE + 98)
    (cdir / "node-0").mkdir(parents=True)
    # this test's process stands for the other run: alive, and not a descendant of the child session
    (cdir / "cluster.json").write_text(
        json.dumps(
            {
                "version": "3.6.0",
                "home": str(tmp_path / "home"),
                "nodes": [],
                "started_by": {"pid": os.getpid(), "argv": ["other-run"]},
            }
        )
    )
    run = _run_with_node_guard(
        tmp_path, "import subprocess, sys\ndef test_meanwhile():\n" + _stand_in(cdir / "node-0" / "opensearch.pid")
    )
    try:
        assert run.returncode == pytest.ExitCode.OK, run.stdout[-2000:]
        assert f"started meanwhile by pid {os.getpid()} (other-run)" in run.stdout
        assert len(node_processes(cdir)) == 1 and not (cdir / "stops.log").exists()
    finally:
        for proc in node_processes(cdir):
            os.kill(proc.pid, 9)


def test_a_run_never_adopts_the_cluster_of_another_live_run(tmp_path, monkeypatch):
    """A second session on the same ports used to take the running cluster as its own and stop it at teardown;
    now it fails before touching it, naming the other run."""
    from conftest import local_cluster

    from sparsepack.node.state import ClusterState, cluster_dir, save_state

    port = PORT_BASE + 97
    cluster_dir(tmp_path, port).mkdir(parents=True)
    # pid 1 is alive and no ancestor of this session: another run, as far as the guard can tell
    save_state(ClusterState("3.6.0", str(tmp_path), [], started_by={"pid": 1, "argv": ["other-run"]}), port)
    stopped = []
    monkeypatch.setattr(lifecycle, "stop", lambda *a, **k: stopped.append(a))
    monkeypatch.setattr(lifecycle, "start", lambda *a, **k: pytest.fail("must not start on a foreign cluster"))
    with pytest.raises(pytest.fail.Exception, match="another live run started \\(pid 1: other-run\\)"):
        with local_cluster("3.6.0", port, home=tmp_path):
            pass
    assert stopped == []
