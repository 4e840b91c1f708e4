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

from ..errors import UsageError
from ..files import ADAPTER_CONFIG_NAME, CLICK_CURVE_NAME, EVAL_RESULTS_NAME, RUN_ARGS_NAME
from ..io import atomic_write_text
from ..remote import check_pretrained_name
from ..training.recipe import check_known_keys
from .common import adapter_parser, run_main
from .train import recipe_keys

__all__ = ["build_parser", "default_output_path", "parse_evaluate_args", "run_recipe", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = adapter_parser(
        "infosam evaluate",
        "Evaluate a trained InfoSAM adapter (or, with --adapter none, the zero-shot base SAM) on a dataset split. "
        "Any other --key value is a recipe key (data and metric settings).")
    parser.add_argument("--dataset_name_or_path", default=None, help="Dataset folder / Hub id (default: the recipe's).")
    parser.add_argument("--split", default=None, help="Split to score (default: the recipe's test_split, else 'test').")
    parser.add_argument("--recipe", default=None,
                        help="Recipe YAML giving the data and metric settings (default: ADAPTER/run_args.json's).")
    parser.add_argument("--output", default=None,
                        help=f"Results JSON (default: ADAPTER/{EVAL_RESULTS_NAME} for a local adapter; required otherwise).")
    parser.add_argument("--clicks", type=int, default=0, metavar="N",
                        help="Also simulate N corrective clicks per image: IoU/Dice after each click, NoC@85/90 "
                             f"and a {CLICK_CURVE_NAME} beside the results (default 0: off).")
    return parser


# The training keys of a run's run_args.json that the evaluation protocol uses.
RUN_TRAINING_KEYS = ("metric_input", "metric_set", "seed", "per_device_eval_batch_size", "dataloader_num_workers")


def run_recipe(adapter: str) -> dict[str, Any] | None:
    """The data and metric keys a local run recorded in ``ADAPTER/run_args.json`` (None when there is none)."""
    path = Path(adapter) / RUN_ARGS_NAME
    if adapter.lower() == "none" or not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
    except ValueError as err:
        raise UsageError(f"{path}: not valid JSON ({err})") from None
    known = {key["name"] for group in recipe_keys() if group["group"] == "DataArguments" for key in group["keys"]}
    values = {k: v for k, v in (recorded.get("data") or {}).items() if v is not None and k in known}
    training = recorded.get("training") or {}
    values.update({k: training[k] for k in RUN_TRAINING_KEYS if training.get(k) is not None})
    return values


def default_output_path(adapter: str) -> Path | None:
    """``ADAPTER/eval_results.json`` when the adapter is a local directory, else None (give an output path):
    results never land in the current folder unasked."""
    if adapter.lower() != "none" and Path(adapter).is_dir():
        return Path(adapter) / EVAL_RESULTS_NAME
    return None


def parse_evaluate_args(argv: Sequence[str]) -> tuple[argparse.Namespace, Any, Any, Any]:
    """Split ``argv`` into the command's options and recipe keys.

    Without ``--recipe`` and ``--dataset_name_or_path``, a local adapter's ``run_args.json`` gives the
    data and metric settings of its training run. Returns ``(options, data_args, model_args, config)``
    where ``config`` is the recipe's :class:`~infosam_hf.InfoSAMConfig` (metric_input, metric_set, seed ...).
    """
    options, overrides = build_parser().parse_known_args(list(argv))
    if options.adapter.lower() != "none":  # a missing adapter is named first, before what it would have recorded
        check_pretrained_name(options.adapter, "adapter", marker_file=ADAPTER_CONFIG_NAME)
    recorded = None
    if options.recipe is None and options.dataset_name_or_path is None:
        recorded = run_recipe(options.adapter)
        if recorded is None:
            raise UsageError("--dataset_name_or_path is required (or give a --recipe that names the dataset, or an "
                             "adapter folder whose run_args.json records it)")
    if options.clicks < 0:
        raise UsageError(f"--clicks must be >= 0, got {options.clicks}")
    if options.batch_size is not None and options.batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {options.batch_size}")
    recipe_argv = ([options.recipe] if options.recipe else []) + list(overrides)
    if options.dataset_name_or_path is not None:
        recipe_argv += ["--dataset_name_or_path", options.dataset_name_or_path]
    check_known_keys(recipe_argv, recipe_keys())  # a mistyped key: one line, before torch is imported
    from ..training import parse_train_args

    model_args, _, data_args, config = parse_train_args(recipe_argv, defaults=recorded)
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
        if not base_model:
            raise UsageError("--adapter none needs --base_model (the SAM checkpoint to evaluate zero-shot)")
    output = Path(options.output) if options.output else default_output_path(options.adapter)
    if output is None:
        raise UsageError(f"--adapter {options.adapter}: give --output FILE.json for the results (they are written "
                         "beside a local adapter, never into the current folder)")
    from ..evaluation.click_eval import plot_click_curve
    from ..evaluation.evaluate import evaluate_adapter, format_results_table
    results = evaluate_adapter(
        options.adapter, data_args, split=options.split, base_model=base_model, batch_size=options.batch_size,
        metric_input=config.metric_input, metric_set=config.metric_set, seed=config.seed, device=options.device,
        num_workers=config.dataloader_num_workers, progress=not config.disable_tqdm, clicks=options.clicks,
    )
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output, json.dumps(results, indent=2) + "\n")
    print(format_results_table(results, config.report_metrics))
    if options.clicks and results.get("click_iou"):
        plot_click_curve({options.adapter: results["click_iou"]}, output.with_name(CLICK_CURVE_NAME))
    print(f"\nResults written to {output}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 with ``error: ...`` on bad input)."""
    return run_main(_evaluate, argv)
