"""Simulation stage: candidate and champion in a twin world fitted from logs, plus off-policy estimates.

1. A twin world is fitted from the training log and the public catalogue only
   (never the live world's hidden parameters). It replays the hold-out's request contexts for ``days``
   simulated days, once with the champion and once with the candidate, with common random numbers; stock
   depletes with the twin's own purchases (a feedback loop the logs alone cannot show). The per-user
   expected revenue, clicks and purchases are the paired evidence ``revenue_per_user``, ``clicks_per_user``,
   ``purchases_per_user``.
2. The logging champion served with a stochastic (Plackett–Luce) policy, so every logged slot has a
   propensity: each estimator of the policy (IPS, SNIPS, DR, RIPS) replays both rankers' slates on the
   hold-out and adds ``<metric>:<estimator>`` (e.g. ``revenue_per_user:dr``) for both arms, with its
   confidence interval and diagnostics (support, clipped weight mass, ESS, users, missing data) in the run's
   ``ope_<reward>.json``. An estimate the log cannot support is withheld: its per-user values are NaN, so
   any gate on it reports ERROR, never a confident number (the reasons are in ``diag_reasons``).

:func:`simulation_evidence` is the stage's logic without Prefect or MLflow (benchmarks call it directly).

The twin and its calibration are the simulator's: they come from the ``twin`` entry point of the
``stagegate.simulators`` group (simulator.stage.TWIN: ``fit``, ``load_record``, ``restrict_gates``), so
this module never imports the simulator package.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prefect import flow

from flows.context import PromotionContext, runtime
from flows.gating import StageOutcome
from flows.interrupts import surface_interrupts
from flows.stages import bookkeeping
from stagegate.evidence import CANDIDATE, CHAMPION, ArmSample, Evidence
from stagegate.logs import ServedBatch

REWARDS = {"revenue": "revenue_per_user", "click": "clicks_per_user", "purchase": "purchases_per_user"}


def _aligned(users: np.ndarray, ids: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``values`` (indexed by ``ids``) re-indexed to ``users``; NaN where a user has no value."""
    out = np.full(users.size, np.nan)
    if ids.size:
        pos = np.minimum(np.searchsorted(ids, users), ids.size - 1)
        hit = ids[pos] == users
        out[hit] = np.asarray(values, dtype=float)[pos[hit]]
    return out


def holdout_traffic(holdout: Any) -> Any:
    """The hold-out's request contexts (it may come in groups, one per serving snapshot)."""
    from stagegate.log_rows import concat

    return (holdout if isinstance(holdout, ServedBatch) else concat(list(holdout))).context


def twin_simulator() -> Any:
    """What the stage needs of the simulator (entry point ``stagegate.simulators``: ``twin``)."""
    from stagegate.extensions import SIMULATORS, load

    return load(SIMULATORS, "twin", needed_for="the simulation stage's twin world")


def twin_arm(twin: Any, ranker: Any, traffic: Any, config: Any) -> tuple[np.ndarray, dict, list]:
    """One arm in the twin as the stage runs it: ``config.seeds`` runs of ``config.days`` days; (user ids,
    per-user metrics averaged over the runs, the runs)."""
    runs = [twin.simulate(ranker, traffic, config.days, seed=s) for s in range(config.seeds)]
    return runs[0].user_ids, {m: np.mean([r.metrics[m] for r in runs], axis=0) for m in runs[0].metrics}, runs


def twin_effect(candidate: dict[str, np.ndarray], champion: dict[str, np.ndarray]) -> dict[str, float]:
    """The twin's relative effect per metric: candidate / champion − 1 of the per-user means (the totals
    the simulation gates compare)."""
    return {m: float(np.mean(candidate[m]) / np.mean(champion[m]) - 1.0) for m in champion}


