"""What a node folder holds before its launch (opensearch.yml, JVM options, the seeded libtorch cache) and the
cluster settings put once the cluster is up."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from . import secure as secure_mod
from .assemble import seed_dirs
from .plan import NodePlan
from .processes import node_tmpdir
from .rest import http_json
from .state import NodeInfo

# The cluster-settings template with the values a local test node needs: no breakers, any node may serve,
# URL registration allowed from this machine only (files and loopback servers): ML Commons' default regex admits
# any host, which `sparsepack doctor` rightly reports on a node that allows URL registration.
NODE_ML_SETTINGS: dict[str, Any] = {
    "only_run_on_ml_node": False,
    "native_memory_threshold": 100,
    "jvm_heap_memory_threshold": 100,
    "disk_free_space_threshold": -1,
    "allow_custom_deployment_plan": True,
    "allow_registering_model_via_url": True,
    "trusted_url_regex": r"^(file://|https?://(127\.0\.0\.1|localhost)(:[0-9]+)?/)",
}


def opensearch_yml(node: NodeInfo, all_nodes: list[NodeInfo], ndir: Path, cluster_name: str) -> str:
    lines = [
        f"cluster.name: {cluster_name}",
        f"node.name: {node.name}",
        f"path.data: {ndir / 'data'}",
        f"path.logs: {ndir / 'logs'}",
        "network.host: 127.0.0.1",
        f"http.port: {node.http_port}",
        f"transport.port: {node.transport_port}",
        "cluster.routing.allocation.disk.threshold_enabled: false",
        f"node.roles: [{', '.join(node.roles)}]",
    ]
    lines += [f'node.attr.{k}: "{v}"' for k, v in node.attrs.items()]
    if len(all_nodes) == 1:
        lines.append("discovery.type: single-node")
    else:
        seeds = ", ".join(f'"127.0.0.1:{n.transport_port}"' for n in all_nodes)
        lines.append(f"discovery.seed_hosts: [{seeds}]")
        lines.append(f'cluster.initial_cluster_manager_nodes: ["{all_nodes[0].name}"]')
    return "\n".join(lines) + "\n"


def jvm_options(heap: str) -> str:
    # Offline DJL: no downloads, no telemetry call to 169.254.169.254; on 2.x only -D reaches DJL (Security Manager).
    return f"-Xms{heap}\n-Xmx{heap}\n-Dai.djl.offline=true\n-DOPT_OUT_TRACKING=true\n"


def _absolute_jvm_paths(jvm_options_file: Path, ndir: Path) -> None:
    """jvm.options names gc logs, heap dumps and error files relative to the (read-only) install; point them here."""
    text = jvm_options_file.read_text()
    text = text.replace("file=logs/", f"file={ndir}/logs/").replace("HeapDumpPath=data", f"HeapDumpPath={ndir}/data")
    text = text.replace("ErrorFile=logs/", f"ErrorFile={ndir}/logs/")
    jvm_options_file.write_text(text)


def write_node_config(
    install: Path, plan: NodePlan, node: NodeInfo, all_nodes: list[NodeInfo], cdir: Path, heap: str, creds: dict | None
) -> None:
    """The node's config folder, always rewritten from the install (its data and logs are kept). ``creds``: the
    secured cluster's credentials, None for a node without security."""
    ndir = cdir / node.name
    conf = ndir / "config"
    shutil.rmtree(conf, ignore_errors=True)
    shutil.copytree(install / "config", conf)
    _absolute_jvm_paths(conf / "jvm.options", ndir)
    if creds is not None:
        extra = secure_mod.configure_node(conf, cdir, creds)
    else:
        extra = ["plugins.security.disabled: true"] if plan.securable else []
    cluster_name = f"sparsepack-{cdir.name}"
    (conf / "opensearch.yml").write_text(
        opensearch_yml(node, all_nodes, ndir, cluster_name) + "".join(f"{line}\n" for line in extra)
    )
    (conf / "jvm.options.d").mkdir(exist_ok=True)
    (conf / "jvm.options.d" / "sparsepack.options").write_text(jvm_options(heap))
    shutil.rmtree(node_tmpdir(ndir), ignore_errors=True)  # what an earlier JVM of this node left there
    node_tmpdir(ndir).mkdir()


def seed_data_dir(install: Path, plan: NodePlan, data: Path) -> None:
    src = install / "libtorch"
    for name in seed_dirs(plan):
        dst = data / "ml_cache" / "pytorch" / name
        if dst.exists():
            continue
        dst.mkdir(parents=True)
        for f in src.iterdir():
            try:
                os.link(f, dst / f.name)  # hard links: the 0.4-0.5 GB libtorch is stored once
            except OSError:
                shutil.copy2(f, dst / f.name)


def apply_node_settings(url: str, access: secure_mod.Access | None = None) -> dict:
    """PUT the cluster-settings template, rendered for this node's version with test-node values."""
    from ..templates import render

    version = http_json(url, access=access)["version"]["number"]
    body = render("cluster-settings", None, version, **NODE_ML_SETTINGS)
    http_json(f"{url}/_cluster/settings", "PUT", body, access=access)
    return body
