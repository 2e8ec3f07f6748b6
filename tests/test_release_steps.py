"""The release order as data, the runner's failure handling, and typed preflight blockers: no cluster needed."""

from __future__ import annotations

import re

import pytest

from sparsepack.errors import ClusterError, SparsepackError
from sparsepack.registry import artifact_url, preflight
from sparsepack.registry.connection import ConnectionOptions
from sparsepack.registry.preflight import Blocker, Preflight
from sparsepack.rollout import run as release_run
from sparsepack.rollout.context import ReleaseContext
from sparsepack.rollout.options import ReleaseOptions
from sparsepack.rollout.report import Report
from sparsepack.rollout.run import STEPS, Step


def names() -> list[str]:
    return [step.name for step in STEPS]


def test_steps_order_is_the_safety_contract():
    order = names()
    assert len(order) == len(set(order))
    for earlier, later in [
        ("package", "verify"),
        ("verify", "preflight"),
        ("preflight", "lease"),
        ("lease", "register"),
        ("upgrade_plan", "register"),
        ("register", "deploy"),
        ("deploy", "smoke"),
        ("smoke", "switch_pipelines"),
        ("switch_pipelines", "migrate"),
        ("migrate", "clear_previous"),
    ]:
        assert order.index(earlier) < order.index(later), (earlier, later, order)
    assert order[-1] == "clear_previous"
    # Only what comes after the switch may keep the new version on failure: before it, a failure rolls back.
    proven_from = next(i for i, step in enumerate(STEPS) if step.after_proof)
    assert proven_from > order.index("switch_pipelines")
    assert all(step.after_proof for step in STEPS[proven_from:])


def test_optional_steps_follow_the_options():
    by_name = {step.name: step for step in STEPS}
    plain = ReleaseOptions()
    assert not by_name["upgrade_plan"].enabled(plain) and not by_name["switch_pipelines"].enabled(plain)
    assert not by_name["clear_previous"].enabled(plain) and by_name["smoke"].enabled(plain)
    assert not by_name["migrate"].enabled(plain)
    moving = ReleaseOptions(migrate_aliases=["docs"])
    assert by_name["migrate"].enabled(moving) and by_name["upgrade_plan"].enabled(moving)
    assert by_name["migrate"].after_proof  # a failed migration keeps the proven new version (and the switch)
    upgrade = ReleaseOptions(clear_previous=True, switch_pipelines=["all"], smoke=False)
    assert by_name["upgrade_plan"].enabled(upgrade) and by_name["switch_pipelines"].enabled(upgrade)
    assert by_name["clear_previous"].enabled(upgrade) and not by_name["smoke"].enabled(upgrade)


def test_a_migrated_alias_old_index_keeps_its_model_for_rollback():
    from sparsepack.registry.references import Reference
    from sparsepack.rollout.migration import kept_for_rollback

    refs = [
        Reference("ingest_pipeline", "docs-ingest", "OLD"),
        Reference("index", "docs-v1", "OLD", "index.default_pipeline=docs-ingest"),
        Reference("index", "other", "OLDER", "index.default_pipeline=other-ingest"),
    ]
    kept = kept_for_rollback(refs, {"docs": "docs-v1"})
    assert list(kept) == ["OLD"]  # OLDER is used by an index no migration keeps: still a refusal
    assert "alias docs served from before its migration" in kept["OLD"][0] and "docs-v1" in kept["OLD"][0]
    assert kept_for_rollback(refs, {}) == {}


class FakeCoordinator:
    def __init__(self):
        self.closed = False

    def group_in_use(self, group_id: str) -> bool:
        return False

    def close(self) -> None:
        self.closed = True


def context(**opts) -> ReleaseContext:
    conn = ConnectionOptions.from_env(url="http://localhost:1")
    return ReleaseContext("pkg", conn, ReleaseOptions(**opts), Report("pkg", conn))


def register_fake(ctx: ReleaseContext) -> None:
    ctx.cluster, ctx.coord = object(), FakeCoordinator()
    with ctx.report.step("register") as entry:
        ctx.created.group_id = "g1"
        ctx.created.model_ids.append("m1")
        ctx.model_ids["document"] = "m1"
        entry["model_group_id"] = "g1"


def failing_smoke(ctx: ReleaseContext) -> None:
    with ctx.report.step("smoke_predict") as entry:
        entry["query_vs_encode_query"] = {"passed": False}
        raise ClusterError("the cluster's document vectors differ from the package's")


@pytest.fixture
def rollbacks(monkeypatch):
    calls = []

    def fake_rollback(cluster, created):
        calls.append((cluster, list(created.model_ids), created.group_id))
        return []

    monkeypatch.setattr(release_run.models, "rollback", fake_rollback)
    return calls


