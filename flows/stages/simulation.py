"""Simulation stage: what the candidate would have earned on the logged hold-out traffic.

The champion serves with a stochastic (Plackett-Luce) policy, so every logged slot has a propensity and
off-policy estimators can replay the candidate's deterministic slates against it. The baseline is the
champion's own logged (on-policy) value on the same users, so the evidence is paired user by user.
"""

from __future__ import annotations

from prefect import flow

from flows.context import PromotionContext, runtime
from flows.gating import StageOutcome, judge, stage_gates
from flows.stages import bookkeeping
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence

REWARDS = {"revenue": "revenue_per_user", "click": "clicks_per_user", "purchase": "purchases_per_user"}


def _arm(results: dict, users) -> ArmSample:
    return ArmSample(user_ids=users, metrics={REWARDS[r]: res.user_value for r, res in results.items()})


@flow(name="simulation")
def simulation_stage(ctx: PromotionContext) -> StageOutcome:
    from stagegate.evaluation.ope import estimate_all, logged_value

    rt = runtime()
    config = ctx.policy.stages.simulation
    tracker, run_id = bookkeeping.begin(ctx, "simulation")
    holdout = rt.holdout()
    ranker = rt.ranker(ctx.model, ctx.version)
    catalog = rt.world.catalog_public().sort_values("item_id")
    price = catalog["price"].to_numpy(float)  # splits a request's revenue over its purchased slots
    candidate, logged = {}, {}
    for reward in REWARDS:
        candidate[reward] = estimate_all(
            ranker, holdout, reward, estimators=(config.estimator,), per="user", clip=config.clip, price=price
        )[config.estimator]
        logged[reward] = logged_value(holdout, reward, per="user", price=price)
        tracker.log_json(
            run_id,
            {"candidate": candidate[reward].to_dict(), "champion_logged": logged[reward].to_dict()},
            f"ope_{reward}.json",
        )
        tracker.log_metrics(
            run_id,
            {
                f"candidate.{REWARDS[reward]}": candidate[reward].estimate,
                f"champion.{REWARDS[reward]}": logged[reward].estimate,
                f"candidate.{REWARDS[reward]}.ess": candidate[reward].ess,
            },
        )
    users = candidate["revenue"].user_ids
    arms = {CANDIDATE: _arm(candidate, users)}
    if ctx.champion_version is not None:
        arms[CHAMPION] = _arm(logged, users)
    evidence = Evidence(stage="simulation", arms=arms, paired=True)
    result = judge(
        ctx,
        "simulation",
        stage_gates(ctx, "simulation"),
        evidence,
        step=0,
        look=1,
        at_deadline=True,
        stage_run_id=run_id,
    )
    return bookkeeping.end(ctx, "simulation", tracker, run_id, result.decision, result.reason)
