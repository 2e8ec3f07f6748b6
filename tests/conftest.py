"""Fixtures: tiny offline models, their packages, and real OpenSearch nodes (3.x and 2.19)."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub id otherwise takes ~50 s to fail here
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from pathlib import Path

import pytest

from sparsepack.demo import DemoSpec, build_demo_model

FIXTURE_SPECS = {
    "bert-if-log1p": DemoSpec(arch="bert", mode="inference-free", activation="log1p_relu", seed=1),
    "bert-bi-relu": DemoSpec(arch="bert", mode="bi-encoder", activation="relu", seed=2),
    "distil-if-relu": DemoSpec(arch="distilbert", mode="inference-free", activation="relu", seed=3),
    "distil-bi-log1p": DemoSpec(arch="distilbert", mode="bi-encoder", activation="log1p_relu", seed=4),
}

NODE_3X = os.environ.get("SPARSEPACK_TEST_VERSION_3X", "3.6.0")
NODE_2X = os.environ.get("SPARSEPACK_TEST_VERSION_2X", "2.19.6")
PORT_3X, PORT_2X, PORT_MULTI = 9250, 9260, 9270


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
    from sparsepack.templates import write_package_bodies

    cache: dict[str, tuple[dict, Path]] = {}

    def make(name: str) -> tuple[dict, Path]:
        if name not in cache:
            out = tmp_path_factory.mktemp(f"pkg-{name}") / "package"
            manifest = package(str(model_factory(name)), out, log=lambda m: None,
                               extra_files=lambda d, m: write_package_bodies(d, m))
            cache[name] = (manifest, out)
        return cache[name]

    return make


def _start_node(version: str, port: int, nodes: int = 1):
    from sparsepack.node import cluster

    state = cluster.start(version, port=port, nodes=nodes, log=lambda m: print(m, flush=True))
    return state


@pytest.fixture(scope="session")
def node_3x():
    """OPENSEARCH_URL when set (with OPENSEARCH_USERNAME/PASSWORD etc.), else a local 3.x node for the session."""
    if os.environ.get("OPENSEARCH_URL"):
        yield os.environ["OPENSEARCH_URL"]
        return
    from sparsepack.node import cluster

    state = _start_node(NODE_3X, PORT_3X)
    yield state.url
    cluster.stop(PORT_3X, quiet=True)


@pytest.fixture(scope="session")
def node_2x():
    if os.environ.get("OPENSEARCH_URL_2X"):
        yield os.environ["OPENSEARCH_URL_2X"]
        return
    from sparsepack.node import cluster

    state = _start_node(NODE_2X, PORT_2X)
    yield state.url
    cluster.stop(PORT_2X, quiet=True)


@pytest.fixture(params=["3x", "2x"])
def any_node(request):
    return request.getfixturevalue(f"node_{request.param}")


def conn(url: str):
    from sparsepack.registry.connection import ConnectionOptions

    return ConnectionOptions.from_env(url=url)


def cluster_for(url: str):
    from sparsepack.registry.connection import connect

    return connect(conn(url))
