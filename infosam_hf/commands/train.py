"""``infosam train RECIPE.yaml [--key value ...]``: fine-tune SAM with InfoSAM from a recipe."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import torch

from ..training import RecipeError, parse_train_args, run_training
from ..training.dry_run import run_dry, wants_dry_run
from ..training.recipe import HELP_FLAGS, format_recipe_help, recipe_values, wants_help
from ..training.run import RECIPE_DATACLASSES
from .common import run_main

__all__ = ["USAGE", "cpu_threads", "main"]

USAGE = """\
usage: infosam train RECIPE.yaml [--key value ...]
       accelerate launch scripts/train.py RECIPE.yaml [--key value ...]   (python scripts/train.py: the same)

Fine-tune SAM with InfoSAM. Every key below can be set in the recipe (key: value) or on the command line
(--key value; a mapping key entry as --peft_config.r 16). `--help` after a recipe shows the values it sets.
--dry_run rehearses the recipe in about a minute on the CPU: a small random model of the same family and tuner,
small inputs, a few examples of each split, one short epoch, evaluation, saving and reloading (no downloads)."""


def cpu_threads(args) -> int | None:
    """On CPU, one torch thread unless ``OMP_NUM_THREADS`` says otherwise: what ``accelerate launch`` sets,
    so a plain ``python scripts/train.py`` run computes (and prints) the same numbers. Returns the count set."""
    if args.device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return None
    torch.set_num_threads(1)
    return 1


def _help(argv: list[str]) -> int:
    rest = [token for token in argv if token not in HELP_FLAGS]
    values = {}
    try:
        values = recipe_values(rest, RECIPE_DATACLASSES) if rest else {}
    except RecipeError as err:
        print(f"note: {err}", file=sys.stderr)
    print(format_recipe_help(RECIPE_DATACLASSES, USAGE, values))
    return 0


def _train(argv: list[str]) -> int:
    if wants_help(argv):
        return _help(argv)
    if not argv:
        print(USAGE + "\n\n`infosam train --help` lists every key; `infosam train recipes/demo.yaml` runs the demo.",
              file=sys.stderr)
        return 2
    dry_run, argv = wants_dry_run(argv)
    if dry_run:
        run_dry(argv, parse_train_args, _run)
        return 0
    _run(*parse_train_args(argv))
    return 0


def _run(model_args, peft_args, data_args, args):
    cpu_threads(args)
    return run_training(model_args, peft_args, data_args, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``error:`` line on bad input."""
    return run_main(_train, argv)
