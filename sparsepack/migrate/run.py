"""migrate / rollback / finish: the steps in order, each re-runnable from the state kept in the new index's _meta."""

from __future__ import annotations

import time

from ..errors import SparsepackError
from ..registry import models, references
from ..registry.connection import Cluster
from . import changes, fill, provenance, swap, verify
from . import source as source_mod
from . import target as target_mod
from .errors import MigrationError
from .report import MigrationOptions, MigrationReport

QUIET_ROUND = 100  # fewer changes than this in a round: the rest is carried under the write block
BLOCK_SETTLE_SECONDS = 10.0


def _require_deployed(cluster: Cluster, model_ids: set[str]) -> None:
    for model_id in sorted(model_ids):
        state = (models.get_model(cluster, model_id) or {}).get("model_state")
        if state not in models.DEPLOYED:
            raise MigrationError(
                f"model {model_id} is {state or 'unknown to the cluster'}, not deployed; deploy it "
                f"(release) and re-run",
                "preflight",
            )


def migrate(
    cluster: Cluster,
    alias: str,
    document_model_id: str,
    query_model_id: str | None = None,
    options: MigrationOptions | None = None,
) -> MigrationReport:
    opts = options or MigrationOptions()
    query_model_id = query_model_id or document_model_id
    report = MigrationReport(alias, document_model_id=document_model_id, query_model_id=query_model_id)
    with report.step("plan"):
        src = source_mod.resolve(cluster, alias)
        report.old_index = report.alias_on = src.name
        existing = provenance.read_meta(cluster, src.name) or {}
        if (
            existing.get("migration", {}).get("source")
            and (existing.get("document_model") or {}).get("model_id") == document_model_id
        ):
            report.new_index, report.passed = src.name, True  # a re-run after the swap: nothing left to do
            return report
        source_mod.refuse_lossy_patterns(src)
        if src.write_blocked:
            raise MigrationError(
                f"{src.name} has a write block (index.blocks.write); lift it (or finish the migration "
                f"that set it) first",
                "plan",
                alias_on=src.name,
            )
        _require_deployed(cluster, {document_model_id, query_model_id})
        plan = target_mod.plan(cluster, src, document_model_id, query_model_id, opts.new_index)
        report.new_index, report.pipelines = plan.index, plan.pipelines
    try:
        _fill_and_swap(cluster, src, plan, opts, report)
    except BaseException as exc:
        report.error = str(exc)
        report.failed_step = getattr(exc, "step", None) or report.failed_step
        if isinstance(exc, KeyboardInterrupt):
            raise  # the reindex task goes on on the cluster; the next run continues it
        if opts.cleanup and not report.swapped:
            target_mod.remove(cluster, plan.index, plan.pipelines)
        if isinstance(exc, SparsepackError) and not isinstance(exc, MigrationError):
            raise MigrationError(str(exc), report.failed_step or "migrate", alias_on=report.alias_on) from exc
        if isinstance(exc, MigrationError):
            exc.alias_on = report.alias_on
        raise
    report.passed = True
    return report


def _fill_and_swap(cluster: Cluster, src, plan, opts: MigrationOptions, report: MigrationReport) -> None:
    log = opts.progress
    # never copied: the new index's pipelines derive them again
    regenerated = target_mod.regenerated_fields(plan.mappings, [body for _, body in plan.ingest_copies.values()])
    with report.step("create"):
        meta = provenance.read_meta(cluster, plan.index)
        if meta is None:
            new_meta = provenance.provenance(cluster, plan.document_model, plan.query_model, src.name)
            new_meta["migration"] = {
                "alias": src.alias,
                "source": src.name,
                "replaced_models": sorted(plan.replaced_models),
                "source_pipelines": {
                    **src.ingest_pipelines,
                    **({"index.search.default_pipeline": src.search_pipeline} if src.search_pipeline else {}),
                },
                "pipelines": plan.pipelines,
            }
            target_mod.create(cluster, plan, new_meta)
        elif (meta.get("migration") or {}).get("stage") in ("rolled_back", "swapped", "finished"):
            raise MigrationError(
                f"index {plan.index} holds an earlier migration ({meta['migration']['stage']}); delete "
                f"it or name another with --new-index",
                "create",
            )
        elif (meta.get("migration") or {}).get("source") != src.name:
            raise MigrationError(
                f"index {plan.index} exists and is not a migration of {src.name}; name another with "
                f"--new-index (or delete it)",
                "create",
            )
        elif log:
            log(f"continuing the migration into {plan.index}")
    report.failed_step = "fill"
    with report.step("fill"):
        state = (provenance.read_meta(cluster, plan.index) or {}).get("migration", {})
        cutoff = state.get("cutoff")
        if cutoff is None:
            cutoff = changes.checkpoints(cluster, src.name)
            changes.refresh(cluster, src.name)  # every write at or below the cutoff is visible to the copy
            provenance.update_state(cluster, plan.index, cutoff=cutoff)
        task_id, resumed = fill.start_or_resume(
            cluster, src.name, plan.index, None, opts.slices, opts.requests_per_second, regenerated
        )
        if log:
            log(f"{'continuing' if resumed else 'started'} reindex task {task_id}: {src.name} -> {plan.index}")
        report.reindex = {**fill.wait(cluster, task_id, opts.timeout, log), "resumed": resumed}
    report.failed_step = "carry_over"
    with report.step("carry_over"):
        cutoff, rounds = _catch_up(cluster, src.name, plan.index, cutoff, opts.catchup_rounds, True, regenerated)
        report.carried_over = {"rounds_before_block": rounds}
    report.failed_step = "verify"
    with report.step("verify"):
        fields = verify.vector_fields(next(iter(b for _, b in plan.ingest_copies.values()), None), plan.mappings)
        if not fields:
            raise MigrationError(f"{plan.index} has no field a model writes to verify", "verify")
        report.verification["vectors"] = verify.check_vectors(
            cluster, plan.index, plan.document_model, fields, opts.sample_size
        )
        report.verification["queries"] = verify.check_queries(
            cluster, plan.index, plan.query_model, fields[0], changes.count(cluster, plan.index), opts.query_samples
        )
        failed = [k for k, v in report.verification.items() if not v.get("passed")]
        if failed:
            raise MigrationError(
                f"verification of {plan.index} failed ({', '.join(failed)}: "
                f"{_why(report.verification, failed[0])}); the alias stays on {src.name}",
                "verify",
                details=report.verification,
            )
    with report.step("carry_over_after_verify"):  # what was written while verification ran: not under the block
        cutoff, rounds = _catch_up(cluster, src.name, plan.index, cutoff, opts.catchup_rounds, False, regenerated)
        report.carried_over["rounds_after_verify"] = rounds
    report.failed_step = "swap"
    with report.step("blocked"):
        _blocked_swap(cluster, src, plan, cutoff, report, regenerated)
    report.failed_step = None


