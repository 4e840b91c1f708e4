"""``infosam evaluate --adapter DIR_OR_REPO [--recipe R] [--dataset_name_or_path PATH] [--key value ...]``.

Scores a trained adapter (or, with ``--adapter none``, the zero-shot base SAM) on one dataset split
with the same protocol as the evaluation at the end of training. Any other ``--key value`` is a
recipe key (data and metric settings).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..data import DataArguments
from ..errors import UsageError
from ..evaluation.evaluate import RESULTS_FILENAME, default_output_path, evaluate_adapter, format_results_table
from ..training import parse_train_args
from .common import adapter_parser, run_main

__all__ = ["build_parser", "parse_evaluate_args", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = adapter_parser(
        "infosam evaluate",
        "Evaluate a trained InfoSAM adapter (or, with --adapter none, the zero-shot base SAM) on a dataset split. "
        "Any other --key value is a recipe key (data and metric settings).")
    parser.add_argument("--dataset_name_or_path", default=None, help="Dataset folder / Hub id (default: the recipe's).")
    parser.add_argument("--split", default=None, help="Split to score (default: the recipe's test_split, else 'test').")
    parser.add_argument("--recipe", default=None, help="Recipe YAML giving the data and metric settings.")
    parser.add_argument("--output", default=None,
                        help=f"Results JSON (default: ADAPTER/{RESULTS_FILENAME} for a local adapter).")
    return parser


def parse_evaluate_args(argv: Sequence[str]) -> tuple[argparse.Namespace, DataArguments, Any, Any]:
    """Split ``argv`` into the command's options and recipe keys.

    Returns ``(options, data_args, model_args, config)`` where ``config`` is the recipe's
    :class:`~infosam_hf.InfoSAMConfig` (metric_input, metric_set, seed, batch size ...).
    """
    options, overrides = build_parser().parse_known_args(list(argv))
    if options.recipe is None and options.dataset_name_or_path is None:
        raise UsageError("--dataset_name_or_path is required (or give a --recipe that names the dataset)")
    if options.batch_size is not None and options.batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {options.batch_size}")
    recipe_argv = ([options.recipe] if options.recipe else []) + list(overrides)
    if options.dataset_name_or_path is not None:
        recipe_argv += ["--dataset_name_or_path", options.dataset_name_or_path]
    model_args, _, data_args, config = parse_train_args(recipe_argv)
    if options.split is None:
        options.split = data_args.test_split or "test"
    if options.batch_size is None:
        options.batch_size = config.per_device_eval_batch_size
    return options, data_args, model_args, config


def _evaluate(argv: list[str]) -> int:
    options, data_args, model_args, config = parse_evaluate_args(argv)
    base_model = options.base_model
    if options.adapter.lower() == "none" and not base_model:
        base_model = model_args.model_name_or_path
    results = evaluate_adapter(
        options.adapter, data_args, split=options.split, base_model=base_model, batch_size=options.batch_size,
        metric_input=config.metric_input, metric_set=config.metric_set, seed=config.seed, device=options.device,
        num_workers=config.dataloader_num_workers, progress=not config.disable_tqdm,
    )
    output = Path(options.output) if options.output else default_output_path(options.adapter)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(format_results_table(results, config.report_metrics))
    print(f"\nResults written to {output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 with ``error: ...`` on bad input)."""
    return run_main(_evaluate, argv)
