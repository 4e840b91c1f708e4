"""``scripts/evaluate.py``: score a trained adapter (or the zero-shot base SAM) on one dataset split.

::

    scripts/evaluate.py --adapter DIR_OR_REPO --dataset_name_or_path PATH [--split test] [--recipe R]
                        [--base_model B] [--batch_size N] [--output FILE] [--key value ...]

The data settings (``eval_prompt``, ``prompt_fg_points``, ``num_labels``, ``invert_mask``,
``mask_threshold``, ``max_eval_samples`` ...) and the metric settings (``metric_input``,
``metric_set``) come from the recipe ``R`` and can be overridden with ``--key value``, exactly as
for ``scripts/train.py``. Prompts are the data layer's deterministic evaluation prompts (seeded by
the recipe's ``seed`` and the example index), the input size is the model's, and the scores are
computed at each image's original resolution -- the same protocol as the evaluation at the end of
training, so the numbers are reproducible and comparable.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .arguments import DataArguments
from .cli import RecipeError, error_line
from .data import DataError, SamPromptCollator, open_source, take_first, with_sam_transform
from .evaluation import evaluate_segmentation, make_metrics, sam_logits
from .inference import BaseModelMismatchError, load_for_inference, model_image_size

logger = logging.getLogger(__name__)

__all__ = [
    "RESULTS_FILENAME",
    "UsageError",
    "error_line",
    "resolve_device",
    "build_parser",
    "parse_evaluate_args",
    "default_output_path",
    "evaluate_adapter",
    "format_results_table",
    "main",
]

RESULTS_FILENAME = "eval_results.json"
# Errors that are the user's input, reported as one ``error: ...`` line (exit status 2).
USER_ERRORS = (RecipeError, DataError, BaseModelMismatchError, ValueError, OSError)


class UsageError(ValueError):
    """A command-line problem (a missing or contradictory option)."""


def resolve_device(name: str | None) -> torch.device:
    """``auto`` (or None): CUDA when available, else CPU; otherwise the named device."""
    if not name or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="evaluate.py", allow_abbrev=False,
        description="Evaluate a trained InfoSAM adapter (or, with --adapter none, the zero-shot base SAM) on a "
                    "dataset split. Any other --key value is a recipe key (data and metric settings).",
    )
    parser.add_argument("--adapter", required=True,
                        help="Adapter directory or Hub repo id; 'none' evaluates the base model zero-shot.")
    parser.add_argument("--dataset_name_or_path", default=None,
                        help="Dataset folder / Hub id (default: the recipe's).")
    parser.add_argument("--split", default=None, help="Split to score (default: the recipe's test_split, else 'test').")
    parser.add_argument("--recipe", default=None, help="Recipe YAML giving the data and metric settings.")
    parser.add_argument("--base_model", default=None,
                        help="Base SAM (default: the adapter's base_model_name_or_path; with --adapter none: the "
                             "recipe's model_name_or_path).")
    parser.add_argument("--batch_size", type=int, default=None,
                        help="Images per forward pass (default: the recipe's per_device_eval_batch_size).")
    parser.add_argument("--output", default=None,
                        help=f"Results JSON (default: ADAPTER/{RESULTS_FILENAME} for a local adapter, else ./"
                             f"{RESULTS_FILENAME}).")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ... (default: auto).")
    return parser


def parse_evaluate_args(argv: Sequence[str]) -> tuple[argparse.Namespace, DataArguments, Any, Any]:
    """Split ``argv`` into the script's options and recipe keys.

    Returns ``(options, data_args, model_args, config)`` where ``config`` is the recipe's
    :class:`~infosam_hf.InfoSAMConfig` (metric_input, metric_set, seed, batch size ...).
    """
    from .pipeline import parse_train_args  # deferred: pipeline pulls in the trainer stack

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


def default_output_path(adapter: str) -> Path:
    """``ADAPTER/eval_results.json`` when the adapter is a local directory, else ``./eval_results.json``."""
    if adapter.lower() != "none" and Path(adapter).is_dir():
        return Path(adapter) / RESULTS_FILENAME
    return Path.cwd() / RESULTS_FILENAME


def _base_model_name(model: torch.nn.Module, given: str | None) -> str | None:
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and peft_config:
        return next(iter(peft_config.values())).base_model_name_or_path
    return given


def evaluate_adapter(adapter: str, data_args: DataArguments, *, split: str = "test",
                     base_model: str | None = None, batch_size: int = 8, metric_input: str = "probability",
                     metric_set: str = "paper", seed: int = 42, device: str | torch.device | None = None,
                     num_workers: int = 0, progress: bool = True) -> dict[str, Any]:
    """Score ``adapter`` (``"none"``: the base model alone) on ``split`` of ``data_args.dataset_name_or_path``.

    Returns the dataset-level metrics (keys as :class:`~infosam_hf.metrics.SegmentationMetrics`
    produces them) plus ``num_images``, ``split``, ``dataset``, ``eval_prompt``, ``adapter``,
    ``base_model``, ``metric_input`` and ``metric_set``.
    """
    if adapter.lower() == "none" and not base_model:
        raise UsageError("--adapter none needs --base_model (the SAM checkpoint to evaluate zero-shot)")
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    # fail on data before the model loads
    dataset = take_first(open_source(data_args).get_split(split), data_args.max_eval_samples)
    model = load_for_inference(adapter, base_model, device=device)
    image_size = model_image_size(model)
    dataset = with_sam_transform(dataset, data_args, image_size, train=False, seed=seed)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                         collate_fn=SamPromptCollator(), num_workers=num_workers)
    metrics = make_metrics(data_args.num_labels, data_args.ignore_index, metric_input, metric_set)

    def predict(batch: dict[str, Any]) -> torch.Tensor:
        batch = {key: value.to(device) if isinstance(value, torch.Tensor) else value for key, value in batch.items()}
        return sam_logits(model, batch)

    batches = tqdm(loader, desc=f"evaluating {split}", unit="batch", disable=not progress)
    scores = evaluate_segmentation(predict, batches, metrics, structure_loss_bce=None)
    results: dict[str, Any] = {key: float(value) for key, value in scores.items()}
    results.update({
        "num_images": metrics.num_images,
        "split": split,
        "dataset": data_args.dataset_name_or_path,
        "eval_prompt": data_args.eval_prompt,
        "adapter": adapter,
        "base_model": _base_model_name(model, base_model),
        "metric_input": metric_input,
        "metric_set": metric_set,
    })
    return results


def format_results_table(results: dict[str, Any]) -> str:
    """A two-column text table of the numeric metrics under a one-line header."""
    header = (f"{results['adapter']} on {results['dataset']} [{results['split']}]: {results['num_images']} images, "
              f"{results['eval_prompt']} prompts, metric_input={results['metric_input']}")
    meta = {"num_images", "split", "dataset", "eval_prompt", "adapter", "base_model", "metric_input", "metric_set"}
    rows = [(key, value) for key, value in results.items() if key not in meta and isinstance(value, float)]
    width = max([len("metric")] + [len(key) for key, _ in rows]) + 2
    lines = [header, f"  {'metric':<{width}}{'value':>10}", f"  {'-' * (width + 10)}"]
    for key, value in rows:
        lines.append(f"  {key:<{width}}{value:>10.4f}" if math.isfinite(value) else f"  {key:<{width}}{'nan':>10}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 with ``error: ...`` on bad input)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    try:
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
    except (UsageError, *USER_ERRORS) as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2
    print(format_results_table(results))
    print(f"\nResults written to {output}")
    return 0
