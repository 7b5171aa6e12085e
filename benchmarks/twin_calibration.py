"""Benchmark: the simulation stage's twin against the ground truth over a zoo of recipes (issue 12 item 6).

For every recipe (default: recipes/zoo/ and recipes/popularity_only.yaml), trained on the same log as the
champion:

1. the twin's estimated effect, as the simulation stage computes it (:func:`flows.stages.simulation.twin_arm`,
   the policy's ``days`` and ``seeds``; the twin fitted once from the training log and the public catalogue),
   on revenue, purchases and clicks per user; also with the twin's earlier in-sample taste weight
   (``taste_holdout=0``), to show what the out-of-sample weight changed;
2. the truth: :func:`simulator.world.oracle.adaptive_ground_truth` (the candidate at 100 % against the
   champion at 100 % in the live world, common random numbers, seeds added until the labelled metrics'
   95 % intervals are within ±2 % or the cap), labelled by :func:`simulator.oracle.label_truth` with the
   policy's guardrails;
3. per metric, over the zoo's recipes: sign agreement, Spearman's ρ, bias, mean absolute error
   (:func:`simulator.world.twin_calibration.calibrate`) and whether the calibration supports gating on it.

``--write-record`` writes the calibration record the simulation stage reads
(simulator/world/twin_calibration.json). Usage: ``python benchmarks/twin_calibration.py [--size demo]
[--max-seeds 16] [--json out.json] [--truth-cache FILE] [--write-record]``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METRICS = ("revenue_per_user", "purchases_per_user", "clicks_per_user")
SHORT = {"revenue_per_user": "revenue", "purchases_per_user": "purchases", "clicks_per_user": "clicks"}


def calibration_table(cal: dict[str, Any], title: str) -> str:
    """Markdown table of per-metric calibration statistics."""
    lines = [
        f"| {title} | candidates (signed) | sign agreement | Spearman ρ (p) | bias | mean abs. error "
        "| supported |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m, c in cal.items():
        ok, _ = c.supported()
        lines.append(
            f"| {SHORT.get(m, m)} | {c.n} ({c.n_signed}) | {c.sign_agreement:.2f} | {c.spearman:+.2f} "
            f"({c.spearman_p:.2f}) | {c.bias:+.1%} | {c.mean_abs_error:.1%} | {'yes' if ok else 'no'} |"
        )
    return "\n".join(lines)


def recipe_table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| recipe | label | seeds (stop) | oracle s | "
        + " | ".join(f"{SHORT[m]}: truth (95% CI) / twin / twin before" for m in METRICS)
        + " |\n| --- | --- | --- | --- | "
        + " | ".join("---" for _ in METRICS)
        + " |"
    )
    lines = [head]
    for r in rows:
        cells = []
        for m in METRICS:
            lo, hi = r["truth_ci"][m]
            cells.append(
                f"{r['truth'][m]:+.1%} ({lo:+.1%}, {hi:+.1%}) / {r['twin'][m]:+.1%} / "
                f"{r['twin_before'][m]:+.1%}"
            )
        lines.append(
            f"| {r['name']}{'' if r['in_zoo'] else ' (not in zoo)'} | {r['label']} | {r['seeds']} "
            f"({r['stopped']}) | {r['oracle_seconds']:.0f} | " + " | ".join(cells) + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", type=Path, default=ROOT / "recipes" / "zoo")
    parser.add_argument("--extra", type=Path, nargs="*", default=[ROOT / "recipes" / "popularity_only.yaml"])
    parser.add_argument("--policy", type=Path, default=ROOT / "policies" / "default.yaml")
    parser.add_argument("--size", default="demo", choices=["demo", "small"])
    parser.add_argument("--world-seed", type=int, default=7)
    parser.add_argument("--truth-days", type=float, default=7.0)
    parser.add_argument("--min-seeds", type=int, default=4)
    parser.add_argument("--max-seeds", type=int, default=16)
    parser.add_argument("--truth-cache", type=Path, default=None)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--write-record", action="store_true")
    args = parser.parse_args(argv)

    from flows.stages.simulation import holdout_traffic, twin_arm, twin_effect
    from simulator.models.recipe import load_recipe
    from simulator.models.train import train
    from simulator.models.zoo import build_zoo
    from simulator.oracle import label_truth, protection, recipe_paths, world_config
    from simulator.world.oracle import adaptive_ground_truth
    from simulator.world.twin import TwinWorld
    from simulator.world.twin_calibration import RECORD, calibrate, record
    from stagegate.policy.load import load_policy

    t_start = time.perf_counter()
    policy = load_policy(args.policy)
    sim = policy.stages.simulation
    if sim is None:
        raise SystemExit(f"{args.policy}: no simulation stage to calibrate")
    protect = protection(policy)
    labelled = {**protect.labelled(), **{m: ("relative", protect.resolution) for m in METRICS}}
    zoo = build_zoo(world_config(args.size, args.world_seed), candidates=())
    traffic = holdout_traffic(zoo.test_logs)
    twins = {
        "now": TwinWorld.fit(zoo.train_logs, zoo.catalog),
        "before": TwinWorld.fit(zoo.train_logs, zoo.catalog, taste_holdout=0.0),
    }
    champ = {k: twin_arm(t, zoo.champion, traffic, sim)[1] for k, t in twins.items()}
    print(
        f"world {args.size} seed {args.world_seed}; twin taste weight {twins['now'].info['taste_weight']} "
        f"(in sample {twins['now'].info['taste_weight_in_sample']}); zoo and twins in "
        f"{time.perf_counter() - t_start:.0f}s",
        flush=True,
    )
    cache = json.loads(args.truth_cache.read_text()) if args.truth_cache and args.truth_cache.exists() else {}
    zoo_paths = recipe_paths(args.recipes)
    rows = []
    for path in [*zoo_paths, *args.extra]:
        recipe = load_recipe(path)
        candidate = train(recipe, zoo.train_logs, zoo.catalog)
        est = {k: twin_effect(twin_arm(t, candidate, traffic, sim)[1], champ[k]) for k, t in twins.items()}
        key = (
            f"{recipe.name}|{args.size}|{args.world_seed}|{args.min_seeds}|{args.max_seeds}|{args.truth_days}"
        )
        t0 = time.perf_counter()
        if key in cache:
            truth = cache[key]
        else:
            truth = adaptive_ground_truth(
                zoo.world,
                zoo.champion,
                candidate,
                labelled,
                days=args.truth_days,
                min_seeds=args.min_seeds,
                max_seeds=args.max_seeds,
            )
            truth["oracle_seconds"] = time.perf_counter() - t0
            cache[key] = truth
        res = label_truth(truth, protect)
        rows.append(
            {
                "name": recipe.name,
                "in_zoo": path in zoo_paths,
                "label": res.label,
                "reasons": res.reasons,
                "seeds": len(truth["seeds"]),
                "stopped": truth["stopped"],
                "oracle_seconds": truth["oracle_seconds"],
                "truth": {m: truth["effect"][m] for m in METRICS},
                "truth_ci": {m: truth["ci95"][m] for m in METRICS},
                "twin": {m: est["now"][m] for m in METRICS},
                "twin_before": {m: est["before"][m] for m in METRICS},
            }
        )
        r = rows[-1]
        print(
            f"  {r['name']:18s} {r['label']:10s} seeds {r['seeds']:2d} ({r['stopped']}, "
            f"{r['oracle_seconds']:.0f}s)  truth Δrev {r['truth']['revenue_per_user']:+.1%}  "
            f"twin {r['twin']['revenue_per_user']:+.1%} (before {r['twin_before']['revenue_per_user']:+.1%})",
            flush=True,
        )
    if args.truth_cache:
        args.truth_cache.write_text(json.dumps(cache, default=float))
    in_zoo = [r for r in rows if r["in_zoo"]]
    truth = {r["name"]: r["truth"] for r in in_zoo}
    ci = {r["name"]: r["truth_ci"] for r in in_zoo}
    cal = calibrate({r["name"]: r["twin"] for r in in_zoo}, truth, ci)
    before = calibrate({r["name"]: r["twin_before"] for r in in_zoo}, truth, ci)
    wall = time.perf_counter() - t_start
    print()
    print(recipe_table(rows))
    print()
    print(calibration_table(cal, "twin (hold-out taste weight)"))
    print()
    print(calibration_table(before, "twin before (in-sample taste weight)"))
    print(f"\nwall time {wall:.0f}s")
    provenance = {
        "benchmark": "benchmarks/twin_calibration.py",
        "size": args.size,
        "world_seed": args.world_seed,
        "policy": str(args.policy.relative_to(ROOT) if args.policy.is_relative_to(ROOT) else args.policy),
        "days": sim.days,
        "seeds": sim.seeds,
        "recipes": sorted(truth),
        "taste_weight": twins["now"].info["taste_weight"],
    }
    if args.write_record:
        RECORD.write_text(json.dumps(record(cal, **provenance), indent=1, default=float) + "\n")
        print(f"wrote {RECORD}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "rows": rows,
                    "calibration": {m: c.__dict__ for m, c in cal.items()},
                    "before": {m: c.__dict__ for m, c in before.items()},
                    "provenance": provenance,
                    "wall_s": wall,
                },
                indent=1,
                default=float,
            )
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
