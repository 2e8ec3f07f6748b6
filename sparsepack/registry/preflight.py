"""Everything checked before the first byte is uploaded: plugins, version, settings, ML nodes."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import ClusterError, SparsepackError
from ..templates import TEMPLATES, render
from ..templates.checks import check_field_type as mapping_rules
from ..templates.versions import line_of, parse_version
from . import deployment
from .connection import Cluster

REQUIRED_PLUGINS = {
    "opensearch-ml": ("ML Commons", "ml_commons_missing"),
    "opensearch-neural-search": ("neural-search", "neural_search_missing"),
}
ML = "plugins.ml_commons."
SETTINGS_TEMPLATE = "cluster-settings"
FIELD_TYPES = ("rank_features", "sparse_vector", "semantic")


@dataclass(frozen=True)
class Blocker:
    """One thing that stops a release. ``settings``: the cluster-settings template values that remove it, given
    exactly when ``fixable`` (applying settings can fix it); None when only the operator can."""

    code: str
    message: str
    fixable: bool = False
    settings: dict | None = None

    def __post_init__(self):
        if self.fixable != (self.settings is not None):
            raise ValueError(f"blocker {self.code}: a fixable blocker carries the settings that fix it, others none")


def settings_fix(code: str, message: str, **settings) -> Blocker:
    return Blocker(code, message, fixable=True, settings=settings)


def template_default(name: str):
    """The value the cluster-settings template gives ``name`` unless told otherwise."""
    return TEMPLATES[SETTINGS_TEMPLATE].defaults[name]


@dataclass
class Preflight:
    version: str
    line: str
    plugins: list[str]
    ml_nodes: list[str]
    settings: dict
    blockers: list[Blocker] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.blockers

    @property
    def fixable(self) -> bool:
        """Applying settings would clear every blocker: only then is changing the cluster's settings worth it."""
        return bool(self.blockers) and all(b.fixable for b in self.blockers)

    def fixes(self) -> dict:
        """The template values that clear the fixable blockers, merged."""
        merged: dict = {}
        for blocker in self.blockers:
            merged.update(blocker.settings or {})
        return merged

    def messages(self) -> list[str]:
        return [b.message for b in self.blockers]

    def as_dict(self) -> dict:
        return {
            "version": self.version,
            "line": self.line,
            "plugins": self.plugins,
            "ml_nodes": self.ml_nodes,
            "blockers": self.messages(),
            "warnings": self.warnings,
            "passed": self.ok,
        }


def flat_settings(cluster: Cluster) -> dict:
    raw = cluster.call(
        "GET /_cluster/settings",
        cluster.client.cluster.get_settings,
        params={"include_defaults": "true", "flat_settings": "true"},
    )
    merged: dict = {}
    for scope in ("defaults", "persistent", "transient"):  # later scopes win, as in the cluster
        merged.update(raw.get(scope, {}))
    return merged


def truthy(value) -> bool:
    return str(value).lower() == "true"


def _percent(value, default: float) -> float:
    try:
        return float(str(value).rstrip("%"))
    except (TypeError, ValueError):
        return default


