"""The release steps, each a function of the run's context; run.STEPS puts them in order."""

from __future__ import annotations

from pathlib import Path

from ..contract.formats import for_format
from ..contract.naming import slug
from ..contract.package_dir import is_package, load_package, verify_artifacts
from ..errors import SparsepackError
from ..packaging.introspect import load_model
from ..packaging.package import package
from ..registry import artifact_url, lease, model_deploy, models, preflight, references, smoke, switch
from ..registry.connection import Cluster, connect
from ..registry.registration import (
    ensure_group_once,
    previous_versions,
    register_artifact,
)
from . import migration
from .context import ReleaseContext
from .options import ReleaseOptions
from .report import Report


def check_target(ctx: ReleaseContext) -> None:
    if ctx.opts.artifact_base_url and not is_package(ctx.target):
        raise SparsepackError(
            f"--artifact-base-url registers hosted zips, and {ctx.target} is not a package: run "
            f"`sparsepack package {ctx.target} -o DIR`, host DIR's zips at the URL, then release DIR"
        )


def package_target(ctx: ReleaseContext) -> None:
    """A package dir is used as is; a model is packaged first and kept loaded, so the smoke test can compare the
    cluster with the model itself too."""
    kwargs = {"artifact_format": ctx.opts.artifact_format or "torchscript", **ctx.package_kwargs}
    if is_package(ctx.target):
        loaded = load_package(ctx.target)
        manifest, ctx.root = loaded.to_dict(), loaded.package_root
    else:
        out = Path(ctx.package_dir) if ctx.package_dir else Path.cwd() / f"{slug(ctx.target)}-sparsepack"
        with ctx.report.step("package") as entry:
            spec = load_model(ctx.target, kwargs.get("revision"), kwargs.get("trust_remote_code", False))
            manifest = package(ctx.target, out, force=True, spec=spec, **kwargs)
            entry.update(out=str(out), artifacts=[a["file"] for a in manifest["artifacts"]])
        ctx.root, ctx.encoder = out, spec.encoder
    ctx.manifest = for_format(manifest, ctx.opts.artifact_format)
    ctx.report.record(
        "package",
        {
            "dir": str(ctx.root),
            "name": ctx.manifest["name"],
            "mode": ctx.manifest["mode"],
            "artifacts": {a["role"]: a["sha256"] for a in ctx.manifest["artifacts"]},
            "format": ctx.manifest["formats"][0] if "formats" in ctx.manifest else "torchscript",
            **proof_summary(ctx.manifest),
        },
    )


def proof_summary(manifest: dict) -> dict:
    """The package's proof as CI wants it in the report: devices verified and their figures, the fp16 gate."""
    doc = manifest.get("parity", {}).get("document", {})
    by_device = {
        dev: {
            k: fig.get(k)
            for k in ("max_abs_diff", "identical_token_sets", "passed", "name", "torch", "cuda", "tf32")
            if fig.get(k) is not None
        }
        for dev, fig in doc.get("by_device", {}).items()
    }
    out = {
        "precision": manifest.get("precision", "fp32"),
        "requires_gpu": bool(manifest.get("requires_gpu")),
        "device_portable": manifest.get("device_portable"),
        "parity_devices": by_device,
    }
    if doc.get("quality_gate"):
        out["quality_gate"] = doc["quality_gate"]
    return out


def verify(ctx: ReleaseContext) -> None:
    with ctx.report.step("verify"):
        verify_artifacts(ctx.manifest, ctx.root)
        require_gpu_targets(ctx.manifest, ctx.opts)


def require_gpu_targets(manifest: dict, opts: ReleaseOptions) -> None:
    problem = preflight.gpu_targets_problem(manifest, opts.node_ids or opts.node_attr)
    if problem:
        raise SparsepackError(f"{problem}: --node-attr KEY=VALUE (e.g. gpu=true) or --nodes ID,...")


def connect_cluster(ctx: ReleaseContext) -> None:
    ctx.cluster = connect(ctx.conn)


