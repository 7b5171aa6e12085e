"""A registered model version as a Ranker, by its flavour.

A version tagged ``recipe`` (stagegate.contract.RECIPE_TAG) is a recipe model: it is loaded by the
``recipe`` loader of the ``stagegate.model_flavours`` entry-point group (the simulator's,
simulator.models.pyfunc:load_ranker), which the core never imports. Any other version meets the ranking
contract (stagegate.contract) and is served through :class:`stagegate.models.external.ExternalRanker`,
which checks every answer. MLflow is imported inside the function (it takes seconds to import).
"""

from __future__ import annotations

from collections.abc import Mapping

from stagegate.contract import RECIPE_TAG
from stagegate.models.base import Ranker

RECIPE_FLAVOUR = "recipe"


def flavour_of(tags: Mapping[str, str]) -> str:
    """``recipe`` for a version tagged as a recipe model, else ``contract`` (a bring-your-own model)."""
    return RECIPE_FLAVOUR if tags.get(RECIPE_TAG) else "contract"


def load_ranker(model_uri: str, tags: Mapping[str, str]) -> Ranker:
    """The Ranker of the version at ``model_uri`` (``models:/name/version``) whose tags are ``tags``.

    Raises stagegate.extensions.MissingExtension when the version is a recipe model and no ``recipe``
    flavour loader is installed: such a model cannot be served by the contract's wrapper.
    """
    flavour = flavour_of(tags)
    if flavour != "contract":
        from stagegate.extensions import MODEL_FLAVOURS, load

        loader = load(MODEL_FLAVOURS, flavour, needed_for=f"{model_uri}, tagged {RECIPE_TAG!r}")
        return loader(model_uri)

    import mlflow.pyfunc

    from stagegate.contract import refuse_pickled_models
    from stagegate.models.external import ExternalRanker

    refuse_pickled_models()  # a pickled model is refused by MLflow instead of unpickled (docs/security.md)
    return ExternalRanker(mlflow.pyfunc.load_model(model_uri), name=model_uri)