def _catch_up(
    cluster: Cluster, source: str, dest: str, cutoff: dict, max_rounds: int, full_diff_first: bool, exclude: list[str]
) -> tuple[dict, list[dict]]:
    """Carry-over rounds while writes still flow, until a round finds fewer than QUIET_ROUND changes: what is left
    for the write block is then what arrived during one short round. Returns the new cutoff and the rounds."""
    rounds: list[dict] = []
    for i in range(max_rounds):
        next_cut = changes.checkpoints(cluster, source)
        changes.refresh(cluster, source)
        rounds.append(changes.carry_over(cluster, source, dest, cutoff, None, full_diff_first and i == 0, exclude))
        cutoff = next_cut
        provenance.update_state(cluster, dest, cutoff=cutoff)
        if rounds[-1]["changed"] < QUIET_ROUND:
            break
    return cutoff, rounds


def _why(verification: dict, key: str) -> str:
    v = verification[key]
    if key == "vectors":
        if v.get("reason") or not v.get("texts"):
            return v.get("reason", "")
        diff, tol = v.get("max_abs_diff", 0), v.get("tolerance")
        out = f"{v.get('identical_token_sets')}/{v.get('texts')} identical token sets"
        return out + (f", max |d| {diff:.3g} > {tol}" if tol is not None and diff > tol else "")
    bad = [c for c in v.get("queries", []) if not c["passed"]]
    return f"{len(bad)} of {len(v.get('queries', []))} queries ranked otherwise than the local top 10"


def _settle(cluster: Cluster, index: str) -> dict[str, int]:
    """After the block: wait until every write the primaries started is processed, so the refresh that follows sees
    them all; returns the per-shard max seq_no."""
    deadline = time.monotonic() + BLOCK_SETTLE_SECONDS
    while True:
        res = cluster.call(
            f"GET /{index}/_stats", cluster.client.indices.stats, index=index, metric="docs", params={"level": "shards"}
        )["indices"][index]["shards"]
        seq = {s: next(c["seq_no"] for c in copies if c["routing"]["primary"]) for s, copies in res.items()}
        if all(v["max_seq_no"] == v["local_checkpoint"] for v in seq.values()) or time.monotonic() > deadline:
            return {s: v["max_seq_no"] for s, v in seq.items()}
        time.sleep(0.05)


def _blocked_swap(cluster: Cluster, src, plan, cutoff: dict, report: MigrationReport, exclude: list[str]) -> None:
    t0 = time.perf_counter()
    swap.set_write_block(cluster, src.name, True)
    try:
        seen = _settle(cluster, src.name)
        rounds = []
        while True:
            changes.refresh(cluster, src.name)
            rounds.append(changes.carry_over(cluster, src.name, plan.index, cutoff, None, False, exclude))
            cutoff = {s: max(cutoff.get(s, -1), v) for s, v in seen.items()}
            again = _settle(cluster, src.name)
            if again == seen:
                break
            seen = again
        report.carried_over["under_block"] = rounds
        old_count, new_count = changes.count(cluster, src.name), changes.count(cluster, plan.index)
        report.verification["counts"] = {"old": old_count, "new": new_count, "passed": old_count == new_count}
        if old_count != new_count:
            raise MigrationError(
                f"{plan.index} holds {new_count} documents, {src.name} {old_count}; the alias stays on {src.name}",
                "verify",
                details=report.verification["counts"],
            )
        provenance.update_state(
            cluster,
            plan.index,
            swap_cutoff=changes.checkpoints(cluster, plan.index),
            swapped_at=provenance.now(),
            stage="swapped",
        )
        t_swap = time.perf_counter()
        swap.move_alias(cluster, src.alias, src.name, plan.index, src.alias_definition)
        report.steps["swap"] = round(time.perf_counter() - t_swap, 3)
    except BaseException:
        swap.set_write_block(cluster, src.name, False)
        raise
    report.seconds_blocked = round(time.perf_counter() - t0, 3)
    report.swapped, report.alias_on = True, plan.index