def simulation_evidence(
    candidate: Any,
    champion: Any | None,
    train_log: Any,
    holdout: Any,
    catalog: Any,
    config: Any,
) -> tuple[Evidence, dict[str, Any]]:
    """The stage's evidence and its records (twin summary, OPE results), from rankers, logs and the public
    catalogue. ``config`` is a :class:`stagegate.policy.schema.SimulationStage`."""
    from stagegate.evaluation.ope import estimate_all, logged_value, target_slates

    catalog = catalog.sort_values("item_id")
    price = catalog["price"].to_numpy(float)  # splits a request's revenue over its purchased slots

    twin = twin_simulator().fit(train_log, catalog)
    traffic = holdout_traffic(holdout)
    arms_twin = {}
    for arm, ranker in ((CANDIDATE, candidate), (CHAMPION, champion)):
        if ranker is None:
            continue
        arms_twin[arm] = twin_arm(twin, ranker, traffic, config)
    users = arms_twin[CANDIDATE][0]
    metrics: dict[str, dict[str, np.ndarray]] = {arm: dict(v[1]) for arm, v in arms_twin.items()}
    records: dict[str, Any] = {
        "twin": {
            "info": twin.info,
            "days": config.days,
            "seeds": config.seeds,
            **{
                arm: {
                    **{m: float(np.mean(v)) for m, v in metrics[arm].items()},
                    "oos_slot_share": float(np.mean([r.oos_slot_share for r in runs])),
                }
                for arm, (_, _, runs) in arms_twin.items()
            },
        }
    }
    if CHAMPION in metrics:
        records["twin"]["effect"] = twin_effect(metrics[CANDIDATE], metrics[CHAMPION])

    estimators = list(dict.fromkeys([config.estimator, *config.estimators]))
    options = {"estimators": estimators, "per": "user", "clip": config.clip, "price": price}
    slates = {CANDIDATE: target_slates(candidate, holdout)}  # rank once per model, reuse per reward
    if champion is not None:
        slates[CHAMPION] = target_slates(champion, holdout)
    for reward, name in REWARDS.items():
        record: dict[str, Any] = {"logger": logged_value(holdout, reward, price=price).to_dict()}
        for arm, s in slates.items():
            results = estimate_all(s, holdout, reward, **options)
            record[arm] = {est: res.to_dict() for est, res in results.items()}
            for est, res in results.items():
                metrics[arm][f"{name}:{est}"] = _aligned(users, np.asarray(res.user_ids), res.user_value)
        records[f"ope_{reward}"] = record
    arms = {arm: ArmSample(user_ids=users, metrics=m) for arm, m in metrics.items()}
    return Evidence(stage="simulation", arms=arms, paired=True), records


def _scalar_metrics(records: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    for arm in (CANDIDATE, CHAMPION):
        for m, v in records["twin"].get(arm, {}).items():
            out[f"{arm}.{m}"] = float(v)
        for reward, name in REWARDS.items():
            for est, res in records[f"ope_{reward}"].get(arm, {}).items():
                out[f"{arm}.{name}.{est}"] = float(res["estimate"])
    return out


@flow(name="simulation")
@surface_interrupts
def simulation_stage(ctx: PromotionContext) -> StageOutcome:
    rt = runtime()
    config = ctx.policy.stages.simulation
    tracker, run_id = bookkeeping.begin(ctx, "simulation")
    champion = rt.ranker(ctx.model, ctx.champion_version) if ctx.champion_version else None
    evidence, records = simulation_evidence(
        rt.ranker(ctx.model, ctx.version),
        champion,
        rt.training_log(),
        rt.holdout(),
        rt.world.catalog_public(),
        config,
    )
    calibrated, records["calibration"] = calibrated_context(ctx)
    for name, record in records.items():
        tracker.log_json(run_id, record, f"{name}.json")
    tracker.log_metrics(run_id, {k: v for k, v in _scalar_metrics(records).items() if np.isfinite(v)})
    return bookkeeping.judge_once(calibrated, "simulation", tracker, run_id, evidence)


def calibrated_gates(config: Any, record: Any = "default") -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The simulation stage's gate entries as the stage runs them: a gate on a twin metric rolls back only
    where the twin's calibration supports that metric, else it holds
    (the twin simulator's ``restrict_gates``); and what was decided, for the stage's run. ``record``: a
    calibration record, None (no record), or "default" (the twin simulator's ``load_record``)."""
    twin = twin_simulator()
    data = twin.load_record() if isinstance(record, str) and record == "default" else record
    gates, notes = twin.restrict_gates(config.gates, data)
    return gates, {"record": None if data is None else data.get("path", "given"), "notes": notes}


def calibrated_context(ctx: PromotionContext) -> tuple[PromotionContext, dict[str, Any]]:
    """``ctx`` with its policy's simulation gates restricted to what the twin's calibration supports."""
    stages = ctx.policy.stages
    gates, info = calibrated_gates(stages.simulation)
    simulation = stages.simulation.model_copy(update={"gates": gates})
    policy = ctx.policy.model_copy(update={"stages": stages.model_copy(update={"simulation": simulation})})
    return ctx.model_copy(update={"policy": policy}), info
