"""Recipes: every shipped recipe validates; bad ones are refused naming the file, the field and the reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from simulator.models import RecipeError, load_recipe, parse_recipe, train
from tests.models.conftest import RECIPES


@pytest.mark.parametrize("path", sorted(RECIPES.glob("*.yaml")), ids=lambda p: p.stem)
def test_shipped_recipes_validate(path: Path) -> None:
    recipe = load_recipe(path)
    assert recipe.name == path.stem
    assert recipe.resolved().label in ("click", "purchase")


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "candidate.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("text", "field", "reason"),
    [
        ("family: mff\n", "family", "Input should be"),
        ("family: mf\nknobs: {factorz: 8}\n", "knobs", "knob 'factorz': Extra inputs are not permitted"),
        ("family: mf\nknobs: {factors: -1}\n", "knobs", "knob 'factors'"),
        ("family: mf\nlabel: revenue\n", "label", "Input should be 'click' or 'purchase'"),
        ("family: mf\ntrain_days: 0\n", "train_days", "greater than 0"),
        ("family: reranker\nknobs: {}\n", "(top level)", "needs a 'base' recipe"),
        ("family: reranker\nbase: {family: mf, knobs: {alpha: x}}\n", "base.knobs", "knob 'alpha'"),
        ("family: blend\n", "(top level)", "non-empty 'components'"),
        ("family: blend\nknobs: {a: 1}\ncomponents: [{recipe: {family: mf}}]\n", "knobs", "takes no knobs"),
        ("family: mf\nwindow: 3\n", "window", "Extra inputs are not permitted"),
    ],
)
def test_invalid_recipes_name_file_field_and_reason(
    tmp_path: Path, text: str, field: str, reason: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    message = str(err.value)
    assert str(path) in message and f"field '{field}'" in message and reason in message, message


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="cannot read"):
        load_recipe(tmp_path / "missing.yaml")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "family: [mf\n"))
    with pytest.raises(RecipeError, match="must be a mapping"):
        load_recipe(_write(tmp_path, "- mf\n"))


def test_children_inherit_label_and_window() -> None:
    recipe = parse_recipe(
        {
            "name": "r",
            "family": "reranker",
            "label": "click",
            "train_days": 5,
            "base": {
                "family": "blend",
                "components": [
                    {"recipe": {"family": "mf"}},
                    {"recipe": {"family": "popularity", "label": "purchase"}},
                ],
            },
        }
    ).resolved()
    blend = recipe.base
    assert blend.label == "click" and blend.train_days == 5
    assert [c.recipe.label for c in blend.components] == ["click", "purchase"]
    assert blend.components[0].recipe.name == "r.blend.mf"


def test_new_recipe_needs_no_code(tmp_path: Path, tiny) -> None:
    path = _write(
        tmp_path, "family: reranker\nlabel: click\nknobs: {category_cap: 1}\nbase: {family: popularity}\n"
    )
    model = train(load_recipe(path), tiny.logs, tiny.catalog)
    slates = model.recommend(tiny.logs.context, 10)
    cats = tiny.catalog.sort_values("item_id")["category"].to_numpy()[slates]
    # with a cap of 1, the first block of a slate repeats a category only when categories run out
    assert (np.array([len(set(row)) for row in cats]) >= min(10, len(set(cats.ravel())))).mean() > 0.9
    assert model.name == "candidate" and model.recipe.label == "click"


def test_logs_are_required_except_for_content(tiny) -> None:
    with pytest.raises(ValueError, match="needs training logs"):
        train(parse_recipe({"family": "mf"}), None, tiny.catalog)
    assert (
        train(parse_recipe({"family": "content"}), None, tiny.catalog)
        .recommend(tiny.logs.context, 3)
        .shape[1]
        == 3
    )
