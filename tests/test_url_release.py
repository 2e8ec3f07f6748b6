"""Register from an artifact URL on the real nodes: the zips hosted by a real HTTP server on loopback."""

from __future__ import annotations

import functools
import http.server
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from conftest import cluster_for, conn
from test_registry import cleanup_group, group_models, restore_node_settings

from sparsepack.registry import artifact_url
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.run import release

OPTS = dict(progress=False, timeout=120)


@pytest.fixture
def hosted(package_factory, tmp_path):
    """A copy of the package served by ``http.server`` on a free loopback port; yields (package dir, served dir, url)."""
    manifest, pkg = package_factory("bert-if-log1p")
    served = tmp_path / "www"
    shutil.copytree(pkg, served)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *a: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield manifest, pkg, served, f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_url_release_passes_smoke_and_a_rerun_adds_nothing(any_node, hosted):
    manifest, pkg, _, url = hosted
    group = "t-url-release"
    try:
        first = release(str(pkg), conn(any_node), ReleaseOptions(group=group, artifact_base_url=url, **OPTS))
        assert first["passed"], first.get("error")
        registered = first["steps"]["register"]["models"]
        assert {m["url"] for m in registered.values()} == {f"{url}/{a['file']}" for a in manifest["artifacts"]}
        assert first["steps"]["preflight"]["artifact_urls"]
        assert first["steps"]["smoke_predict"]["document"]["max_abs_diff"] <= 1e-4
        assert first["steps"]["smoke_retrieval"]["passed"]
        again = release(str(pkg), conn(any_node), ReleaseOptions(group=group, artifact_base_url=url, **OPTS))
        assert again["passed"], again.get("error")
        assert all(m["reused"] for m in again["steps"]["register"]["models"].values())
        assert again["model_ids"] == first["model_ids"]
        hashes = sorted(m["model_content_hash_value"] for m in group_models(any_node, group))
        assert hashes == sorted(a["sha256"] for a in manifest["artifacts"])
    finally:
        cleanup_group(any_node, group)


def _failed_url_release(node, pkg, base, group):
    report = release(str(pkg), conn(node), ReleaseOptions(group=group, artifact_base_url=base, **OPTS))
    assert not report["passed"] and report["failed_step"] == "register"
    assert "\n" not in report["error"]
    assert group_models(node, group) == []  # rolled back: nothing left registered
    assert report["rollback"]["left"] == []
    return report["error"]


def test_url_errors_name_the_node_message_and_leave_nothing(any_node, hosted, tmp_path):
    manifest, pkg, served, url = hosted
    doc = next(a for a in manifest["artifacts"] if a["role"] == "document")
    group = "t-url-errors"
    try:
        error = _failed_url_release(any_node, pkg, f"{url}/missing", group)
        # ML Commons reports an HTTP 404 as Java's FileNotFoundException, whose message is the URL alone; the first
        # artifact registered (the query side of an inference-free package) is the one that fails
        failed = [
            a["file"] for a in manifest["artifacts"] if error.endswith(f"ended FAILED: {url}/missing/{a['file']}")
        ]
        assert len(failed) == 1, error
        missing = f"{url}/missing/{failed[0]}"
        with pytest.raises(urllib.error.HTTPError) as not_found:
            urllib.request.urlopen(missing, timeout=10)
        assert not_found.value.code == 404
        error = _failed_url_release(any_node, pkg, "http://127.0.0.1:1", group)
        assert "127.0.0.1:1" in error and "FAILED" in error
        tampered = served / doc["file"]
        tampered.write_bytes(tampered.read_bytes() + b"tampered")
        error = _failed_url_release(any_node, pkg, url, group)
        assert doc["file"] in error and doc["sha256"] in error
        assert artifact_url.hosted_sha256(f"{url}/{doc['file']}", 30) in error  # both hashes named
    finally:
        cleanup_group(any_node, group)


def test_untrusted_url_is_refused_in_preflight_and_apply_sets_the_narrow_regex(node_3x, hosted):
    _, pkg, _, url = hosted
    cl = cluster_for(node_3x)
    setting = "plugins.ml_commons.trusted_url_regex"
    group = "t-url-trust"
    try:
        cl.request("PUT", "/_cluster/settings", body={"persistent": {setting: "^https://models\\.example\\.com/"}})
        refused = release(str(pkg), conn(node_3x), ReleaseOptions(group=group, artifact_base_url=url, **OPTS))
        assert not refused["passed"] and refused["failed_step"] == "preflight"
        narrow = artifact_url.narrow_regex(url)
        assert setting in refused["error"] and repr(narrow) in refused["error"]
        assert group_models(node_3x, group) == []
        applied = release(
            str(pkg),
            conn(node_3x),
            ReleaseOptions(group=group, artifact_base_url=url, apply_settings=True, smoke=False, **OPTS),
        )
        assert applied["passed"], applied.get("error")
        assert applied["steps"]["preflight"]["applied_settings"]["persistent"][setting] == narrow
        current = cl.request("GET", "/_cluster/settings", params={"flat_settings": "true"})["persistent"][setting]
        assert current == narrow and current != ".*"
    finally:
        cl.request("PUT", "/_cluster/settings", body={"persistent": {setting: None}})
        restore_node_settings(node_3x)
        cleanup_group(node_3x, group)


def test_artifact_base_url_with_a_model_is_refused_before_packaging(model_factory, tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sparsepack.cli",
            "release",
            str(model_factory("bert-bi-relu")),
            "--url",
            "http://127.0.0.1:1",
            "--artifact-base-url",
            "http://127.0.0.1:8000",
            "--package-dir",
            str(tmp_path / "pkg"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert "not a package" in proc.stderr and "sparsepack package" in proc.stderr
    assert not (tmp_path / "pkg").exists()


def test_base_url_without_scheme_is_refused():
    with pytest.raises(Exception, match="not a URL the cluster can download from"):
        artifact_url.check_base_url("models.example.com/sparse")
    assert artifact_url.narrow_regex("https://m.example.com/a-b/") == "^https://m\\.example\\.com/a\\-b/"


def test_serve_exposes_only_the_manifest_artifacts(package_factory):
    from sparsepack.serve import ArtifactServer

    manifest, pkg = package_factory("bert-if-log1p")
    server = ArtifactServer(pkg, 0).start()
    try:
        for art in manifest["artifacts"]:
            with urllib.request.urlopen(f"{server.url}/{art['file']}", timeout=10) as resp:
                assert artifact_url.hashlib.sha256(resp.read()).hexdigest() == art["sha256"]
        for path in ("README.md", "../manifest.json", "nope.zip"):
            with pytest.raises(urllib.error.HTTPError) as err:
                urllib.request.urlopen(f"{server.url}/{path}", timeout=10)
            assert err.value.code == 404
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(
                urllib.request.Request(f"{server.url}/manifest.json", data=b"x", method="PUT"), timeout=10
            )
        assert err.value.code == 405
    finally:
        server.stop()


def test_serve_stops_when_ctrl_c_comes_before_its_loop(package_factory):
    """`serve` prints its address, then enters the loop; a Ctrl-C in between used to hang it in shutdown(), which
    waits for a loop that never ran (seen in CI: the process outlived SIGINT by two minutes)."""
    import threading

    from sparsepack.serve import ArtifactServer

    server = ArtifactServer(package_factory("bert-if-log1p")[1], 0)
    stopper = threading.Thread(target=server.stop, daemon=True)
    stopper.start()
    stopper.join(30)
    assert not stopper.is_alive(), "stop() waited for a serve loop that never started"
