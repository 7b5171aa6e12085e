"""Recommender models trained on the world's public logs, described by recipes (YAML).

Families: popularity, itemknn, mf (implicit ALS), logistic (public features), content, blend, reranker.
``load_recipe`` + ``train`` build any of them; :mod:`stagegate.models.pyfunc` logs them to MLflow.
"""

from stagegate.models.base import Ranker
from stagegate.models.common import BaseRanker
from stagegate.models.recipe import Recipe, RecipeError, load_recipe, parse_recipe
from stagegate.models.train import train

__all__ = ["BaseRanker", "Ranker", "Recipe", "RecipeError", "load_recipe", "parse_recipe", "train"]