def test_failing_step_stops_the_run_records_it_and_rolls_back(rollbacks):
    ran_after = []
    ctx = context()
    plan = (
        Step("register", register_fake),
        Step("smoke", failing_smoke),
        Step("switch_pipelines", lambda c: ran_after.append("switch")),
    )
    release_run.run(ctx, plan)
    report = ctx.report.as_dict()
    assert ran_after == []
    assert report["passed"] is False and report["failed_step"] == "smoke_predict"
    assert report["exit_code"] == 4 and "differ" in report["error"]
    assert report["steps"]["register"]["passed"] and not report["steps"]["smoke_predict"]["passed"]
    assert rollbacks == [(ctx.cluster, ["m1"], "g1")]
    assert report["rollback"] == {"removed_models": ["m1"], "removed_group": "g1", "left": []}
    assert ctx.coord.closed


def test_failure_after_the_proof_keeps_the_new_version(rollbacks):
    def failing_clear(ctx):
        with ctx.report.step("clear_previous"):
            raise ClusterError("a pipeline still uses the previous version")

    ctx = context(clear_previous=True)
    release_run.run(ctx, (Step("register", register_fake), Step("clear", failing_clear, after_proof=True)))
    report = ctx.report.as_dict()
    assert report["failed_step"] == "clear_previous" and not report["passed"]
    assert report["kept"]["model_ids"] == {"document": "m1"} and "rollback" not in report
    assert rollbacks == []


def test_failure_between_steps_is_setup_and_keep_on_failure_keeps(rollbacks):
    def bad_input(ctx):
        raise SparsepackError("not a package")

    ctx = context(keep_on_failure=True)
    release_run.run(ctx, (Step("register", register_fake), Step("check", bad_input)))
    report = ctx.report.as_dict()
    assert report["failed_step"] == "setup" and report["exit_code"] == 2
    assert report["kept_on_failure"] == ["m1"] and rollbacks == []


def test_a_passing_run_keeps_the_report_keys():
    ctx = context()
    release_run.run(ctx, (Step("register", register_fake),))
    report = ctx.report.as_dict()
    assert list(report)[:6] == ["sparsepack_version", "target", "connection", "steps", "passed", "failed_step"]
    assert report["passed"] is True and report["failed_step"] is None and "error" not in report


def test_report_entry_marked_failed_fails_the_step():
    report = Report("pkg", ConnectionOptions.from_env(url="http://localhost:1"))
    with pytest.raises(ClusterError, match="steps.smoke_retrieval"), report.step("smoke_retrieval") as entry:
        entry["passed"] = False
    assert report.as_dict()["failed_step"] == "smoke_retrieval"


def blocked(*blockers: Blocker) -> Preflight:
    return Preflight("3.6.0", "3.x", [], [], {}, list(blockers))


def test_fixable_blockers_carry_the_settings_that_fix_them():
    with pytest.raises(ValueError):
        Blocker("x", "fixable without settings", fixable=True)
    with pytest.raises(ValueError):
        Blocker("x", "settings without being fixable", settings={"a": 1})
    local = preflight.settings_fix("local_file_upload_disabled", "m1", allow_registering_model_via_local_file=True)
    urls = artifact_url.url_blockers({}, ["http://host:8000/pkg/doc.zip"], "http://host:8000/pkg")
    assert [b.code for b in urls] == ["url_registration_disabled"]
    regex = artifact_url.url_blockers(
        {
            preflight.ML + "allow_registering_model_via_url": "true",
            preflight.ML + "trusted_url_regex": "^https://elsewhere/",
        },
        ["http://host:8000/pkg/doc.zip"],
        "http://host:8000/pkg",
    )
    assert regex[0].settings == {"trusted_url_regex": artifact_url.narrow_regex("http://host:8000/pkg")}
    pf = blocked(local, *urls, *regex)
    assert pf.fixable and not pf.ok
    assert pf.fixes() == {
        "allow_registering_model_via_local_file": True,
        "allow_registering_model_via_url": True,
        "trusted_url_regex": artifact_url.narrow_regex("http://host:8000/pkg"),
    }
    assert pf.as_dict()["blockers"] == ["m1", urls[0].message, regex[0].message]


def test_settings_are_not_applied_while_a_blocker_no_setting_fixes_remains():
    local = preflight.settings_fix("local_file_upload_disabled", "m1", allow_registering_model_via_local_file=True)
    missing = Blocker("neural_search_missing", "neural-search (opensearch-neural-search) is not installed")
    assert not blocked(local, missing).fixable
    assert not blocked().fixable
    with pytest.raises(ClusterError, match=re.escape("preflight failed: m1 | neural-search")):
        preflight.require_ok(blocked(local, missing))
