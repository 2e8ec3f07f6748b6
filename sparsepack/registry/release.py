"""package -> preflight -> register -> deploy -> smoke -> switch pipelines -> clear previous versions, as one re-runnable
step with one JSON report. Old versions go last, once the new one is proven: a failure leaves them serving."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import ClusterError, SparsepackError
from ..packaging.introspect import load_model
from ..contract.formats import for_format
from ..contract.naming import default_group_name, slug
from ..contract.package_dir import is_package
from ..contract.package_dir import load_package, verify_artifacts
from ..packaging.package import package
from . import artifact_url, lease, models, preflight, references, smoke, switch
from .connection import Cluster, ConnectionOptions, connect


@dataclass
class ReleaseOptions:
    group: str | None = None
    clear_previous: bool = False
    node_ids: list[str] = field(default_factory=list)
    node_attr: str | None = None
    timeout: float = 300.0
    keep_on_failure: bool = False
    keep: bool = False
    apply_settings: bool = False
    smoke: bool = True
    field_type: str = "rank_features"  # the smoke index's field: rank_features, or sparse_vector (SEISMIC, 3.3+)
    progress: bool = True
    switch_pipelines: list[str] = field(default_factory=list)  # ["all"] or pipeline names
    lease_ttl: float | None = None  # seconds; None: $SPARSEPACK_LEASE_TTL or 60 (see lease.py)
    artifact_base_url: str | None = None  # register each zip from BASE/<file> (hosted package) instead of uploading
    artifact_format: str | None = None  # torchscript | onnx: which document artifact to register (None: the package's first)
    access_mode: str | None = None  # public | private | restricted: a new model group's access (model access control)
    backend_roles: list[str] = field(default_factory=list)  # restricted groups: who may see and deploy the models


class Report:
    def __init__(self, target: str, conn: ConnectionOptions):
        self.data: dict = {"sparsepack_version": __version__, "target": target, "connection": conn.redacted(), "steps": {},
                           "passed": False, "failed_step": None}

    @contextmanager
    def step(self, name: str):
        t0 = time.perf_counter()
        entry = self.data["steps"].setdefault(name, {})
        try:
            yield entry
        except BaseException as exc:
            entry.update(passed=False, error=str(exc), seconds=round(time.perf_counter() - t0, 3))
            self.data["failed_step"] = self.data["failed_step"] or name
            raise
        entry.setdefault("passed", True)
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        if not entry["passed"]:
            self.data["failed_step"] = self.data["failed_step"] or name
            raise ClusterError(f"{name} failed; see the report's steps.{name}")


def resolve_package(target: str, package_dir: str | None, report: Report, **package_kwargs):
    """(manifest, package dir, source encoder or None): a package dir is used as is; a model is packaged first and
    kept loaded, so the smoke test can compare the cluster with the model itself too."""
    path = Path(target)
    if is_package(target):
        loaded = load_package(path)
        return loaded.to_dict(), loaded.root, None
    out = Path(package_dir) if package_dir else Path.cwd() / f"{slug(target)}-sparsepack"
    with report.step("package") as entry:
        spec = load_model(target, package_kwargs.get("revision"), package_kwargs.get("trust_remote_code", False))
        manifest = package(target, out, force=True, spec=spec, **package_kwargs)
        entry.update(out=str(out), artifacts=[a["file"] for a in manifest["artifacts"]])
    return manifest, out, spec.encoder


def proof_summary(manifest: dict) -> dict:
    """The package's proof as CI wants it in the report: devices verified and their figures, the fp16 gate."""
    doc = manifest.get("parity", {}).get("document", {})
    by_device = {dev: {k: fig.get(k) for k in ("max_abs_diff", "identical_token_sets", "passed", "name", "torch", "cuda", "tf32")
                       if fig.get(k) is not None} for dev, fig in doc.get("by_device", {}).items()}
    out = {"precision": manifest.get("precision", "fp32"), "requires_gpu": bool(manifest.get("requires_gpu")),
           "device_portable": manifest.get("device_portable"), "parity_devices": by_device}
    if doc.get("quality_gate"):
        out["quality_gate"] = doc["quality_gate"]
    return out


def require_gpu_targets(manifest: dict, opts: ReleaseOptions) -> None:
    """An fp16 artifact runs only on GPU nodes: deploying it everywhere would put it on CPU nodes too."""
    if manifest.get("requires_gpu") and not (opts.node_ids or opts.node_attr):
        raise SparsepackError("this package's document artifact is fp16 and runs on GPU ML nodes only; pick them with "
                              "--node-attr KEY=VALUE (e.g. gpu=true) or --nodes ID,...")


