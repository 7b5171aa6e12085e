"""Simulation stage: what the candidate would have earned on the logged hold-out traffic.

The logging champion served with a stochastic (Plackett-Luce) policy, so every logged slot has a
propensity and off-policy estimators can replay any deterministic ranker's slates against it. Candidate
and champion are estimated the same way on the same requests, so the evidence is paired user by user.
An estimate without enough support in the log is withheld (NaN), which the gates report as ERROR.
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
    from stagegate.evaluation.ope import estimate_all, logged_value, target_slates

    rt = runtime()
    config = ctx.policy.stages.simulation
    tracker, run_id = bookkeeping.begin(ctx, "simulation")
    holdout = rt.holdout()
    ranker = rt.ranker(ctx.model, ctx.version)
    catalog = rt.world.catalog_public().sort_values("item_id")
    price = catalog["price"].to_numpy(float)  # splits a request's revenue over its purchased slots
    champion_ranker = rt.ranker(ctx.model, ctx.champion_version) if ctx.champion_version else None
    candidate, champion = {}, {}
    options = {"estimators": (config.estimator,), "per": "user", "clip": config.clip, "price": price}
    # Rank the hold-out once per model; every estimator and reward reuses the slates.
    candidate_slates = target_slates(ranker, holdout)
    champion_slates = target_slates(champion_ranker, holdout) if champion_ranker is not None else None
    for reward in REWARDS:
        candidate[reward] = estimate_all(candidate_slates, holdout, reward, **options)[config.estimator]
        logger = logged_value(holdout, reward, price=price)
        record = {"candidate": candidate[reward].to_dict(), "logger": logger.to_dict()}
        if champion_ranker is not None:
            champion[reward] = estimate_all(champion_slates, holdout, reward, **options)[config.estimator]
            record["champion"] = champion[reward].to_dict()
        tracker.log_json(run_id, record, f"ope_{reward}.json")
        tracker.log_metrics(
            run_id, {f"{arm}.{REWARDS[reward]}": rec["estimate"] for arm, rec in record.items()}
        )
    users = candidate["revenue"].user_ids
    arms = {CANDIDATE: _arm(candidate, users)}
    if champion:
        arms[CHAMPION] = _arm(champion, users)
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
