"""``infosam train RECIPE.yaml [--key value ...]``: fine-tune SAM with InfoSAM from a recipe."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import torch

from ..training import RecipeError, parse_train_args, run_training
from ..training.recipe import HELP_FLAGS, format_recipe_help, recipe_values, wants_help
from ..training.resume_check import interrupted_message
from ..training.run import RECIPE_DATACLASSES
from .common import run_main

__all__ = ["USAGE", "cpu_threads", "main"]

USAGE = """\
usage: infosam train RECIPE.yaml [--key value ...]
       accelerate launch scripts/train.py RECIPE.yaml [--key value ...]   (python scripts/train.py: the same)

Fine-tune SAM with InfoSAM. Every key below can be set in the recipe (key: value) or on the command line
(--key value; a mapping key entry as --peft_config.r 16). `--help` after a recipe shows the values it sets."""


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
    model_args, peft_args, data_args, args = parse_train_args(argv)
    cpu_threads(args)
    try:
        run_training(model_args, peft_args, data_args, args)
    except KeyboardInterrupt:  # outside the training loop (loading, caching, evaluating): one line too
        print(interrupted_message(None, args.output_dir), file=sys.stderr)
        return 130
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``error:`` line on bad input."""
    return run_main(_train, argv)