def deploy_targets(cluster: Cluster, opts: ReleaseOptions) -> list[str] | None:
    if opts.node_ids and opts.node_attr:
        raise SparsepackError("give --nodes or --node-attr, not both")
    if opts.node_attr:
        return models.nodes_with_attr(cluster, opts.node_attr)
    return list(opts.node_ids) or None


def ensure_group_once(cluster: Cluster, coord: lease.Coordinator, name: str, version: str, created: models.Created,
                      opts: ReleaseOptions | None = None) -> tuple[str, bool]:
    """Find or create the group under a lease: concurrent runs never create two groups of one name."""
    key = f"group:{name}"
    done = coord.acquire(key, "group", lambda gid: models.get_group(cluster, gid) is not None,
                         f"creating model group {name!r}", group=name)
    if done:
        return done, False
    group_id, new_group = models.ensure_group(cluster, name, version, created, opts and opts.access_mode,
                                              opts and opts.backend_roles)
    coord.finish(key, group_id)
    return group_id, new_group


def register_artifact(cluster: Cluster, coord: lease.Coordinator, manifest: dict, root: Path, art: dict, group_id: str,
                      version: str, opts: ReleaseOptions, created: models.Created, entry: dict) -> str:
    """Find-or-upload one artifact under its lease (held until the deploy step ends, see lease.py)."""
    key = f"model:{group_id}:{art['sha256']}"
    t0 = time.perf_counter()

    def same_model(model_id: str) -> bool:
        model = models.get_model(cluster, model_id) or {}
        return model.get("model_state") in models.USABLE and model.get("model_content_hash_value") == art["sha256"]

    done = coord.acquire(key, "model", same_model, f"registering and deploying {art['file']}", group_id=group_id,
                         sha256=art["sha256"])
    if done:  # another run registered (and deployed) it while we waited
        entry["models"][art["role"]] = {"model_id": done, "reused": True,
                                        "waited_for_other_run_seconds": round(time.perf_counter() - t0, 3)}
        return done
    stale = models.stale_uploads(cluster, group_id, art["sha256"])
    for model_id in stale:  # a run that died mid-upload left these; they can never become REGISTERED
        models.delete(cluster, model_id, opts.timeout)
    if stale:
        entry.setdefault("removed_stale", []).extend(stale)
    existing = models.find_by_hash(cluster, group_id, art["sha256"])
    if existing:
        entry["models"][art["role"]] = {"model_id": existing["model_id"], "reused": True}
        coord.note(key, result=existing["model_id"])
        return existing["model_id"]
    t0 = time.perf_counter()
    if opts.artifact_base_url:
        url = artifact_url.artifact_url(opts.artifact_base_url, art)
        model_id = artifact_url.register_from_url(cluster, manifest, art, url, group_id, version, created, opts.timeout)
        coord.note(key, result=model_id)
        entry["models"][art["role"]] = {"model_id": model_id, "reused": False, "url": url,
                                        "register_seconds": round(time.perf_counter() - t0, 3)}
        return model_id
    model_id = models.upload(cluster, manifest, root, art, group_id, version, created, opts.timeout, opts.progress)
    secs = time.perf_counter() - t0
    coord.note(key, result=model_id)
    entry["models"][art["role"]] = {"model_id": model_id, "reused": False, "upload_seconds": round(secs, 3),
                                    "upload_mb_per_s": round(art["size_bytes"] / 1e6 / max(secs, 1e-6), 2)}
    return model_id


def register_and_deploy(cluster: Cluster, manifest: dict, root: Path, version: str, opts: ReleaseOptions, report: Report,
                        created: models.Created, coord: lease.Coordinator) -> dict[str, str]:
    group_name = opts.group or default_group_name(manifest['name'])
    ids: dict[str, str] = {}
    with report.step("register") as entry:
        group_id, new_group = ensure_group_once(cluster, coord, group_name, version, created, opts)
        entry.update(model_group=group_name, model_group_id=group_id, group_created=new_group, models={},
                     lease={"index": lease.INDEX, "owner": coord.owner, "ttl_s": coord.ttl, "lost_to_other_run": coord.lost})
        coord.claim(group_id, [])  # the group is in use from here: a failed run that created it leaves it to us
        for art in sorted(manifest["artifacts"], key=lambda a: a["sha256"]):  # one order in every run: no lease cycles
            ids[art["role"]] = register_artifact(cluster, coord, manifest, root, art, group_id, version, opts, created, entry)
        coord.claim(group_id, ids.values())
        entry["lease"]["took_over_expired_from"] = coord.took_over
        entry["retries"] = cluster.retried
    with report.step("deploy") as entry:
        targets = deploy_targets(cluster, opts)
        entry["requested_nodes"] = targets
        for role, model_id in ids.items():
            entry[role] = models.deploy(cluster, model_id, targets, opts.timeout, created)
            entry[role]["profile_worker_nodes"] = models.worker_nodes(cluster, model_id)
    coord.finish_all()  # waiting runs reuse the deployed models from here on
    return ids