def run_preflight(
    cluster: Cluster,
    manifest: dict | None = None,
    deploy_nodes: list[str] | None = None,
    group: str | None = None,
    artifact_urls: list[str] | None = None,
    field_type: str | None = None,
) -> Preflight:
    """``artifact_urls``: the artifacts are registered from these URLs, not uploaded in chunks. ``field_type``: the
    vector field the smoke test (and the indices after it) store the model's output in."""
    info = cluster.info()
    version = info["version"]["number"]
    line = line_of(parse_version(version))
    plugins = sorted(
        {
            p["component"]
            for p in cluster.call("GET /_cat/plugins", cluster.client.cat.plugins, params={"format": "json"})
        }
    )
    nodes = cluster.call("GET /_nodes", cluster.client.nodes.info)["nodes"]
    ml_nodes = sorted(nid for nid, n in nodes.items() if "ml" in n.get("roles", []))
    pf = Preflight(version, line, plugins, ml_nodes, {})
    for plugin, (label, code) in REQUIRED_PLUGINS.items():
        if plugin not in plugins:
            pf.blockers.append(
                Blocker(code, f"{label} ({plugin}) is not installed on the cluster; install the plugin on every node")
            )
    if manifest is not None and line not in manifest.get("compatible_opensearch", []):
        pf.blockers.append(
            Blocker(
                "incompatible_package",
                f"the package's TorchScript does not load on OpenSearch {line} "
                f"({version}); it is compatible with "
                f"{', '.join(manifest.get('compatible_opensearch', [])) or 'no line'}: re-package for {line}",
            )
        )
    if field_type is not None:
        problem = field_type_problem(field_type, version, manifest)
        if problem:
            pf.blockers.append(Blocker("field_type", problem))
    gpu_problem = gpu_targets_problem(manifest, deploy_nodes)
    if gpu_problem:
        pf.blockers.append(Blocker("gpu_targets_missing", gpu_problem))
    if any(b.code == "ml_commons_missing" for b in pf.blockers):  # no ML settings, nodes or models to ask about
        return pf
    settings = flat_settings(cluster)
    pf.settings = {k: v for k, v in settings.items() if k.startswith(ML)}
    if artifact_urls:
        from .artifact_url import url_blockers

        pf.blockers.extend(url_blockers(settings, artifact_urls, artifact_urls[0].rsplit("/", 1)[0]))
    elif not truthy(settings.get(ML + "allow_registering_model_via_local_file", "false")):
        pf.blockers.append(
            settings_fix(
                "local_file_upload_disabled",
                f"{ML}allow_registering_model_via_local_file is false: chunked upload is "
                f"refused; set it to true (or run with --apply-settings)",
                allow_registering_model_via_local_file=True,
            )
        )
    if truthy(settings.get(ML + "only_run_on_ml_node", "true")) and not ml_nodes:
        pf.blockers.append(
            settings_fix(
                "no_ml_nodes",
                f"{ML}only_run_on_ml_node is true but the cluster has no node with the ml role; "
                f"set it to false or add ML nodes (or run with --apply-settings)",
                only_run_on_ml_node=template_default("only_run_on_ml_node"),
            )
        )
    if deploy_nodes and not truthy(settings.get(ML + "allow_custom_deployment_plan", "false")):
        pf.blockers.append(
            settings_fix(
                "custom_deployment_plan_disabled",
                f"{ML}allow_custom_deployment_plan is false, needed to deploy on chosen "
                f"nodes; set it to true (or run with --apply-settings)",
                allow_custom_deployment_plan=template_default("allow_custom_deployment_plan"),
            )
        )
    stats = cluster.call("GET /_nodes/stats/os,jvm", cluster.client.nodes.stats, metric="os,jvm")["nodes"]
    pf.blockers.extend(memory_blockers(settings, stats))
    if manifest is not None:
        pf.warnings.extend(onnx_thread_warnings(manifest))
        targets = target_nodes(nodes, deploy_nodes, truthy(settings.get(ML + "only_run_on_ml_node", "true")))
        pf.blockers.extend(
            capacity_blockers(cluster, manifest, targets, nodes, int(settings.get(ML + "max_model_on_node", 10)), group)
        )
    return pf


GPU_ONLY = (
    "the package's document artifact is fp16 and runs on GPU ML nodes only, and no deploy nodes were chosen: "
    "deploying it everywhere puts it on CPU nodes too; choose the GPU nodes (by id, name or attribute)"
)


def gpu_targets_problem(manifest: dict | None, deploy_nodes) -> str | None:
    """The one rule for fp16 packages, checked by release before it connects and by preflight."""
    return GPU_ONLY if manifest is not None and manifest.get("requires_gpu") and not deploy_nodes else None


def field_type_problem(field_type: str, version: str, manifest: dict | None) -> str | None:
    """Why the vector field the smoke test creates cannot hold this package's output on this version: the index
    mapping's own rules (sparse_vector needs 3.3+, and SEISMIC folds token ids to 16 bits, so a vocabulary over
    32768 collides), asked before upload instead of at the smoke test."""
    if field_type not in FIELD_TYPES:
        return f"field type {field_type!r} is unknown; use {' or '.join(FIELD_TYPES)}"
    try:
        # a semantic field names its model; any id stands for it here, since only the version's rules are asked
        values = {"field_type": field_type, **({"model_id": "preflight"} if field_type == "semantic" else {})}
        mapping_rules("index-mapping", values, manifest or {}, parse_version(version))
    except SparsepackError as exc:
        return f"a {field_type} field for this package cannot be created on OpenSearch {version}: {exc}"
    return None


def memory_blockers(settings: dict, stats: dict) -> list[Blocker]:
    """Nodes whose native memory or heap use is at ML Commons' circuit breaker: it refuses deploys (and predicts)
    there. ``stats``: node id -> the node's os and jvm stats."""
    native = _percent(settings.get(ML + "native_memory_threshold"), 90)
    heap = _percent(settings.get(ML + "jvm_heap_memory_threshold"), 85)
    blockers = []
    for nid, st in stats.items():
        os_used = st.get("os", {}).get("mem", {}).get("used_percent")
        heap_used = st.get("jvm", {}).get("mem", {}).get("heap_used_percent")
        name = st.get("name", nid)
        if os_used is not None and os_used >= native and native < 100:
            blockers.append(
                settings_fix(
                    "native_memory_threshold",
                    f"node {name} uses {os_used}% of native memory, over "
                    f"{ML}native_memory_threshold={native:g}: deploys there fail; raise the threshold (or --apply-settings)",
                    native_memory_threshold=template_default("native_memory_threshold"),
                )
            )
        if heap_used is not None and heap_used >= heap and heap < 100:
            blockers.append(
                settings_fix(
                    "jvm_heap_memory_threshold",
                    f"node {name} uses {heap_used}% of its heap, over "
                    f"{ML}jvm_heap_memory_threshold={heap:g}; raise the threshold (or --apply-settings)",
                    jvm_heap_memory_threshold=template_default("jvm_heap_memory_threshold"),
                )
            )
    return blockers


