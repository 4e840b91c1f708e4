"""``infosam train RECIPE.yaml [--key value ...]``: fine-tune SAM with InfoSAM from a recipe."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..training.dry_run import wants_dry_run
from ..training.recipe import HELP_FLAGS, RecipeError, check_known_keys, format_recipe_help, wants_help
from .common import run_main

__all__ = ["USAGE", "TRAIN_KEYS_FILE", "cpu_threads", "recipe_keys", "write_recipe_keys", "main"]

# Every recipe key with its type, default and help text, generated from the four argument dataclasses by
# write_recipe_keys() (tests/test_cli_speed.py checks it is current): `--help` and the unknown-key check read it
# instead of importing torch and transformers.
TRAIN_KEYS_FILE = Path(__file__).with_name("train_keys.json")

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
    import torch

    if args.device.type != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return None
    torch.set_num_threads(1)
    return 1


@functools.cache
def recipe_keys() -> list[dict[str, Any]]:
    """The recipe keys by group, as :func:`~infosam_hf.training.recipe.recipe_help_schema` gives them."""
    return json.loads(TRAIN_KEYS_FILE.read_text())


def write_recipe_keys() -> Path:
    """Regenerate :data:`TRAIN_KEYS_FILE` from the argument dataclasses (after adding or changing a key)."""
    from ..training.recipe import recipe_help_schema
    from ..training.run import RECIPE_DATACLASSES

    TRAIN_KEYS_FILE.write_text(json.dumps(recipe_help_schema(RECIPE_DATACLASSES), indent=1) + "\n")
    recipe_keys.cache_clear()
    return TRAIN_KEYS_FILE


def _help(argv: list[str]) -> int:
    rest = [token for token in argv if token not in HELP_FLAGS]
    values = {}
    try:
        values = check_known_keys(rest, recipe_keys()) if rest else {}
    except RecipeError as err:
        print(f"note: {err}", file=sys.stderr)
    print(format_recipe_help(recipe_keys(), USAGE, values))
    return 0


def _train(argv: list[str]) -> int:
    if wants_help(argv):
        return _help(argv)
    if not argv:
        print(USAGE + "\n\n`infosam train --help` lists every key; `infosam train recipes/demo.yaml` runs the demo.",
              file=sys.stderr)
        return 2
    dry_run, argv = wants_dry_run(argv)
    check_known_keys(argv, recipe_keys())  # a mistyped key: one line in a second, before torch is imported
    from ..training import parse_train_args

    if dry_run:
        from ..training.dry_run import run_dry

        run_dry(argv, parse_train_args, _run)
        return 0
    model_args, peft_args, data_args, args = parse_train_args(argv)
    try:
        _run(model_args, peft_args, data_args, args)
    except KeyboardInterrupt:  # outside the training loop (loading, caching, evaluating): one line too
        from ..training.resume_check import interrupted_message

        print(interrupted_message(None, args.output_dir), file=sys.stderr)
        return 130
    return 0


def _run(model_args, peft_args, data_args, args):
    from ..training import run_training

    cpu_threads(args)
    return run_training(model_args, peft_args, data_args, args)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``error:`` line on bad input."""
    return run_main(_train, argv)
