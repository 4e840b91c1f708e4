"""Training: ``InfoSAMConfig``, ``InfoSAMTrainer``, the recipe parser and the end-to-end run.

The names below load on first use, so the recipe parser (``infosam_hf.training.recipe``: YAML and the standard
library only) can be imported by ``--help`` and usage checks without torch.
"""

import importlib

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


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