def check_cluster(ctx: ReleaseContext) -> None:
    """Preflight; with ``apply_settings``, the settings that clear the blockers, when settings can clear them all."""
    opts, cluster = ctx.opts, ctx.cluster
    with ctx.report.step("preflight") as entry:
        chosen = opts.node_ids or ([opts.node_attr] if opts.node_attr else None)
        urls = (
            [artifact_url.artifact_url(opts.artifact_base_url, a) for a in ctx.manifest["artifacts"]]
            if opts.artifact_base_url
            else None
        )
        pf = preflight.run_preflight(
            cluster, ctx.manifest, chosen, ctx.group_name, artifact_urls=urls, field_type=opts.field_type
        )
        if opts.apply_settings and pf.fixable:
            entry["applied_settings"] = preflight.apply_settings(cluster, pf.version, **pf.fixes())
            pf = preflight.run_preflight(
                cluster, ctx.manifest, chosen, ctx.group_name, artifact_urls=urls, field_type=opts.field_type
            )
        if urls:
            entry["artifact_urls"] = urls
        entry.update(pf.as_dict())
        ctx.report.warn(*pf.warnings)
        ctx.report.record_cluster(pf.version, pf.ml_nodes)
        preflight.require_ok(pf)  # the field type too: refused before anything is uploaded
        ctx.version = pf.version


def take_lease(ctx: ReleaseContext) -> None:
    ctx.coord = lease.Coordinator(ctx.cluster, ctx.opts.timeout, ctx.opts.lease_ttl)


def plan_upgrade(ctx: ReleaseContext) -> None:
    """Before anything is created: the pipelines to switch must use a version of this group, and clearing the
    previous versions must leave nothing in use."""
    cluster, opts = ctx.cluster, ctx.opts
    assert cluster is not None and ctx.coord is not None  # connected and leased before the plan
    with ctx.report.step("upgrade_plan") as entry:
        group_id = models.find_group(cluster, ctx.group_name)
        hashes = {a["sha256"] for a in ctx.manifest["artifacts"]}
        in_group = models.models_in_group(cluster, group_id) if group_id else []
        current = {m["model_id"] for m in in_group if m.get("model_content_hash_value") in hashes}
        in_flight = ctx.coord.models_in_flight(group_id) if group_id else set()
        old = set(previous_versions(cluster, group_id, current, in_flight))
        selected = switch.select(cluster, opts.switch_pipelines, old, current) if opts.switch_pipelines else []
        entry.update(
            model_group=ctx.group_name,
            previous_versions=sorted(old),
            new_version_already_registered=sorted(current),
            switch=[{"kind": k, "name": n} for k, n in selected],
        )
        mixed = switch.mixed_vector_indices(cluster, selected, current)
        if mixed:
            entry["mixed_vectors"] = mixed
            if not opts.allow_mixed_vectors:
                raise switch.MixedVectorsError(mixed)
        ctx.migration_sources = migration.plan(ctx)
        if ctx.migration_sources:
            entry["migrate"] = dict(ctx.migration_sources)
        if opts.clear_previous:
            in_use = switch.left_in_use(cluster, old, selected)
            kept = migration.kept_for_rollback(in_use, ctx.migration_sources)
            entry["kept_for_rollback"] = kept
            in_use = [r for r in in_use if r.model_id not in kept]
            entry["left_in_use"] = [r.as_dict() for r in in_use]
            if in_use:
                raise references.InUseError(
                    f"clear the previous versions of model group {ctx.group_name} (nothing "
                    f"was registered, deployed or deleted)",
                    in_use,
                )
        ctx.pipelines_to_switch = selected


def register(ctx: ReleaseContext) -> None:
    cluster, coord, opts = ctx.cluster, ctx.coord, ctx.opts
    with ctx.report.step("register") as entry:
        ctx.group_id, new_group = ensure_group_once(
            cluster, coord, ctx.group_name, ctx.version, ctx.created, opts.access_mode, opts.backend_roles
        )
        entry.update(
            model_group=ctx.group_name,
            model_group_id=ctx.group_id,
            group_created=new_group,
            models={},
            lease={"index": lease.INDEX, "owner": coord.owner, "ttl_s": coord.ttl, "lost_to_other_run": coord.lost},
        )
        coord.claim(ctx.group_id, [])  # the group is in use from here: a failed run that created it leaves it to us

        def note_stale(model_ids: list[str]) -> None:
            entry.setdefault("removed_stale", []).extend(model_ids)

        for art in sorted(
            ctx.manifest["artifacts"], key=lambda a: a["sha256"]
        ):  # one order in every run: no lease cycles
            record = register_artifact(
                cluster,
                coord,
                ctx.manifest,
                ctx.root,
                art,
                ctx.group_id,
                ctx.version,
                ctx.created,
                opts.timeout,
                opts.artifact_base_url,
                opts.progress,
                note_stale,
            )
            entry["models"][art["role"]] = record
            ctx.model_ids[art["role"]] = record["model_id"]
        coord.claim(ctx.group_id, ctx.model_ids.values())
        entry["lease"]["took_over_expired_from"] = coord.took_over
        entry["retries"] = cluster.retried


