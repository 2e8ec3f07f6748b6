"""What on a cluster will break neural sparse search, each with its fix: ML Commons settings against the nodes that
exist, models stored as deployed but loaded nowhere (and what uses them), indices whose vectors come from another
model than their pipelines use, and leases left by release runs that died."""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import asdict, dataclass

from . import deployment, lease, references
from .connection import Cluster
from .preflight import ML, Blocker, flat_settings, memory_blockers, models_held, target_nodes, truthy

ERROR = "error"  # breaks now
WARNING = "warning"  # breaks when it happens: a restart, the next deploy, a model's idle time


@dataclass(frozen=True)
class Finding:
    check: str
    severity: str
    message: str
    fix: str

    def line(self) -> str:
        return f"{self.severity}: [{self.check}] {self.message}; fix: {self.fix}"

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClusterReading:
    """Everything the checks look at, read once."""

    settings: dict
    nodes: dict  # node id -> node info
    stats: dict  # node id -> os and jvm stats
    models: dict[str, dict]  # model id -> stored document
    truth: dict[str, deployment.Deployment]
    refs: list[references.Reference]
    leases: list[dict]


def read_cluster(cluster: Cluster) -> ClusterReading:
    models = deployment.stored_models(cluster)
    ingest, search = references.ingest_pipelines(cluster), references.search_pipelines(cluster)
    mappings = references.index_mapping_models(cluster)
    named = set(models) | {m for body in [*ingest.values(), *search.values()] for m in references.model_ids_in(body)}
    named |= {m for fields in mappings.values() for ids in fields.values() for m in ids}
    refs = references.find_in(named, ingest, search, references.index_pipeline_settings(cluster), mappings)
    return ClusterReading(
        flat_settings(cluster),
        cluster.call("GET /_nodes", cluster.client.nodes.info)["nodes"],
        cluster.call("GET /_nodes/stats/os,jvm", cluster.client.nodes.stats, metric="os,jvm")["nodes"],
        models,
        deployment.read_many(cluster, models),
        refs,
        lease.expired_leases(cluster),
    )


def diagnose(cluster: Cluster, provenance: dict[str, dict] | None = None) -> list[Finding]:
    """Every finding on the cluster. ``provenance``: index -> the models its vectors come from
    (index_models.index_provenance), to compare with the models its pipelines use now."""
    reading = read_cluster(cluster)
    return [
        *settings_findings(reading),
        *capacity_findings(reading),
        *model_findings(reading),
        *provenance_findings(reading.refs, provenance or {}),
        *lease_findings(reading.leases),
    ]


def _setting(name: str, value) -> str:
    return f"PUT /_cluster/settings {json.dumps({'persistent': {name: value}})}"


def _from_blocker(check: str, blocker: Blocker) -> Finding:
    """A preflight blocker ("problem; fix") as a finding whose fix is the settings that clear it."""
    fix = ", ".join(_setting(ML + k, v) for k, v in (blocker.settings or {}).items())
    return Finding(check, ERROR, blocker.message.rsplit("; ", 1)[0], fix or blocker.message.rsplit("; ", 1)[-1])


EXAMPLE_REGEX = r"^https://artifacts\.example\.com/sparse/"
ANY_HOST = "https://any-host.invalid/model.zip"


def _admits_any_host(regex: str) -> bool:
    try:
        return bool(re.search(regex, ANY_HOST))
    except re.error:
        return False  # a Java-only construct: the server judges it


def ml_node_ids(nodes: dict) -> list[str]:
    return sorted(nid for nid, n in nodes.items() if "ml" in n.get("roles", []))


def settings_findings(r: ClusterReading) -> list[Finding]:
    s, out = r.settings, []
    if truthy(s.get(ML + "only_run_on_ml_node", "true")) and not ml_node_ids(r.nodes):
        out.append(
            Finding(
                "ml_nodes",
                ERROR,
                f"{ML}only_run_on_ml_node is true and no node has the ml role: every deploy is refused",
                f"add nodes with the ml role, or {_setting(ML + 'only_run_on_ml_node', False)}",
            )
        )
    regex = s.get(ML + "trusted_url_regex") or ""
    if truthy(s.get(ML + "allow_registering_model_via_url", "false")) and _admits_any_host(regex):
        out.append(
            Finding(
                "url_registration",
                WARNING,
                f"{ML}allow_registering_model_via_url is true and {ML}trusted_url_regex {regex!r} admits any host: "
                f"whoever may register a model can make the nodes download from anywhere",
                f"anchor the regex to your artifact host, e.g. {_setting(ML + 'trusted_url_regex', EXAMPLE_REGEX)}, "
                f"or {_setting(ML + 'allow_registering_model_via_url', False)} if nothing is registered by URL",
            )
        )
    out += [_from_blocker("memory", b) for b in memory_blockers(s, r.stats)]
    if str(s.get(deployment.AUTO_REDEPLOY, "true")).lower() == "false":
        out.append(
            Finding(
                "auto_redeploy",
                WARNING,
                f"{deployment.AUTO_REDEPLOY} is false: after a node restart its models stay stored DEPLOYED but "
                f"loaded nowhere, and predict, ingest and search with them fail until each is deployed by hand",
                _setting(deployment.AUTO_REDEPLOY, True),
            )
        )
    for mid, doc in sorted(r.models.items()):
        ttl = (doc.get("deploy_setting") or {}).get("model_ttl_minutes")
        if r.truth[mid].stored_deployed and isinstance(ttl, int | float) and ttl > 0:
            out.append(
                Finding(
                    "model_ttl",
                    WARNING,
                    f"model {_label(mid, doc)} has model_ttl_minutes={ttl:g} in its deploy settings: ML Commons "
                    f"undeploys it after {ttl:g} idle minutes, and what uses it fails then",
                    f'PUT /_plugins/_ml/models/{mid} {{"deploy_setting": {{"model_ttl_minutes": -1}}}}'
                    if doc.get("algorithm") == "REMOTE"  # ML Commons updates only remote models' settings
                    else "register it again without model_ttl_minutes (sparsepack release does) and point what "
                    "uses it at the new model id",
                )
            )
    return out


