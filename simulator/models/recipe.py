"""Recipes: a model described as data (YAML), validated before anything is trained.

A recipe names a family, its knobs, the label it learns from and its training window. Composite families
nest recipes: ``blend`` has weighted ``components``, ``reranker`` wraps a ``base``. Children inherit the
parent's label and training window unless they set their own. Knobs are checked against the family's own
pydantic model, so a typo is refused with the file, the field and the reason; a new recipe needs no code.

Example::

    name: champion
    family: reranker
    label: purchase
    train_days: 21
    knobs: {in_stock_filter: true, category_cap: 3}
    base:
      family: mf
      knobs: {factors: 16}
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

Label = Literal["click", "purchase"]


def _knob_models() -> dict[str, type[BaseModel] | None]:
    """Family name -> knobs model (None for composite families, whose knobs live elsewhere)."""
    from simulator.models.content import ContentKnobs
    from simulator.models.itemknn import ItemKNNKnobs
    from simulator.models.logistic import LogisticKnobs
    from simulator.models.mf import MFKnobs
    from simulator.models.popularity import PopularityKnobs
    from simulator.models.reranker import RerankerKnobs

    return {
        "popularity": PopularityKnobs,
        "itemknn": ItemKNNKnobs,
        "mf": MFKnobs,
        "logistic": LogisticKnobs,
        "content": ContentKnobs,
        "reranker": RerankerKnobs,
        "blend": None,
    }


FAMILIES = ("popularity", "itemknn", "mf", "logistic", "content", "blend", "reranker")


class RecipeError(ValueError):
    """A recipe file that cannot be used; the message names the file, the field and the reason."""


class Component(BaseModel):
    """One weighted member of a blend."""

    model_config = ConfigDict(extra="forbid")

    weight: float = 1.0
    recipe: Recipe


class Recipe(BaseModel):
    """A model as data. ``knobs`` are validated against the family's knobs model."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("", description="model name; defaults to the file stem (or parent name + family)")
    description: str = ""
    family: Literal["popularity", "itemknn", "mf", "logistic", "content", "blend", "reranker"]
    label: Label | None = Field(None, description="click | purchase; inherited by children; default purchase")
    train_days: float | None = Field(None, gt=0, description="train on the last N days of logs (None: all)")
    knobs: dict[str, Any] = Field(default_factory=dict)
    base: Recipe | None = None
    components: list[Component] = Field(default_factory=list)
    latency_ms_median: float | None = Field(None, gt=0, description="override the family's serving latency")
    error_rate: float | None = Field(None, ge=0, le=1, description="extra serving error rate (fault drills)")

    @field_validator("knobs")
    @classmethod
    def _check_knobs(cls, knobs: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        family = info.data.get("family")
        if family is None:  # the family itself is invalid; that error is reported on its own
            return knobs
        model = _knob_models()[family]
        if model is None:
            if knobs:
                raise PydanticCustomError("knobs", "family '{family}' takes no knobs", {"family": family})
            return knobs
        try:
            model.model_validate(knobs)
        except ValidationError as err:
            detail = "; ".join(
                f"knob '{'.'.join(str(x) for x in e['loc'])}': {e['msg']}" for e in err.errors()
            )
            raise PydanticCustomError(
                "knobs", "{detail} (family '{family}')", {"detail": detail, "family": family}
            ) from None
        return knobs

    @model_validator(mode="after")
    def _check_structure(self) -> Recipe:
        if self.family == "reranker" and self.base is None:
            raise ValueError("family 'reranker' needs a 'base' recipe")
        if self.family != "reranker" and self.base is not None:
            raise ValueError(f"'base' is only for family 'reranker', not {self.family!r}")
        if self.family == "blend" and not self.components:
            raise ValueError("family 'blend' needs a non-empty 'components' list")
        if self.family != "blend" and self.components:
            raise ValueError(f"'components' is only for family 'blend', not {self.family!r}")
        return self

    def resolved(self, parent: Recipe | None = None) -> Recipe:
        """A copy where label, training window and name are filled in (inherited from ``parent``)."""
        label = self.label or (parent.label if parent else None) or "purchase"
        days = self.train_days if self.train_days is not None else (parent.train_days if parent else None)
        name = self.name or (f"{parent.name}.{self.family}" if parent else self.family)
        me = self.model_copy(update={"label": label, "train_days": days, "name": name})
        base = self.base.resolved(me) if self.base is not None else None
        comps = [c.model_copy(update={"recipe": c.recipe.resolved(me)}) for c in self.components]
        return me.model_copy(update={"base": base, "components": comps})

    def typed_knobs(self) -> BaseModel | None:
        """The knobs as the family's pydantic model (defaults filled in)."""
        model = _knob_models()[self.family]
        return model.model_validate(self.knobs) if model is not None else None

    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.model_dump(mode="json", exclude_defaults=True), sort_keys=False)


Component.model_rebuild()
Recipe.model_rebuild()


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"]) or "(top level)"
        lines.append(f"field '{loc}': {e['msg']}")
    return "; ".join(lines)


def parse_recipe(data: object, source: str = "<recipe>") -> Recipe:
    """Validate a recipe from already-parsed data; errors are RecipeError naming ``source`` and the field."""
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping, got {type(data).__name__}")
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as err:
        raise RecipeError(f"{source}: {_describe(err)}") from None
    return recipe


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file; the name defaults to the file stem."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise RecipeError(f"{p}: cannot read recipe ({err.strerror or err})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise RecipeError(f"{p}: not valid YAML ({err})") from None
    recipe = parse_recipe(data, str(p))
    if not recipe.name:
        recipe = recipe.model_copy(update={"name": p.stem})
    return recipe
