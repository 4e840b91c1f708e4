"""``infosam train RECIPE.yaml [--key value ...]``: fine-tune SAM with InfoSAM from a recipe."""

from __future__ import annotations

from collections.abc import Sequence

from ..training import parse_train_args, run_training
from .common import run_main

__all__ = ["main"]


def _train(argv: list[str]) -> int:
    model_args, peft_args, data_args, args = parse_train_args(argv)
    run_training(model_args, peft_args, data_args, args)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``error:`` line on bad input."""
    return run_main(_train, argv)
