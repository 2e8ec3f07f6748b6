"""Everything checked before the first byte is uploaded: plugins, version, settings, ML nodes."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ClusterError
from ..templates import render
from ..templates.versions import line_of, parse_version
from .connection import Cluster

REQUIRED_PLUGINS = {"opensearch-ml": "ML Commons", "opensearch-neural-search": "neural-search"}
ML = "plugins.ml_commons."


@dataclass
class Preflight:
    version: str
    line: str
    plugins: list[str]
    ml_nodes: list[str]
    settings: dict
    blockers: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.blockers

    def as_dict(self) -> dict:
        return {"version": self.version, "line": self.line, "plugins": self.plugins, "ml_nodes": self.ml_nodes,
                "blockers": self.blockers, "warnings": self.warnings, "passed": self.ok}


def _flat_settings(cluster: Cluster) -> dict:
    raw = cluster.request("GET", "/_cluster/settings", params={"include_defaults": "true", "flat_settings": "true"})
    merged: dict = {}
    for scope in ("defaults", "persistent", "transient"):  # later scopes win, as in the cluster
        merged.update(raw.get(scope, {}))
    return merged


def _truthy(value) -> bool:
    return str(value).lower() == "true"


def _percent(value, default: float) -> float:
    try:
        return float(str(value).rstrip("%"))
    except (TypeError, ValueError):
        return default


def run_preflight(cluster: Cluster, manifest: dict | None = None, deploy_nodes: list[str] | None = None) -> Preflight:
    info = cluster.info()
    version = info["version"]["number"]
    line = line_of(parse_version(version))
    plugins = sorted({p["component"] for p in cluster.request("GET", "/_cat/plugins", params={"format": "json"})})
    nodes = cluster.request("GET", "/_nodes")["nodes"]
    ml_nodes = sorted(nid for nid, n in nodes.items() if "ml" in n.get("roles", []))
    pf = Preflight(version, line, plugins, ml_nodes, {})
    for plugin, label in REQUIRED_PLUGINS.items():
        if plugin not in plugins:
            pf.blockers.append(f"{label} ({plugin}) is not installed on the cluster; install the plugin on every node")
    if manifest is not None and line not in manifest.get("compatible_opensearch", []):
        pf.blockers.append(f"the package's TorchScript does not load on OpenSearch {line} ({version}); it is compatible with "
                           f"{', '.join(manifest.get('compatible_opensearch', [])) or 'no line'}: re-package for {line}")
    if any(b.startswith("ML Commons") for b in pf.blockers):
        return pf
    settings = _flat_settings(cluster)
    pf.settings = {k: v for k, v in settings.items() if k.startswith(ML)}
    if not _truthy(settings.get(ML + "allow_registering_model_via_local_file", "false")):
        pf.blockers.append(f"{ML}allow_registering_model_via_local_file is false: chunked upload is refused; "
                           f"set it to true (or run with --apply-settings)")
    if _truthy(settings.get(ML + "only_run_on_ml_node", "true")) and not ml_nodes:
        pf.blockers.append(f"{ML}only_run_on_ml_node is true but the cluster has no node with the ml role; "
                           f"set it to false or add ML nodes (or run with --apply-settings)")
    if deploy_nodes and not _truthy(settings.get(ML + "allow_custom_deployment_plan", "false")):
        pf.blockers.append(f"{ML}allow_custom_deployment_plan is false, needed to deploy on chosen nodes; "
                           f"set it to true (or run with --apply-settings)")
    native = _percent(settings.get(ML + "native_memory_threshold"), 90)
    heap = _percent(settings.get(ML + "jvm_heap_memory_threshold"), 85)
    stats = cluster.request("GET", "/_nodes/stats/os,jvm")["nodes"]
    for nid, st in stats.items():
        os_used = st.get("os", {}).get("mem", {}).get("used_percent")
        heap_used = st.get("jvm", {}).get("mem", {}).get("heap_used_percent")
        name = st.get("name", nid)
        if os_used is not None and os_used >= native and native < 100:
            pf.blockers.append(f"node {name} uses {os_used}% of native memory, over {ML}native_memory_threshold={native:g}: "
                               f"deploys there fail; raise the threshold (or --apply-settings)")
        if heap_used is not None and heap_used >= heap and heap < 100:
            pf.blockers.append(f"node {name} uses {heap_used}% of its heap, over {ML}jvm_heap_memory_threshold={heap:g}; "
                               f"raise the threshold (or --apply-settings)")
    return pf


def apply_settings(cluster: Cluster, version: str, **overrides) -> dict:
    """PUT the cluster-settings template's body; returns what was sent."""
    body = render("cluster-settings", None, version, **overrides)
    cluster.request("PUT", "/_cluster/settings", body=body)
    return body


def require_ok(pf: Preflight) -> None:
    if not pf.ok:
        raise ClusterError("preflight failed: " + " | ".join(pf.blockers))
