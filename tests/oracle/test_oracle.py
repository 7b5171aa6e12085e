"""Ground truth of candidate recipes: label rules, signs on a small world, the CLI's JSON, the zoo."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from simulator.models.recipe import load_recipe
from simulator.oracle import label, oracle, recipe_paths

ROOT = Path(__file__).resolve().parents[2]
ZOO = ROOT / "recipes" / "zoo"
NAN = float("nan")


def _truth(lo: float, hi: float, cold: tuple[float, float] = (-0.01, 0.01), sat=(-0.01, 0.01)) -> dict:
    return {
        "effect": {"revenue_per_user": (lo + hi) / 2},
        "ci95": {
            "revenue_per_user": [lo, hi],
            "cold_start_revenue_per_user": list(cold),
            "mean_satisfaction": list(sat),
        },
        "champion": {"oos_click_share_realised": NAN},
        "candidate": {"oos_click_share_realised": NAN},
    }


def test_label_rules() -> None:
    assert label(_truth(0.01, 0.05))[0] == "promote"
    assert label(_truth(-0.06, -0.025))[0] == "reject"
    assert label(_truth(-0.03, -0.01))[0] == "neutral"  # a loss within the 2 % the oracle resolves
    assert label(_truth(-0.01, 0.03))[0] == "neutral"
    assert label(_truth(0.004, 0.03))[0] == "neutral"  # inside the ±0.5 % band: either is fine
    # a guardrail breach rejects even a revenue winner
    assert label(_truth(0.01, 0.05, cold=(-0.3, -0.1)))[0] == "reject"
    assert label(_truth(0.01, 0.05, sat=(-0.5, -0.2)))[0] == "reject"
    assert label(_truth(NAN, NAN))[0] == "neutral"  # no interval: never a confident label


def test_zoo_has_at_least_eight_valid_distinct_recipes() -> None:
    paths = recipe_paths(ZOO)
    names = {load_recipe(p).name for p in paths}
    assert len(paths) >= 8 and len(names) == len(paths)
    for needed in (
        "clickbait",
        "stock_blind",
        "stale",
        "more_like_this",
        "diverse",
        "warm_specialist",
        "neutral_retrain",
        "context_aware",
    ):
        assert needed in names


def test_recipe_paths_refuse_missing(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        recipe_paths(tmp_path / "nope.yaml")


def test_ground_truth_signs_on_a_small_world() -> None:
    """Sign agreement only (reference §6.8): click-bait loses revenue, a seed-only retrain stays close."""
    out = oracle(
        [ZOO / "clickbait.yaml", ZOO / "neutral_retrain.yaml"],
        seeds=2,
        max_seeds=3,
        step=1,
        days=3,
        size="small",
        policy=ROOT / "policies" / "default.yaml",
    )
    bait, neutral = out["recipes"]["clickbait"], out["recipes"]["neutral_retrain"]
    assert bait["effect"]["revenue_per_user"] < -0.05 and bait["label"] == "harmful"
    assert bait["legacy_label"] == "reject"
    assert bait["effect"]["ctr"] > 0  # it does win clicks: the offline-online gap
    assert abs(neutral["effect"]["revenue_per_user"]) < 0.05 and neutral["label"] != "harmful"
    assert out["config"]["seeds"] == 2 and len(out["config"]["world_config_hash"]) == 16
    for r in (bait, neutral):  # adaptive: 2 seeds, or 3 when some labelled metric was still too wide
        assert r["seeds"] in (2, 3) and r["stopped"] in ("resolved", "cap") and r["seconds"] > 0
        assert (r["stopped"] == "cap") == (r["seeds"] == 3 and bool(r["unresolved"]))
    assert any(g["metric"] == "purchases_per_user" for g in out["protection"]["guardrails"])


def test_cli_prints_json(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from stagegate.cli import app

    result = CliRunner().invoke(
        app,
        [
            "world",
            "oracle",
            str(ZOO / "neutral_retrain.yaml"),
            "--seeds",
            "2",
            "--days",
            "1",
            "--policy",
            str(ROOT / "policies" / "default.yaml"),
        ],
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.output[result.output.index("{") :])
    assert data["recipes"]["neutral_retrain"]["label"] in {"harmful", "good", "neutral", "unresolved"}
    assert data["recipes"]["neutral_retrain"]["seeds"] == 2  # --seeds is the cap
    assert "purchases_per_user" in [g["metric"] for g in data["protection"]["guardrails"]]
    bad = CliRunner().invoke(app, ["world", "oracle", str(tmp_path / "missing.yaml"), "--seeds", "2"])
    assert bad.exit_code != 0