def deploy_targets(cluster: Cluster, opts: ReleaseOptions) -> list[str] | None:
    if opts.node_ids and opts.node_attr:
        raise SparsepackError("give --nodes or --node-attr, not both")
    if opts.node_attr:
        return models.nodes_with_attr(cluster, opts.node_attr)
    return list(opts.node_ids) or None


def deploy(ctx: ReleaseContext) -> None:
    with ctx.report.step("deploy") as entry:
        targets = deploy_targets(ctx.cluster, ctx.opts)
        entry["requested_nodes"] = targets
        for role, model_id in ctx.model_ids.items():
            entry[role] = model_deploy.deploy(ctx.cluster, model_id, targets, ctx.opts.timeout, ctx.created)
            entry[role]["profile_worker_nodes"] = models.worker_nodes(ctx.cluster, model_id)
    ctx.coord.finish_all()  # waiting runs reuse the deployed models from here on
    ctx.report.record_model_ids(ctx.model_ids)


def smoke_test(ctx: ReleaseContext) -> None:
    run_smoke(
        ctx.cluster,
        ctx.manifest,
        ctx.root,
        ctx.version,
        ctx.model_ids,
        ctx.opts.keep,
        ctx.report,
        ctx.query_encoder(),
        ctx.opts.field_type,
    )


def run_smoke(
    cluster: Cluster,
    manifest: dict,
    root: Path,
    version: str,
    ids: dict[str, str],
    keep: bool,
    report: Report,
    encode_query=None,
    field_type: str = "rank_features",
) -> None:
    """The deployed models against the package: predictions, then retrieval through a real index."""
    local = smoke.LocalPackage(manifest, root)
    query_model = ids.get("query")
    with report.step("smoke_predict") as entry:
        entry.update(smoke.check_predict(cluster, local, ids["document"], query_model, encode_query))
    with report.step("smoke_retrieval") as entry:
        entry.update(
            smoke.check_retrieval(cluster, local, version, ids["document"], query_model, keep, field_type=field_type)
        )


def switch_pipelines(ctx: ReleaseContext) -> None:
    cluster, ids, group_id = ctx.cluster, ctx.model_ids, ctx.require_group_id()
    with ctx.report.step("switch_pipelines") as entry:
        old = set(previous_versions(cluster, group_id, set(ids.values()), ctx.coord.models_in_flight(group_id)))
        changes = switch.switch(cluster, ctx.pipelines_to_switch, old, ids)
        entry["pipelines"] = [c.as_dict() for c in changes]
        entry["output_comparison"] = switch.compare_versions(cluster, changes, ids["document"])
        warning = switch.reindex_warning(cluster, changes, entry["output_comparison"])
        if warning:
            entry["reindex_warning"] = warning
            ctx.report.warn(warning)
        ctx.pipelines_switched = changes


def clear_previous(ctx: ReleaseContext) -> None:
    """Undeploy and delete the group's other versions, all or none refused while anything uses them; a version the old
    index of a migrated alias still uses stays, for the migration's rollback."""
    with ctx.report.step("clear_previous") as entry:
        group_id = ctx.require_group_id()
        in_flight = ctx.coord.models_in_flight(group_id)  # other live runs' models are never cleared
        entry["kept_in_flight"] = sorted(in_flight)
        old = previous_versions(ctx.cluster, group_id, set(ctx.model_ids.values()), in_flight)
        refs = references.find(ctx.cluster, old)
        kept = migration.kept_for_rollback(refs, ctx.migration_sources)
        entry["kept_for_rollback"] = kept
        in_use = [r for r in refs if r.model_id not in kept]
        if in_use:
            raise references.InUseError("clear the previous versions", in_use)
        for model_id in (m for m in old if m not in kept):
            models.delete(ctx.cluster, model_id, ctx.opts.timeout, check_references=False)
            ctx.removed_previous.append(model_id)
            entry["removed"] = list(ctx.removed_previous)
        entry["removed"] = list(ctx.removed_previous)
