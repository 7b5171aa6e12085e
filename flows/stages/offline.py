"""Offline stage: validate the held-out logged data, then score champion and candidate on the same users.

The data comes through the OfflineData port (stagegate.ports): the hold-out and training log as
impressions tables (the workspace's Parquet, or your own: docs/bring-your-own.md) and the catalogue.
"""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.context import PromotionContext, runtime
from flows.gating import StageOutcome
from flows.interrupts import surface_interrupts
from flows.stages import bookkeeping
from stagegate.decision import Decision
from stagegate.evidence import CANDIDATE, Evidence
from stagegate.policy.load import resolve_relative


@flow(name="offline", log_prints=True)
@surface_interrupts
def offline_stage(ctx: PromotionContext) -> StageOutcome:
    from stagegate.evaluation.expectations import validate_holdout
    from stagegate.evaluation.logs import batch_from_table
    from stagegate.evaluation.offline import evaluate_offline, paired_offline_evidence

    rt = runtime()
    config = ctx.policy.stages.offline
    tracker, run_id = bookkeeping.begin(ctx, "offline")
    data = rt.offline_data
    catalogue = data.catalogue()
    holdout = rt.holdout()  # data.holdout() in serving-time groups, shared with the simulation stage
    train = batch_from_table(data.training_log(), catalogue)

    if config.expectations:
        suite = resolve_relative(ctx.policy_path, config.expectations)
        report = validate_holdout(data.holdout(), holdout, suite)
        tracker.log_json(run_id, report.to_dict(), "expectations.json")
        if not report.success:
            reason = f"evaluation data failed its expectation suite {config.expectations}: {report.summary()}"
            get_run_logger().error(reason)
            return bookkeeping.end(ctx, "offline", tracker, run_id, Decision.ROLLBACK, reason)

    catalog = catalogue.to_pandas()
    kwargs = {"k": config.k, "label": config.label, "train_log": train}
    candidate = evaluate_offline(rt.holdout_ranker(ctx.model, ctx.version), holdout, catalog, **kwargs)
    if ctx.champion_version is None:
        evidence = Evidence(
            stage="offline",
            arms={CANDIDATE: candidate.to_arm_sample()},
            scalars={CANDIDATE: dict(candidate.scalars)},
        )
    else:
        champion = evaluate_offline(
            rt.holdout_ranker(ctx.model, ctx.champion_version), holdout, catalog, **kwargs
        )
        evidence = paired_offline_evidence(champion, candidate)
        tracker.log_metrics(run_id, {f"champion.{m}": float(v.mean()) for m, v in champion.metrics.items()})
    tracker.log_metrics(run_id, {f"candidate.{m}": float(v.mean()) for m, v in candidate.metrics.items()})

    return bookkeeping.judge_once(ctx, "offline", tracker, run_id, evidence)
