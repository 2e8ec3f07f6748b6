"""Fixtures: tiny offline models, their packages, and real OpenSearch nodes (3.x and 2.19)."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub id otherwise takes ~50 s to fail here
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest
from node_guard import pytest_runtest_logfinish, pytest_sessionfinish, pytest_sessionstart  # noqa: F401 - hooks: no node outlives the run

from sparsepack.demo import DemoSpec, build_demo_model

FIXTURE_SPECS = {
    "bert-if-log1p": DemoSpec(arch="bert", mode="inference-free", activation="log1p_relu", seed=1),
    "bert-bi-relu": DemoSpec(arch="bert", mode="bi-encoder", activation="relu", seed=2),
    "distil-if-relu": DemoSpec(arch="distilbert", mode="inference-free", activation="relu", seed=3),
    "distil-bi-log1p": DemoSpec(arch="distilbert", mode="bi-encoder", activation="log1p_relu", seed=4),
    "bert-bi-sum": DemoSpec(arch="bert", mode="bi-encoder", activation="relu", pooling="sum", seed=5),
    # IDF 0 for stopwords, as a table computed over a corpus gives them (issue 10)
    "bert-if-zero-idf": DemoSpec(
        arch="bert",
        mode="inference-free",
        activation="log1p_relu",
        seed=6,
        zero_idf=("the", "a", "of", "in", "is", "and"),
    ),
}

NODE_3X = os.environ.get("SPARSEPACK_TEST_VERSION_3X", "3.6.0")
NODE_2X = os.environ.get("SPARSEPACK_TEST_VERSION_2X", "2.19.6")
# SPARSEPACK_TEST_PORT_BASE moves every node of the suite, so two suites can run side by side on one machine. Node
# http ports (transport: http + 100): the 3.x node +0, the 2.x node +10, test_node's start/recovery tests +1..+6, the
# restartable node +24, test_two_nodes +32..+33, test_secure +40, test_wheel +50, node_guard's stand-ins +97..+99;
# test_cli's sockets that are no node +146..+149. node_guard watches base..base+99.
PORT_BASE = int(os.environ.get("SPARSEPACK_TEST_PORT_BASE", "9250"))
PORT_3X, PORT_2X = PORT_BASE, PORT_BASE + 10
PORT_RESTARTABLE, RESTARTABLE_VERSION = PORT_BASE + 24, "3.6.0"


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; run on a GPU machine (see docs/gpu.md)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def model_factory(tmp_path_factory):
    cache: dict[str, Path] = {}

    def make(name: str) -> Path:
        if name not in cache:
            cache[name] = build_demo_model(tmp_path_factory.mktemp(f"model-{name}"), FIXTURE_SPECS[name])
        return cache[name]

    return make


@pytest.fixture(scope="session")
def package_factory(tmp_path_factory, model_factory):
    from sparsepack.packaging.package import package

    cache: dict[str, tuple[dict, Path]] = {}

    def make(name: str) -> tuple[dict, Path]:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"pkg-{name}") / "package"
            manifest = package(str(model_factory(name)), out, log=lambda m: None)
            cache[name] = (manifest, out)
        return cache[name]

    return make


def _session_node(url_env: str, version: str, port: int):
    """The cluster named by ``url_env`` when set (auth from OPENSEARCH_USERNAME etc.), else a local node for the session."""
    if os.environ.get(url_env):
        yield os.environ[url_env]
        return
    with local_cluster(version, port) as state:
        yield state.url


@contextlib.contextmanager
def local_cluster(version: str, port: int, **start_kwargs):
    """A fresh local cluster, stopped on the way out, also when its start fails half-way.

    A cluster on ``port`` that another live run started is never adopted: stopping it on the way out took that run's
    nodes down mid-run (its nodes logged a clean 'stopping'), so this run fails at once and names the other run."""
    from node_guard import starter_elsewhere

    from sparsepack.node import lifecycle
    from sparsepack.node.state import cluster_dir, default_home

    other = starter_elsewhere(cluster_dir(start_kwargs.get("home") or default_home(), port))
    if other is not None:
        pytest.fail(
            f"port {port} holds a cluster that another live run started (pid {other.get('pid')}: "
            f"{' '.join(other.get('argv', []))[:200]}); give this run its own SPARSEPACK_TEST_PORT_BASE",
            pytrace=False,
        )
    try:
        yield lifecycle.start(version, port=port, fresh=True, log=lambda m: print(m, flush=True), **start_kwargs)
    finally:
        lifecycle.stop(port, quiet=True)


@pytest.fixture(scope="session")
def node_3x():
    yield from _session_node("OPENSEARCH_URL", NODE_3X, PORT_3X)


@pytest.fixture(scope="session")
def node_2x():
    yield from _session_node("OPENSEARCH_URL_2X", NODE_2X, PORT_2X)


@pytest.fixture(scope="session")
def restartable_node():
    """A local 3.6.0 node that tests may stop and start again: test_doctor, test_lifecycle and test_node's restart
    test share it (one node start instead of three). A test that stops it starts it again with its data (see
    ``start_restartable``) and puts back the cluster settings it changed, also when it fails, so the next test finds
    it running as it was; a module removes what it created when it is done."""
    if os.environ.get("OPENSEARCH_URL"):
        pytest.skip("external cluster: no local node to restart")
    with local_cluster(RESTARTABLE_VERSION, PORT_RESTARTABLE) as state:
        yield state.url


def stop_restartable() -> None:
    from sparsepack.node import lifecycle

    lifecycle.stop(PORT_RESTARTABLE, quiet=True)


def start_restartable() -> float:
    """Start the restartable node again, its data kept (returns at once when it runs); the seconds that took. Call it
    in a ``finally`` after anything that stops the node: the tests after it expect it running."""
    import time

    from sparsepack.node import lifecycle

    t0 = time.monotonic()
    lifecycle.start(RESTARTABLE_VERSION, port=PORT_RESTARTABLE, log=lambda m: None)  # same version and shape
    return time.monotonic() - t0


def restart_restartable() -> float:
    """Stop the restartable node and start it again with its data; the seconds the start took."""
    stop_restartable()
    return start_restartable()


def put_settings(url: str, values: dict) -> dict:
    """Set persistent cluster settings; returns the previous persistent values (None: unset), to restore with."""
    cl = cluster_for(url)
    before = cl.request("GET", "/_cluster/settings", params={"flat_settings": "true"})["persistent"]
    cl.request("PUT", "/_cluster/settings", body={"persistent": values})
    return {k: before.get(k) for k in values}


@pytest.fixture(params=["3x", "2x"])
def any_node(request):
    return request.getfixturevalue(f"node_{request.param}")


def conn(url: str):
    from sparsepack.registry.connection import ConnectionOptions

    return ConnectionOptions.from_env(url=url)


def cluster_for(url: str):
    from sparsepack.registry.connection import connect

    return connect(conn(url))


def drop_group(cl, group: str) -> None:
    """Test cleanup: the group's models (undeployed, deleted) and the group itself, if it exists."""
    from sparsepack.registry import models

    gid = models.find_group(cl, group)
    if gid:
        for m in models.models_in_group(cl, gid):
            models.delete(cl, m["model_id"], check_references=False)
        models.delete_group(cl, gid)


