"""Training: ``InfoSAMConfig``, ``InfoSAMTrainer``, the recipe parser and the end-to-end run."""

from .config import InfoSAMConfig
from .recipe import RecipeError, parse_recipe
from .run import RECIPE_DATACLASSES, build_models, parse_train_args, run_training
from .trainer import InfoSAMTrainer

__all__ = [
    "InfoSAMConfig",
    "InfoSAMTrainer",
    "RECIPE_DATACLASSES",
    "RecipeError",
    "build_models",
    "parse_recipe",
    "parse_train_args",
    "run_training",
]
