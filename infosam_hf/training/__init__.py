"""Training: ``InfoSAMConfig``, ``InfoSAMTrainer``, the recipe parser and the end-to-end run.

The names below load on first use, so the recipe parser (``infosam_hf.training.recipe``: YAML and the standard
library only) can be imported by ``--help`` and usage checks without torch.
"""

from ..import_hooks import lazy_attributes

# public name -> the submodule that defines it
_LAZY = {
    "InfoSAMConfig": ".config",
    "RecipeError": ".recipe",
    "parse_recipe": ".recipe",
    "RECIPE_DATACLASSES": ".run",
    "build_models": ".run",
    "parse_train_args": ".run",
    "run_training": ".run",
    "InfoSAMTrainer": ".trainer",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