def capacity_findings(r: ClusterReading) -> list[Finding]:
    limit = int(r.settings.get(ML + "max_model_on_node", 10))
    eligible = target_nodes(r.nodes, None, truthy(r.settings.get(ML + "only_run_on_ml_node", "true")))
    out = []
    for nid, held in sorted(models_held(r.truth, eligible).items()):
        local = sorted(m for m in held if r.models.get(m, {}).get("algorithm") != "REMOTE")
        if len(local) >= limit:
            out.append(
                Finding(
                    "capacity",
                    WARNING,
                    f"node {r.nodes[nid].get('name', nid)} holds {len(local)} model(s) of {ML}max_model_on_node="
                    f"{limit} ({', '.join(_label(m, r.models.get(m, {})) for m in local)}): the next deploy there is "
                    f"refused",
                    f"undeploy the models no longer needed (sparsepack undeploy ID), or "
                    f"{_setting(ML + 'max_model_on_node', len(local) + 2)}",
                )
            )
    return out


def _label(model_id: str, doc: dict) -> str:
    name = doc.get("name")
    return f"{name} v{doc.get('model_version')} ({model_id})" if name else model_id


def model_findings(r: ClusterReading) -> list[Finding]:
    """Per model: stored against loaded state, and what stops working with it."""
    users: dict[str, list[str]] = {}
    for ref in r.refs:
        users.setdefault(ref.model_id, []).append(ref.describe())
    out = []
    for mid in sorted(set(r.models) | set(users)):
        used = f"; used by {', '.join(users[mid])}" if mid in users else ""
        if mid not in r.models:
            out.append(
                Finding(
                    "model",
                    ERROR,
                    f"model {mid} does not exist{used}: every request through them fails",
                    "point them at a model that exists (release --switch-pipelines), or remove them",
                )
            )
            continue
        dep, label = r.truth[mid], _label(mid, r.models[mid])
        deploy = f"POST /_plugins/_ml/models/{mid}/_deploy (or re-run the release)"
        if dep.missing or (dep.stored_deployed and not dep.usable):
            pending = dep.redeploy_pending and dep.auto_redeploy_active
            out.append(
                Finding(
                    "model",
                    WARNING if pending or dep.usable else ERROR,
                    f"model {label} is stored as {dep.stored_state} but {dep.summary()}{used}"
                    + ("; auto-redeploy is loading it again" if pending else ""),
                    ("wait a minute and check again; if it stays, " if pending else "") + deploy,
                )
            )
        elif used and not dep.usable:
            out.append(
                Finding(
                    "model",
                    ERROR,
                    f"model {label} is {dep.stored_state}, loaded on no node{used}: requests through them fail",
                    deploy,
                )
            )
    return out


def provenance_findings(refs: list[references.Reference], provenance: dict[str, dict]) -> list[Finding]:
    """Indices whose stored vectors come from one model while their pipelines encode with another: new documents
    (or queries) get vectors of a different model than the documents already there, and ranking goes wrong."""
    by_index: dict[str, dict[str, set[str]]] = {}
    for ref in refs:
        if ref.kind == "index" and ref.via and "=" in ref.via:
            setting = ref.via.split("=", 1)[0]
            kind = references.INDEX_PIPELINE_SETTINGS.get(setting)
            if kind:
                by_index.setdefault(ref.name, {}).setdefault(kind, set()).add(ref.model_id)
    out = []
    for index, prov in sorted(provenance.items()):
        for kind, key, what in (("ingest", "document_model_id", "documents"), ("search", "query_model_id", "queries")):
            recorded, now = prov.get(key), by_index.get(index, {}).get(kind)
            if recorded and now and recorded not in now:
                out.append(
                    Finding(
                        "provenance",
                        ERROR,
                        f"index {index} holds vectors from model {recorded} ({prov.get('source')}) but its {kind} "
                        f"pipeline encodes {what} with {', '.join(sorted(now))}: scores mix two models",
                        f"migrate the index onto {sorted(now)[0]} (sparsepack migrate), or point its {kind} "
                        f"pipeline back at {recorded}",
                    )
                )
    return out


def lease_findings(leases: list[dict]) -> list[Finding]:
    out = []
    for doc in leases:
        expired = dt.datetime.fromtimestamp(doc.get("expires_at", 0) / 1000, dt.timezone.utc)
        out.append(
            Finding(
                "lease",
                WARNING,
                f"{doc.get('kind', 'lease')} lease {doc.get('key')!r} of run {doc.get('owner')} expired "
                f"{expired.isoformat(timespec='seconds')}: that run died; the next release that needs it waits "
                f"{doc.get('ttl_s') or lease.DEFAULT_TTL:g}s before taking it over",
                f"if no release is running, DELETE /{lease.INDEX}/_doc/{doc['_id']}",
            )
        )
    return out