def edit_artifact(pkg: Path, file: str, change) -> Path:
    """A copy-edited package: ``change(entries)`` rewrites the zip ``file``'s entries in place, and the manifest gets
    the new sha256 and size, as a tool that 'fixes' hashes would, so only the cluster can tell what is inside."""
    import json
    import zipfile

    from sparsepack.packaging.archive import sha256_file, write_zip

    with zipfile.ZipFile(pkg / file) as zf:
        entries = {n: zf.read(n) for n in zf.namelist()}
    change(entries)
    write_zip(pkg / file, entries)
    manifest = json.loads((pkg / "manifest.json").read_text())
    for art in manifest["artifacts"]:
        if art["file"] == file:
            art.update(sha256=sha256_file(pkg / file), size_bytes=(pkg / file).stat().st_size)
    (pkg / "manifest.json").write_text(json.dumps(manifest))
    return pkg


def with_document_module(cached: Path, manifest: dict, dest: Path, make) -> dict:
    """A copy of the package ``cached`` in ``dest`` whose TorchScript document artifact runs ``make(tokenizer)`` (a
    module, scripted) instead of the model, ``tokenizer`` being the artifact's tokenizer.json, which is returned. For
    probes of what the node does with an artifact."""
    import io
    import json
    import shutil
    import zipfile

    import torch

    shutil.copytree(cached, dest)
    doc = next(a for a in manifest["artifacts"] if a["role"] == "document" and a["file"].endswith(".zip"))
    with zipfile.ZipFile(dest / doc["file"]) as zf:
        tokenizer = json.loads(zf.read("tokenizer.json"))
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.script(make(tokenizer)), buffer)

    def swap_model(entries):
        entries[next(n for n in entries if n.endswith(".pt"))] = buffer.getvalue()

    edit_artifact(dest, doc["file"], swap_model)
    return tokenizer


def default_signals():
    """The child gets default SIGINT/SIGTERM dispositions: a suite started in the background (``cmd &``, CI runners,
    nohup) inherits an ignored SIGINT, and Python then installs no KeyboardInterrupt handler at all."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