def onnx_thread_warnings(manifest: dict) -> list[str]:
    """An ONNX zip from before sparsepack set onnxruntime's session threads: on the node each inference then takes a
    thread per core, and the concurrent predicts of an ingest contend for them."""
    return [
        f"{a['file']} sets no onnxruntime threads (packaged before sparsepack wrote serving.properties): each "
        "inference on the node takes a thread per core, and ingest measured up to 1.2x slower; re-package it"
        for a in manifest.get("artifacts", [])
        if a.get("model_format") == "ONNX" and "runtime_options" not in a
    ]


def target_nodes(nodes: dict, chosen: list[str] | None, only_ml: bool) -> list[str]:
    """The node ids a deploy lands on: the chosen ones (ids, names or KEY=VALUE attributes), else every eligible node."""
    if chosen:
        out: set[str] = set()
        for want in chosen:
            key, sep, value = want.partition("=")
            out.update(
                nid
                for nid, n in nodes.items()
                if (sep and str(n.get("attributes", {}).get(key)) == value)
                or (not sep and want in (nid, n.get("name")))
            )
        return sorted(out)
    roles = {"ml"} if only_ml else {"ml", "data"}
    return sorted(nid for nid, n in nodes.items() if roles & set(n.get("roles", [])))


def models_held(truth: dict[str, deployment.Deployment], node_ids: list[str]) -> dict[str, set[str]]:
    """node id -> the models it holds as ML Commons counts them against max_model_on_node: loaded there (a predictor
    on the node, whatever the stored state says), or deploying there now."""
    return {
        nid: {
            mid
            for mid, dep in truth.items()
            if nid in dep.loaded_on or (dep.stored_state == "DEPLOYING" and nid in dep.expected)
        }
        for nid in node_ids
    }


def capacity_blockers(
    cluster: Cluster, manifest: dict, targets: list[str], nodes: dict, limit: int, group: str | None
) -> list[Blocker]:
    """ML Commons refuses a deploy on a node that already holds max_model_on_node local (non-remote) models; count
    them per target node where they are really loaded (a model stored DEPLOYED but loaded nowhere takes no room), minus the artifacts already deployed there from this group (reused)."""
    from .models import find_by_hash, find_group, search_models

    # First ML call a search: under the security plugin a user without ML permissions gets the plugin's 403 naming the
    # permission, where the profile API answers 500 "Failed to get ML node level profile".
    search_models(cluster, {"size": 0, "query": {"match_all": {}}})
    info = deployment.stored_models(cluster)
    held = models_held(deployment.read_many(cluster, info), targets)
    group_id = find_group(cluster, group) if group else None
    reused = set()
    if group_id:
        for art in manifest["artifacts"]:
            found = find_by_hash(cluster, group_id, art["sha256"])
            if found:
                reused.add(found["model_id"])
    blockers = []
    for nid in targets:
        local = sorted(mid for mid in held[nid] if info.get(mid, {}).get("algorithm") != "REMOTE")
        new = len(manifest["artifacts"]) - len(reused & held[nid])
        if new > 0 and len(local) + new > limit:
            names = ", ".join(f"{info.get(mid, {}).get('name', '?')} ({mid})" for mid in local)
            blockers.append(
                Blocker(
                    "node_capacity",
                    f"node {nodes.get(nid, {}).get('name', nid)} holds {len(local)} "
                    f"deployed model(s) of {ML}max_model_on_node={limit} and this release deploys {new} "
                    f"more there: {names}; undeploy models no longer needed (sparsepack undeploy ID) or "
                    f"raise {ML}max_model_on_node",
                )
            )
    return blockers


def apply_settings(cluster: Cluster, version: str, **overrides) -> dict:
    """PUT the cluster-settings template's body; returns what was sent."""
    body = render(SETTINGS_TEMPLATE, None, version, **overrides)
    cluster.call("PUT /_cluster/settings", cluster.client.cluster.put_settings, body=body)
    return body


def require_ok(pf: Preflight) -> None:
    if not pf.ok:
        raise ClusterError("preflight failed: " + " | ".join(pf.messages()))
