"""One re-runnable release with one JSON report. STEPS is the safety contract: nothing is created before the cluster
passed preflight and the upgrade plan, nothing serves before the smoke test, and the previous versions go last, once
the new one is proven, so a failure anywhere leaves them serving."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..errors import SparsepackError
from ..registry import models
from ..registry.connection import ConnectionOptions
from . import migration, steps
from .context import ReleaseContext
from .options import ReleaseOptions
from .report import Report


def _always(opts: ReleaseOptions) -> bool:
    return True


@dataclass(frozen=True)
class Step:
    name: str
    run: Callable[[ReleaseContext], None]
    enabled: Callable[[ReleaseOptions], bool] = _always
    # Past the proof: the new version passed every check and serves; a failure from here on keeps it.
    after_proof: bool = False


STEPS: tuple[Step, ...] = (
    Step("check_target", steps.check_target),
    Step("package", steps.package_target),
    Step("verify", steps.verify),
    Step("connect", steps.connect_cluster),
    Step("preflight", steps.check_cluster),
    Step("lease", steps.take_lease),
    Step("upgrade_plan", steps.plan_upgrade, ReleaseOptions.plans_upgrade),
    Step("register", steps.register),
    Step("deploy", steps.deploy),
    Step("smoke", steps.smoke_test, lambda opts: opts.smoke),
    Step("switch_pipelines", steps.switch_pipelines, lambda opts: bool(opts.switch_pipelines)),
    # The new version serves from the switch on: a failed migration keeps it, its alias still on the old index.
    Step("migrate", migration.migrate_aliases, lambda opts: bool(opts.migrate_aliases), after_proof=True),
    Step("clear_previous", steps.clear_previous, lambda opts: opts.clear_previous, after_proof=True),
)


def release(
    target: str, conn: ConnectionOptions, opts: ReleaseOptions, package_dir: str | None = None, **package_kwargs
) -> dict:
    """Package (given a model), check, register, deploy, smoke-test, switch and clear, as ``opts`` asks; the report."""
    ctx = ReleaseContext(target, conn, opts, Report(target, conn), package_dir, package_kwargs)
    run(ctx)
    return ctx.report.as_dict()


def run(ctx: ReleaseContext, plan: tuple[Step, ...] = STEPS) -> None:
    """The enabled steps in order; the first failure stops the run and undoes what it created (see roll_back)."""
    try:
        for step in plan:
            ctx.proven = ctx.proven or step.after_proof  # reaching the point is the proof, whether the step runs or not
            if step.enabled(ctx.opts):
                step.run(ctx)
        ctx.report.mark_passed()
    except (SparsepackError, KeyboardInterrupt) as exc:
        # exit codes: 2 bad input, 3 parity, 4 cluster, 130 interrupted
        ctx.report.record_failure(
            str(exc), getattr(exc, "exit_code", 130), outside_steps="setup", parameter=getattr(exc, "parameter", None)
        )
        roll_back(ctx)
    finally:
        if ctx.coordinating:
            ctx.coord.close()  # after any rollback: waiting runs then redo what this run could not finish


def roll_back(ctx: ReleaseContext) -> None:
    """A proven new version stays; otherwise what this run created goes, unless asked to keep it or another live run
    uses the group it created."""
    created, report = ctx.created, ctx.report
    if ctx.proven:
        report.record(
            "kept",
            {
                "model_ids": ctx.model_ids,
                "why": f"the new version passed every check and is deployed; only {report.failed_step or 'a later step'} "
                "failed after it, and the previous versions were left as they were",
            },
        )
    elif ctx.connected and not ctx.opts.keep_on_failure and (created.model_ids or created.group_id or created.deployed):
        if created.group_id and ctx.coordinating and ctx.coord.group_in_use(created.group_id):
            report.record("kept_group_in_use_by_other_runs", created.group_id)
            created.group_id = None
        left = models.rollback(ctx.cluster, created)
        report.record(
            "rollback", {"removed_models": created.model_ids, "removed_group": created.group_id, "left": left}
        )
    elif created.model_ids:
        report.record("kept_on_failure", created.model_ids)
