"""Recommender models trained on the world's public logs, described by recipes (YAML).

Families: popularity, itemknn, mf (implicit ALS), logistic (public features), content, blend, reranker.
``load_recipe`` + ``train`` build any of them; :mod:`simulator.models.pyfunc` logs them to MLflow as the
``recipe`` flavour. The Ranker protocol they satisfy is the core's (stagegate.models.base).
"""

from simulator.models.common import BaseRanker
from simulator.models.recipe import Recipe, RecipeError, load_recipe, parse_recipe
from simulator.models.train import train
from stagegate.models.base import Ranker

__all__ = ["BaseRanker", "Ranker", "Recipe", "RecipeError", "load_recipe", "parse_recipe", "train"]
