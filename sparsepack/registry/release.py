"""package -> preflight -> register -> deploy -> smoke, as one re-runnable step with one JSON report."""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .. import __version__
from ..errors import ClusterError, SparsepackError
from ..packaging.introspect import load_model
from ..packaging.package import MANIFEST, load_manifest, package, slug, verify_artifacts
from . import models, preflight, smoke
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
    progress: bool = True


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
    if (path / MANIFEST).exists() or path.name == MANIFEST:
        return (*load_manifest(path), None)
    out = Path(package_dir) if package_dir else Path.cwd() / f"{slug(target)}-sparsepack"
    with report.step("package") as entry:
        spec = load_model(target, package_kwargs.get("revision"), package_kwargs.get("trust_remote_code", False))
        manifest = package(target, out, force=True, spec=spec, **package_kwargs)
        entry.update(out=str(out), artifacts=[a["file"] for a in manifest["artifacts"]])
    return manifest, out, spec.encoder


def deploy_targets(cluster: Cluster, opts: ReleaseOptions) -> list[str] | None:
    if opts.node_ids and opts.node_attr:
        raise SparsepackError("give --nodes or --node-attr, not both")
    if opts.node_attr:
        return models.nodes_with_attr(cluster, opts.node_attr)
    return list(opts.node_ids) or None


def register_and_deploy(cluster: Cluster, manifest: dict, root: Path, version: str, opts: ReleaseOptions, report: Report,
                        created: models.Created) -> dict[str, str]:
    group_name = opts.group or f"{manifest['name']}-sparsepack"
    ids: dict[str, str] = {}
    with report.step("register") as entry:
        group_id, new_group = models.ensure_group(cluster, group_name, version, created)
        entry.update(model_group=group_name, model_group_id=group_id, group_created=new_group, models={})
        for art in manifest["artifacts"]:
            stale = models.stale_uploads(cluster, group_id, art["sha256"])
            for model_id in stale:  # a run that died mid-upload left these; they can never become REGISTERED
                models.delete(cluster, model_id, opts.timeout)
            if stale:
                entry.setdefault("removed_stale", []).extend(stale)
            existing = models.find_by_hash(cluster, group_id, art["sha256"])
            if existing:
                ids[art["role"]] = existing["model_id"]
                entry["models"][art["role"]] = {"model_id": existing["model_id"], "reused": True}
                continue
            t0 = time.perf_counter()
            model_id = models.upload(cluster, manifest, root, art, group_id, version, created, opts.timeout, opts.progress)
            secs = time.perf_counter() - t0
            ids[art["role"]] = model_id
            entry["models"][art["role"]] = {"model_id": model_id, "reused": False, "upload_seconds": round(secs, 3),
                                            "upload_mb_per_s": round(art["size_bytes"] / 1e6 / max(secs, 1e-6), 2)}
        entry["retries"] = cluster.retried
        if opts.clear_previous:
            removed = []
            for model in models.models_in_group(cluster, group_id):
                if model["model_id"] not in ids.values():
                    models.delete(cluster, model["model_id"], opts.timeout)
                    removed.append(model["model_id"])
            entry["cleared_previous"] = removed
    with report.step("deploy") as entry:
        targets = deploy_targets(cluster, opts)
        entry["requested_nodes"] = targets
        for role, model_id in ids.items():
            entry[role] = models.deploy(cluster, model_id, targets, opts.timeout, created)
            entry[role]["profile_worker_nodes"] = models.worker_nodes(cluster, model_id)
    return ids


def release(target: str, conn: ConnectionOptions, opts: ReleaseOptions, package_dir: str | None = None,
            **package_kwargs) -> dict:
    report = Report(target, conn)
    created = models.Created()
    cluster: Cluster | None = None
    try:
        manifest, root, encoder = resolve_package(target, package_dir, report, **package_kwargs)
        report.data["package"] = {"dir": str(root), "name": manifest["name"], "mode": manifest["mode"],
                                  "artifacts": {a["role"]: a["sha256"] for a in manifest["artifacts"]}}
        with report.step("verify"):
            verify_artifacts(manifest, root)
        cluster = connect(conn)
        with report.step("preflight") as entry:
            chosen = opts.node_ids or ([opts.node_attr] if opts.node_attr else None)
            pf = preflight.run_preflight(cluster, manifest, chosen)
            if not pf.ok and opts.apply_settings and not any("not installed" in b or "does not load" in b for b in pf.blockers):
                entry["applied_settings"] = preflight.apply_settings(cluster, pf.version)
                pf = preflight.run_preflight(cluster, manifest, chosen)
            entry.update(pf.as_dict())
            report.data["cluster"] = {"version": pf.version, "ml_nodes": pf.ml_nodes}
            preflight.require_ok(pf)
        ids = register_and_deploy(cluster, manifest, root, pf.version, opts, report, created)
        report.data["model_ids"] = ids
        if opts.smoke:
            encode_query = (lambda texts: encoder.encode_query(texts, convert_to_tensor=True).to_dense()) if encoder else None
            run_smoke(cluster, manifest, root, pf.version, ids, opts.keep, report, encode_query)
        report.data["passed"] = True
    except (SparsepackError, KeyboardInterrupt) as exc:
        report.data["error"] = str(exc)
        report.data["failed_step"] = report.data["failed_step"] or "setup"
        if cluster is not None and not opts.keep_on_failure and (created.model_ids or created.group_id or created.deployed):
            left = models.rollback(cluster, created)
            report.data["rollback"] = {"removed_models": created.model_ids, "removed_group": created.group_id, "left": left}
        elif created.model_ids:
            report.data["kept_on_failure"] = created.model_ids
    return report.data


def run_smoke(cluster: Cluster, manifest: dict, root: Path, version: str, ids: dict[str, str], keep: bool, report: Report,
              encode_query=None) -> None:
    local = smoke.LocalPackage(manifest, root)
    query_model = ids.get("query")
    with report.step("smoke_predict") as entry:
        entry.update(smoke.check_predict(cluster, local, ids["document"], query_model, encode_query))
    with report.step("smoke_retrieval") as entry:
        entry.update(smoke.check_retrieval(cluster, local, version, ids["document"], query_model, keep))