def previous_versions(cluster: Cluster, group_id: str | None, current: set[str], in_flight: set[str]) -> list[str]:
    """The group's other models, except those another live release run is registering, deploying or using."""
    if not group_id:
        return []
    return sorted(m["model_id"] for m in models.models_in_group(cluster, group_id)
                  if m["model_id"] not in current and m["model_id"] not in in_flight)


def plan_upgrade(cluster: Cluster, manifest: dict, opts: ReleaseOptions, report: Report, coord: lease.Coordinator
                 ) -> list[tuple[str, str]]:
    """Before anything is created: the pipelines --switch-pipelines names must use a version of this group, and
    --clear-previous must leave nothing in use. Returns the (kind, name) pipelines to switch."""
    if not (opts.clear_previous or opts.switch_pipelines):
        return []
    with report.step("upgrade_plan") as entry:
        group_name = opts.group or default_group_name(manifest['name'])
        group_id = models.find_group(cluster, group_name)
        hashes = {a["sha256"] for a in manifest["artifacts"]}
        in_group = models.models_in_group(cluster, group_id) if group_id else []
        current = {m["model_id"] for m in in_group if m.get("model_content_hash_value") in hashes}
        in_flight = coord.models_in_flight(group_id) if group_id else set()
        old = set(previous_versions(cluster, group_id, current, in_flight))
        selected = switch.select(cluster, opts.switch_pipelines, old, current) if opts.switch_pipelines else []
        entry.update(model_group=group_name, previous_versions=sorted(old), new_version_already_registered=sorted(current),
                     switch=[{"kind": k, "name": n} for k, n in selected])
        if opts.clear_previous:
            in_use = switch.left_in_use(cluster, old, selected)
            entry["left_in_use"] = [r.as_dict() for r in in_use]
            if in_use:
                raise references.InUseError(f"clear the previous versions of model group {group_name} (nothing was "
                                            f"registered, deployed or deleted)", in_use)
    return selected


def switch_pipelines(cluster: Cluster, group_id: str, ids: dict[str, str], selected: list[tuple[str, str]], report: Report,
                     coord: lease.Coordinator) -> None:
    with report.step("switch_pipelines") as entry:
        old = set(previous_versions(cluster, group_id, set(ids.values()), coord.models_in_flight(group_id)))
        changes = switch.switch(cluster, selected, old, ids)
        entry["pipelines"] = [c.as_dict() for c in changes]
        entry["output_comparison"] = switch.compare_versions(cluster, changes, ids["document"])
        warning = switch.reindex_warning(cluster, changes, entry["output_comparison"])
        if warning:
            entry["reindex_warning"] = warning
            report.data.setdefault("warnings", []).append(warning)


def clear_previous(cluster: Cluster, group_id: str, ids: dict[str, str], opts: ReleaseOptions, report: Report,
                   coord: lease.Coordinator) -> None:
    """Last step: undeploy and delete the group's other versions, all or none refused while anything uses them."""
    with report.step("clear_previous") as entry:
        in_flight = coord.models_in_flight(group_id)  # other live runs' models are never cleared
        entry["kept_in_flight"] = sorted(in_flight)
        old = previous_versions(cluster, group_id, set(ids.values()), in_flight)
        references.refuse_if_used(cluster, old, "clear the previous versions")
        removed = []
        for model_id in old:
            models.delete(cluster, model_id, opts.timeout, check_references=False)
            removed.append(model_id)
            entry["removed"] = removed
        entry["removed"] = removed