def _migrated(cluster: Cluster, alias: str, step: str) -> tuple[str, dict]:
    current = swap.alias_target(cluster, alias)
    if len(current) != 1:
        raise MigrationError(f"alias {alias} points at {len(current) or 'no'} indices; {step} needs one", step)
    state = (provenance.read_meta(cluster, current[0]) or {}).get("migration") or {}
    if state.get("stage") != "swapped" or not state.get("source"):
        raise MigrationError(
            f"{current[0]} behind {alias} is not a swapped migration (no sparsepack migration state); "
            f"nothing to {step}",
            step,
            alias_on=current[0],
        )
    return current[0], state


def rollback(cluster: Cluster, alias: str, force: bool = False) -> MigrationReport:
    """Alias back to the old index in one call, its block lifted; what was written to the new index since the swap is
    carried back through the old index's own pipelines, or (``force``) given up, counted."""
    new, state = _migrated(cluster, alias, "roll back")
    old = state["source"]
    report = MigrationReport(alias, old_index=old, new_index=new, alias_on=new)
    if provenance.read_meta(cluster, old) is None:
        raise MigrationError(
            f"{old} no longer exists (the migration was finished); there is nothing to roll back to",
            "rollback",
            alias_on=new,
        )
    t0 = time.perf_counter()
    swap.set_write_block(cluster, new, True)
    try:
        _settle(cluster, new)
        changes.refresh(cluster, new)
        cutoff = state.get("swap_cutoff") or {}
        changed = changes.changed_since(cluster, new, cutoff)
        deleted = max(0, changes.count(cluster, old) - changes.count(cluster, new))
        pending = len(changed) + deleted
        undeployed = [
            m
            for m in state.get("replaced_models", [])
            if (models.get_model(cluster, m) or {}).get("model_state") not in models.DEPLOYED
        ]
        if pending and undeployed and not force:
            raise MigrationError(
                f"{pending} document(s) written to {new} since the swap cannot be carried back: "
                f"{', '.join(undeployed)} (the old index's model) is not deployed; deploy it, or roll "
                f"back anyway and lose them",
                "rollback",
                alias_on=new,
                details={"would_lose": pending},
            )
        swap.set_write_block(cluster, old, False)
        if pending and not undeployed:
            serving = source_mod.resolve(cluster, alias)  # the new index, still behind the alias
            pipelines = references.ingest_pipelines(cluster)
            bodies = [pipelines[n] for n in serving.ingest_pipelines.values() if n in pipelines]
            exclude = target_mod.regenerated_fields(serving.mappings, bodies)
            report.carried_over = changes.carry_over(cluster, new, old, cutoff, None, False, exclude)
        else:
            report.carried_over = {"lost": pending if undeployed else 0}
        swap.move_alias(cluster, alias, new, old, {})
    except BaseException:
        swap.set_write_block(cluster, new, False)
        raise
    provenance.update_state(cluster, new, stage="rolled_back", rolled_back_at=provenance.now())
    report.seconds_blocked = round(time.perf_counter() - t0, 3)
    report.swapped, report.alias_on, report.passed = True, old, True
    return report


def finish(cluster: Cluster, alias: str) -> MigrationReport:
    """Delete the old index and the pipelines only it used."""
    new, state = _migrated(cluster, alias, "finish")
    old = state["source"]
    report = MigrationReport(alias, old_index=old, new_index=new, alias_on=new)
    cluster.call(f"DELETE /{old}", cluster.client.indices.delete, index=old, ok_404=True)
    still = references.index_pipeline_settings(cluster)
    in_use = {name for settings in still.values() for name in settings.values()}
    ingest = references.ingest_pipelines(cluster)
    called = {c for body in ingest.values() for c in references.called_pipelines(body)}
    deleted = []
    for setting, name in (state.get("source_pipelines") or {}).items():
        if name in in_use or name in called:
            continue
        if setting == "index.search.default_pipeline":
            cluster.call(
                f"DELETE /_search/pipeline/{name}", cluster.client.search_pipeline.delete, id=name, ok_404=True
            )
        else:
            cluster.call(
                f"DELETE /_ingest/pipeline/{name}", cluster.client.ingest.delete_pipeline, id=name, ok_404=True
            )
        deleted.append(name)
    provenance.update_state(cluster, new, stage="finished", finished_at=provenance.now())
    report.pipelines = {"deleted": deleted}
    report.passed = True
    return report
