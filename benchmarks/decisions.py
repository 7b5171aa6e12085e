"""Benchmark: promotion decisions of four strategies on a zoo of candidate recipes, against the ground truth.

For every recipe in ``--recipes`` (default recipes/zoo/), trained on the same logs as the champion:

1. ground truth: :func:`simulator.oracle.oracle` (the candidate at 100 % against the champion at 100 % in
   the live world, ``--seeds`` seeds, common random numbers) labels it promote / reject / neutral;
2. four strategies decide, each in its own fork of the live world from the same state:
   - offline-only: promote when the candidate's mean NDCG@10 (click labels) on the hold-out beats the
     champion's;
   - fixed A/B: 50/50 for ``--ab-days`` days, then Welch's t-test on revenue per user: promote when the
     95 % interval of the difference lies above 0;
   - threshold analysis (Argo Rollouts AnalysisRun / Flagger canary analysis): weights 10, 20, 30, 40, 50 %,
     one interval each (``--interval-hours``); at each interval the candidate's revenue per user must be at
     least 95 % of the champion's (a point threshold, failureLimit 0); promote after the last step;
   - stagegate: the gates of ``--policy`` (policies/default.yaml) evaluated with :func:`stagegate.decision.
     decide` stage by stage, without Prefect or MLflow: offline (paired per-user metrics; the Great
     Expectations suite is not re-run, the hold-out is the same for every candidate), simulation (the stage's
     own :func:`flows.stages.simulation.simulation_evidence`: twin world + OPE), shadow (mirrored live
     traffic), canary (the policy's steps and sequential gates after every batch; the policy's
     ``min_users`` are multiplied by ``--min-users-scale`` so that the benchmark world can reach them),
     approval before rollout assumed granted; a HOLD is answered by a simulated release manager
     (``--on-hold``, see :func:`judge`).
3. scoring: correct decisions (a neutral candidate is correct either way), harmful candidates (label
   reject) promoted to 100 %, good candidates (label promote) not promoted, user sessions served by harmful
   candidates (during the test, and over a ``--horizon-days`` horizon that includes 100 % after a wrong
   promotion), live sessions observed until the decision.

Usage: ``python benchmarks/decisions.py [--recipes DIR] [--size demo|small] [--seeds 5] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

STRATEGIES = ("offline-only", "fixed A/B 50/50", "threshold (Argo/Flagger)", "stagegate")
THRESHOLD_WEIGHTS = (0.10, 0.20, 0.30, 0.40, 0.50)
THRESHOLD_MIN_RATIO = 0.95


# ---------------------------------------------------------------------------------------------- helpers


def event_frame(batch: Any) -> Any:
    """The event-store rows of a served batch (the columns stagegate.events.metrics reads)."""
    import pandas as pd

    ctx = batch.context
    oos = (~ctx.in_stock[batch.items]).sum(axis=1)
    frame = pd.DataFrame(
        {
            "request_id": ctx.request_id.astype(np.int64),
            "user_id": ctx.user_id.astype(np.int64),
            "user_segment": ctx.user_segment.astype(int),
            "device": ctx.device.astype(int),
            "hour": ctx.hour.astype(int),
            "arm": batch.arm.astype(int),
            "latency_ms": batch.latency_ms.astype(float),
            "error": batch.error.astype(bool),
            "n_clicks": batch.clicks.sum(axis=1).astype(int),
            "n_purchases": batch.purchases.sum(axis=1).astype(int),
            "revenue": batch.revenue.astype(float),
            "n_out_of_stock": oos.astype(int),
            "session_id": batch.session_id.astype(np.int64),
        }
    )
    if batch.shadow_items is not None:
        frame["items"] = [json.dumps(r) for r in batch.items.tolist()]
        frame["shadow_items"] = [json.dumps(r) for r in batch.shadow_items.tolist()]
        frame["shadow_n_out_of_stock"] = (~ctx.in_stock[np.maximum(batch.shadow_items, 0)]).sum(axis=1)
        frame["shadow_latency_ms"] = np.asarray(batch.shadow_latency_ms, dtype=float)
    return frame


def candidate_sessions(frame: Any) -> int:
    return int(frame.loc[frame["arm"] == 1, "session_id"].nunique())


SIM_LOG: dict[int, dict[str, float]] = {}  # the simulation stage's twin and OPE effects, per candidate
HUMAN = {"on_hold": "approve-if-no-fail"}  # --on-hold: how the simulated release manager answers a HOLD
PRIMARY = "revenue_per_user"


def _manager_approves(verdicts: list, evidence: Any) -> bool:
    """The simulated release manager at a HOLD: never over a FAIL or an ERROR; on a traffic stage, only when
    the candidate's observed revenue per user is at least the champion's (the point estimate of the
    evidence report, since the statistics could not decide)."""
    from stagegate.evidence import CANDIDATE, CHAMPION
    from stagegate.verdict import Outcome

    if any(v.outcome in (Outcome.FAIL, Outcome.ERROR) for v, _ in verdicts):
        return False
    if HUMAN["on_hold"] == "approve-if-no-fail" or evidence.stage != "canary":
        return True
    arms = evidence.arms
    if CANDIDATE not in arms or CHAMPION not in arms:
        return False
    cand = np.nanmean(arms[CANDIDATE].metrics[PRIMARY])
    champ = np.nanmean(arms[CHAMPION].metrics[PRIMARY])
    return bool(cand >= champ)


def judge(
    gates: Any, evidence: Any, *, at_deadline: bool, enough_samples: bool = True, last_step: bool = True
) -> Any:
    """One look, as flows.gating.judge does it (without persistence). A HOLD goes to the simulated release
    manager (``--on-hold``): ``approve-if-no-fail`` (default) approves whenever no gate failed or errored
    (only inconclusive evidence or a missing sample size); ``manager`` also requires, on the canary, that the
    candidate's observed revenue per user is not below the champion's; ``reject`` never approves (the strict
    fail-closed reading)."""
    from stagegate.decision import Decision, LookDecision
    from stagegate.policy.gates import judge_look

    res = judge_look(
        gates, evidence, at_deadline=at_deadline, enough_samples=enough_samples, last_step=last_step
    )
    verdicts = [(j.verdict, j.action) for j in res.judged]
    if (
        res.decision is Decision.HOLD
        and HUMAN["on_hold"] != "reject"
        and _manager_approves(verdicts, evidence)
    ):
        return LookDecision(
            Decision.ADVANCE, f"held, approved by the release manager: {res.reason}", res.judged
        )
    return res


def _result(promote: bool, days: float, sessions: int, samples: int, note: str) -> dict[str, Any]:
    return {"promote": promote, "days": days, "exposed_sessions": sessions, "samples": samples, "note": note}


# ---------------------------------------------------------------------------------------------- strategies


def offline_only(cand_off: Any, champ_off: Any) -> dict[str, Any]:
    c, b = float(np.mean(cand_off.metrics["ndcg@10"])), float(np.mean(champ_off.metrics["ndcg@10"]))
    return _result(c > b, 0.0, 0, 0, f"ndcg@10 {c:.4f} vs {b:.4f}")


def fixed_ab(world: Any, champion: Any, candidate: Any, days: float, seed: int) -> dict[str, Any]:
    from scipy import stats

    from stagegate.events.metrics import arm_samples

    fork = world.fork(truth_seed=seed)
    batch = fork.serve(champion, candidate, candidate_share=0.5, hours=days * 24.0)
    frame = event_frame(batch)
    arms, _ = arm_samples(frame)
    a = arms["candidate"].metrics["revenue_per_user"]
    b = arms["champion"].metrics["revenue_per_user"]
    test = stats.ttest_ind(a, b, equal_var=False)
    lo = test.confidence_interval(0.95).low
    return _result(
        bool(lo > 0),
        days,
        candidate_sessions(frame),
        int(frame["session_id"].nunique()),
        f"Δrevenue/user {a.mean() - b.mean():+.3f} (CI low {lo:+.3f}, p={test.pvalue:.3f})",
    )


def threshold_analysis(world: Any, champion: Any, candidate: Any, hours: float, seed: int) -> dict[str, Any]:
    fork = world.fork(truth_seed=seed)
    exposed = samples = 0
    for step, weight in enumerate(THRESHOLD_WEIGHTS, start=1):
        frame = event_frame(fork.serve(champion, candidate, candidate_share=weight, hours=hours))
        exposed += candidate_sessions(frame)
        samples += int(frame["session_id"].nunique())
        per_user = frame.groupby(["arm", "user_id"])["revenue"].sum().groupby(level=0).mean()
        ratio = per_user.get(1, np.nan) / per_user.get(0, np.nan)
        if not ratio >= THRESHOLD_MIN_RATIO:  # NaN fails too (Argo: an unmeasurable metric is an error)
            return _result(False, step * hours / 24, exposed, samples, f"step {step}: ratio {ratio:.3f}")
    return _result(True, len(THRESHOLD_WEIGHTS) * hours / 24, exposed, samples, "all steps passed")


def stagegate_pipeline(
    policy: Any,
    zoo: Any,
    candidate: Any,
    offline: tuple[Any, Any],
    seed: int,
    min_users_scale: float,
) -> dict[str, Any]:
    from flows.stages.simulation import calibrated_gates, simulation_evidence
    from stagegate.decision import Decision
    from stagegate.evaluation.offline import paired_offline_evidence
    from stagegate.policy.gates import configure_stage

    stages = policy.stages

    def gates(stage: Any) -> Any:
        return configure_stage(stage)  # the stage's decision rule and levels, as the flow runs them

    def rejected(stage: str, res: Any, days: float, exposed: int, samples: int) -> dict[str, Any]:
        return _result(False, days, exposed, samples, f"{stage}: {res.decision.value}: {res.reason}"[:160])

    if stages.offline is not None:
        champ_off, cand_off = offline
        res = judge(gates(stages.offline), paired_offline_evidence(champ_off, cand_off), at_deadline=True)
        if res.decision is not Decision.ADVANCE:
            return rejected("offline", res, 0.0, 0, 0)
    if stages.simulation is not None:
        evidence, records = simulation_evidence(
            candidate, zoo.champion, zoo.train_logs, zoo.test_logs, zoo.catalog, stages.simulation
        )
        # as the flow runs the stage: twin gates act only where the twin's calibration supports the metric
        calibrated = stages.simulation.model_copy(update={"gates": calibrated_gates(stages.simulation)[0]})
        res = judge(gates(calibrated), evidence, at_deadline=True)
        twin = records["twin"]
        dr = records["ope_revenue"]
        SIM_LOG[id(candidate)] = {
            "twin_revenue_effect": twin["candidate"]["revenue_per_user"]
            / twin["champion"]["revenue_per_user"]
            - 1,
            # raw: the estimate before the support diagnostics withhold it (NaN when withheld)
            "dr_revenue_effect": dr["candidate"]["dr"]["raw_estimate"] / dr["champion"]["dr"]["raw_estimate"]
            - 1,
            "snips_revenue_effect": dr["candidate"]["snips"]["raw_estimate"]
            / dr["champion"]["snips"]["raw_estimate"]
            - 1,
        }
        if res.decision is not Decision.ADVANCE:
            return rejected("simulation", res, 0.0, 0, 0)
    from flows.stages.canary import canary_plan
    from flows.stages.shadow import shadow_plan

    fork = ForkWorld(zoo.world.fork(truth_seed=seed), zoo.champion, candidate)
    if stages.shadow is not None:
        plan = shadow_plan("benchmark", stages.shadow)
        res = live_stage(fork, plan, gates(stages.shadow), split="shadow")
        if res.decision is not Decision.ADVANCE:
            return rejected("shadow", res, fork.hours / 24, 0, fork.samples)
    if stages.canary is not None:
        plan = canary_plan("benchmark", stages.canary, min_users_scale)
        res = live_stage(fork, plan, gates(stages.canary), split="canary")
        if res.decision is not Decision.ADVANCE:
            return _result(False, fork.hours / 24, fork.exposed, fork.samples, f"canary {res.reason}"[:160])
    return _result(True, fork.hours / 24, fork.exposed, fork.samples, "promoted (approval assumed)")


class ForkWorld:
    """A fork of the live world behind the Clock and MetricSource ports, as the flow sees the simulator.

    Waiting for a look serves the fork up to the look's due time under the stage's split (mirrored for
    shadow, the step's weight for the canary) and keeps the requests per (stage, step); measuring
    aggregates a window of them per user exactly as the ``events`` metric source does.
    """

    def __init__(self, world: Any, champion: Any, candidate: Any) -> None:
        self.world, self.champion, self.candidate = world, champion, candidate
        self.frames: dict[tuple[str, int], list[Any]] = {}
        self.weight, self.shadow = 0.0, False
        self.hours, self.exposed, self.samples = 0.0, 0, 0

    def now(self) -> Any:
        from datetime import timedelta

        from stagegate.ports import SIM_EPOCH

        return SIM_EPOCH + timedelta(days=float(self.world.now))

    def wait(self, look: Any) -> Any:
        from datetime import timedelta

        from stagegate.ports import Wait

        hours = (look.due - self.now()) / timedelta(hours=1)
        if hours > 1e-9:
            if self.shadow:
                batch = self.world.serve(self.champion, shadow=self.candidate, hours=hours)
            else:
                batch = self.world.serve(
                    self.champion, self.candidate, candidate_share=self.weight, hours=hours
                )
            frame = event_frame(batch).assign(t=batch.context.t.astype(float))
            self.frames.setdefault((look.stage, look.step), []).append(frame)
            self.hours += hours
            self.samples += int(frame["session_id"].nunique())
            if not self.shadow:
                self.exposed += candidate_sessions(frame)
        return Wait(ready=True, due=look.due)

    def load_events(self, promotion_id: str, stage: str, step: int | None = None) -> Any:
        """The event store's query, on the requests this fork served (for the ``events`` metric source)."""
        import pandas as pd

        frames = self.frames.get((stage, int(step or 0)), [])
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def live_stage(fork: ForkWorld, plan: Any, stage_gates: Any, split: str) -> Any:
    """One live stage through the flow's look loop (flows.stages.runner), on the fork: the fork is the
    clock, the ``events`` metric source reads what it served, a HOLD goes to the simulated release manager
    and, approved, resumes where it held, as the flow does."""
    from flows.stages.runner import Parts, run_looks
    from stagegate.adapters.metrics import EventStoreMetricSource
    from stagegate.decision import Decision
    from stagegate.policy.gates import judge_look

    source = EventStoreMetricSource(fork)

    def enter_step(step: Any, start: Any) -> None:
        fork.weight, fork.shadow = step.weight, split == "shadow"

    def judge(*, step: int, look: int, evidence: Any, **kwargs: Any) -> Any:
        return judge_look(stage_gates, evidence, **kwargs)

    parts = Parts(clock=fork, measure=source.measure, judge=judge, enter_step=enter_step)
    resume = None
    while True:
        res = run_looks(plan, parts, resume)
        if res.decision is not Decision.HOLD or HUMAN["on_hold"] == "reject":
            return res
        verdicts = [(j.verdict, j.action) for j in res.last.judged] if res.last else []
        evidence = res.resume.history[-1] if res.resume and res.resume.history else None
        if evidence is None or not _manager_approves(verdicts, evidence):
            return res
        resume = res.resume


# ---------------------------------------------------------------------------------------------- scoring


def score(rows: list[dict[str, Any]], sessions_per_day: float, horizon: float) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for strategy in STRATEGIES:
        correct = harmful_promoted = good_rejected = 0
        exposure_test = exposure_horizon = 0.0
        samples: list[int] = []
        days: list[float] = []
        for row in rows:
            res, truth = row["strategies"][strategy], row["label"]
            promote = res["promote"]
            correct += truth == "neutral" or (truth == "promote") == promote
            harmful_promoted += truth == "reject" and promote
            good_rejected += truth == "promote" and not promote
            if truth == "reject":
                exposure_test += res["exposed_sessions"]
                after = sessions_per_day * max(horizon - res["days"], 0.0) if promote else 0.0
                exposure_horizon += res["exposed_sessions"] + after
            samples.append(res["samples"])
            days.append(res["days"])
        n_good = sum(r["label"] == "promote" for r in rows)
        out[strategy] = {
            "correct": correct,
            "n": len(rows),
            "harmful_promoted": harmful_promoted,
            "n_harmful": sum(r["label"] == "reject" for r in rows),
            "good_rejected": good_rejected,
            "n_good": n_good,
            "good_promoted_share": (n_good - good_rejected) / n_good if n_good else float("nan"),
            "harmful_sessions_in_tests": exposure_test,
            "harmful_sessions_horizon": exposure_horizon,
            "median_live_sessions_to_decision": float(np.median(samples)),
            "median_days_to_decision": float(np.median(days)),
        }
    return out


def table(summary: dict[str, dict[str, Any]], horizon: float) -> str:
    head = (
        "| strategy | correct | harmful → 100% | good rejected | harmful sessions (tests) | "
        f"harmful sessions ({horizon:g}-day horizon) | live sessions to decision (median) | days (median) |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for name, s in summary.items():
        lines.append(
            f"| {name} | {s['correct']}/{s['n']} | {s['harmful_promoted']}/{s['n_harmful']} | "
            f"{s['good_rejected']}/{s['n_good']} | {s['harmful_sessions_in_tests']:,.0f} | "
            f"{s['harmful_sessions_horizon']:,.0f} | {s['median_live_sessions_to_decision']:,.0f} | "
            f"{s['median_days_to_decision']:.1f} |"
        )
    return head + "\n".join(lines)


def per_candidate_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| recipe | truth | Δrevenue (95% CI) | Δclicks | Δcold-start revenue | "
        "twin Δrevenue | DR Δrevenue | "
        + " | ".join(STRATEGIES)
        + " |\n| --- | --- | --- | --- | --- | --- | --- | "
        + " | ".join("---" for _ in STRATEGIES)
        + " |\n"
    )
    lines = []
    for r in rows:
        e, ci = r["truth"]["effect"], r["truth"]["ci95"]["revenue_per_user"]
        sg, nan = r["strategies"]["stagegate"], float("nan")
        cells = [("promote" if r["strategies"][s]["promote"] else "reject") for s in STRATEGIES]
        lines.append(
            f"| {r['name']} | {r['label']} | {e['revenue_per_user']:+.1%} ({ci[0]:+.1%}, {ci[1]:+.1%}) | "
            f"{e['clicks_per_user']:+.1%} | {e['cold_start_revenue_per_user']:+.1%} | "
            f"{sg.get('twin_revenue_effect', nan):+.1%} | {sg.get('dr_revenue_effect', nan):+.1%} | "
            + " | ".join(cells)
            + " |"
        )
    return head + "\n".join(lines)


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", type=Path, default=ROOT / "recipes" / "zoo")
    parser.add_argument("--policy", type=Path, default=ROOT / "policies" / "default.yaml")
    parser.add_argument("--size", default="demo", choices=["demo", "small"])
    parser.add_argument("--world-seed", type=int, default=7)
    parser.add_argument("--seeds", type=int, default=5, help="ground-truth seeds")
    parser.add_argument("--truth-days", type=float, default=7.0)
    parser.add_argument("--ab-days", type=float, default=14.0)
    parser.add_argument("--interval-hours", type=float, default=24.0)
    parser.add_argument("--horizon-days", type=float, default=28.0)
    parser.add_argument("--min-users-scale", type=float, default=0.25)
    parser.add_argument(
        "--on-hold", default="approve-if-no-fail", choices=["manager", "approve-if-no-fail", "reject"]
    )
    parser.add_argument(
        "--truth-cache",
        type=Path,
        default=None,
        help="reuse ground truth across runs (JSON, keyed by config)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write every number here")
    args = parser.parse_args(argv)
    HUMAN["on_hold"] = args.on_hold

    from simulator.models.recipe import load_recipe
    from simulator.models.train import train
    from simulator.models.zoo import build_zoo
    from simulator.oracle import label, recipe_paths, world_config
    from stagegate.evaluation.offline import evaluate_offline
    from stagegate.policy.load import load_policy

    t_start = time.perf_counter()
    policy = load_policy(args.policy)
    paths = recipe_paths(args.recipes)
    zoo = build_zoo(world_config(args.size, args.world_seed), candidates=())
    test_days = 7.0
    sessions_per_day = float(np.unique(zoo.test_logs.session_id).size) / test_days
    off_kw = {"k": 10, "label": "click", "train_log": zoo.train_logs}
    champ_off = evaluate_offline(zoo.champion, zoo.test_logs, zoo.catalog, **off_kw)
    print(
        f"world {args.size} seed {args.world_seed}: {len(paths)} recipes, "
        f"{sessions_per_day:.0f} sessions/day, "
        f"zoo built in {time.perf_counter() - t_start:.1f}s",
        flush=True,
    )
    cache = json.loads(args.truth_cache.read_text()) if args.truth_cache and args.truth_cache.exists() else {}
    rows = []
    for i, path in enumerate(paths):
        t0 = time.perf_counter()
        recipe = load_recipe(path)
        candidate = train(recipe, zoo.train_logs, zoo.catalog)
        key = f"{recipe.name}|{args.size}|{args.world_seed}|{args.seeds}|{args.truth_days}"
        if key in cache:
            truth = cache[key]
        else:
            truth = zoo.world.ground_truth(
                zoo.champion, candidate, days=args.truth_days, seeds=list(range(args.seeds))
            )
            cache[key] = {k: truth[k] for k in ("effect", "ci95", "n_users", "champion", "candidate")}
        verdict, reasons = label(truth)
        cand_off = evaluate_offline(candidate, zoo.test_logs, zoo.catalog, **off_kw)
        seed = 1000 + i
        strategies = {
            "offline-only": offline_only(cand_off, champ_off),
            "fixed A/B 50/50": fixed_ab(zoo.world, zoo.champion, candidate, args.ab_days, seed),
            "threshold (Argo/Flagger)": threshold_analysis(
                zoo.world, zoo.champion, candidate, args.interval_hours, seed
            ),
            "stagegate": stagegate_pipeline(
                policy, zoo, candidate, (champ_off, cand_off), seed, args.min_users_scale
            ),
        }
        strategies["stagegate"].update(SIM_LOG.pop(id(candidate), {}))
        rows.append(
            {
                "name": recipe.name,
                "label": verdict,
                "reasons": reasons,
                "truth": {k: truth[k] for k in ("effect", "ci95", "n_users")},
                "strategies": strategies,
                "seconds": round(time.perf_counter() - t0, 1),
            }
        )
        print(
            f"  {recipe.name:18s} truth {verdict:8s} Δrev {truth['effect']['revenue_per_user']:+.1%}  "
            + "  ".join(f"{s.split()[0]}={'P' if r['promote'] else 'R'}" for s, r in strategies.items())
            + f"  [{rows[-1]['seconds']}s] stagegate: {strategies['stagegate']['note'][:90]}",
            flush=True,
        )
    if args.truth_cache:
        args.truth_cache.write_text(json.dumps(cache, default=float))
    summary = score(rows, sessions_per_day, args.horizon_days)
    wall = time.perf_counter() - t_start
    print()
    print(per_candidate_table(rows))
    print()
    print(table(summary, args.horizon_days))
    sg, ab = summary["stagegate"], summary["fixed A/B 50/50"]
    ratio = (
        sg["harmful_sessions_horizon"] / ab["harmful_sessions_horizon"]
        if ab["harmful_sessions_horizon"]
        else float("nan")
    )
    print(
        f"\nstagegate targets: harmful at 100% = {sg['harmful_promoted']} (target 0); good promoted = "
        f"{sg['good_promoted_share']:.0%} (target >= 90%); harmful exposure vs fixed A/B = {ratio:.1%} "
        f"(target <= 10%)\nwall time {wall:.0f}s"
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "rows": rows,
                    "summary": summary,
                    "wall_s": wall,
                },
                indent=1,
                default=float,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