def release(target: str, conn: ConnectionOptions, opts: ReleaseOptions, package_dir: str | None = None,
            **package_kwargs) -> dict:
    report = Report(target, conn)
    created = models.Created()
    cluster: Cluster | None = None
    coord: lease.Coordinator | None = None
    proven = False
    try:
        if opts.artifact_base_url and not is_package(target):
            raise SparsepackError(f"--artifact-base-url registers hosted zips, and {target} is not a package: run "
                                  f"`sparsepack package {target} -o DIR`, host DIR's zips at the URL, then release DIR")
        manifest, root, encoder = resolve_package(target, package_dir, report,
                                                  **{"artifact_format": opts.artifact_format or "torchscript", **package_kwargs})
        manifest = for_format(manifest, opts.artifact_format)
        report.data["package"] = {"dir": str(root), "name": manifest["name"], "mode": manifest["mode"],
                                  "artifacts": {a["role"]: a["sha256"] for a in manifest["artifacts"]},
                                  "format": manifest["formats"][0] if "formats" in manifest else "torchscript",
                                  **proof_summary(manifest)}
        with report.step("verify"):
            verify_artifacts(manifest, root)
            require_gpu_targets(manifest, opts)
        cluster = connect(conn)
        with report.step("preflight") as entry:
            chosen = opts.node_ids or ([opts.node_attr] if opts.node_attr else None)
            group_name = opts.group or default_group_name(manifest['name'])
            urls = [artifact_url.artifact_url(opts.artifact_base_url, a) for a in manifest["artifacts"]] \
                if opts.artifact_base_url else None
            pf = preflight.run_preflight(cluster, manifest, chosen, group_name, artifact_urls=urls)
            if not pf.ok and opts.apply_settings and not any("not installed" in b or "does not load" in b for b in pf.blockers):
                extra = {"allow_registering_model_via_url": True} if urls else {}
                if any("trusted_url_regex" in b for b in pf.blockers):
                    extra["trusted_url_regex"] = artifact_url.narrow_regex(opts.artifact_base_url)
                entry["applied_settings"] = preflight.apply_settings(cluster, pf.version, **extra)
                pf = preflight.run_preflight(cluster, manifest, chosen, group_name, artifact_urls=urls)
            if urls:
                entry["artifact_urls"] = urls
            entry.update(pf.as_dict())
            if pf.warnings:
                report.data.setdefault("warnings", []).extend(pf.warnings)
            report.data["cluster"] = {"version": pf.version, "ml_nodes": pf.ml_nodes}
            preflight.require_ok(pf)
            smoke.check_field_type(opts.field_type, pf.version)
        coord = lease.Coordinator(cluster, opts.timeout, opts.lease_ttl)
        selected = plan_upgrade(cluster, manifest, opts, report, coord)
        ids = register_and_deploy(cluster, manifest, root, pf.version, opts, report, created, coord)
        report.data["model_ids"] = ids
        if opts.smoke:
            encode_query = (lambda texts: encoder.encode_query(texts, convert_to_tensor=True).to_dense()) if encoder else None
            run_smoke(cluster, manifest, root, pf.version, ids, opts.keep, report, encode_query, opts.field_type)
        group_id = report.data["steps"]["register"]["model_group_id"]
        if opts.switch_pipelines:
            switch_pipelines(cluster, group_id, ids, selected, report, coord)
        # The new version is proven (and serving the switched pipelines): a failure from here on keeps it.
        proven = True
        if opts.clear_previous:
            clear_previous(cluster, group_id, ids, opts, report, coord)
        report.data["passed"] = True
    except (SparsepackError, KeyboardInterrupt) as exc:
        report.data["error"] = str(exc)
        report.data["exit_code"] = getattr(exc, "exit_code", 130)  # 2 bad input, 3 parity, 4 cluster, 130 interrupted
        report.data["failed_step"] = report.data["failed_step"] or "setup"
        if proven:
            report.data["kept"] = {"model_ids": report.data["model_ids"], "why": "the new version passed every check and is "
                                   "deployed; only clearing the previous versions failed, they were left as they were"}
        elif cluster is not None and not opts.keep_on_failure and (created.model_ids or created.group_id or created.deployed):
            if created.group_id and coord is not None and coord.group_in_use(created.group_id):
                report.data["kept_group_in_use_by_other_runs"], created.group_id = created.group_id, None
            left = models.rollback(cluster, created)
            report.data["rollback"] = {"removed_models": created.model_ids, "removed_group": created.group_id, "left": left}
        elif created.model_ids:
            report.data["kept_on_failure"] = created.model_ids
    finally:
        if coord is not None:
            coord.close()  # after any rollback: waiting runs then redo what this run could not finish
    return report.data


def run_smoke(cluster: Cluster, manifest: dict, root: Path, version: str, ids: dict[str, str], keep: bool, report: Report,
              encode_query=None, field_type: str = "rank_features") -> None:
    local = smoke.LocalPackage(manifest, root)
    query_model = ids.get("query")
    with report.step("smoke_predict") as entry:
        entry.update(smoke.check_predict(cluster, local, ids["document"], query_model, encode_query))
    with report.step("smoke_retrieval") as entry:
        entry.update(smoke.check_retrieval(cluster, local, version, ids["document"], query_model, keep, field_type=field_type))
