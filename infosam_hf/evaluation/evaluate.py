"""Score a trained adapter (or the zero-shot base SAM) on one dataset split (``infosam evaluate``).

The data settings (``eval_prompt``, ``prompt_fg_points``, ``num_labels``, ``invert_mask``,
``mask_threshold``, ``max_eval_samples`` ...) and the metric settings (``metric_input``,
``metric_set``) come from the recipe ``R`` and can be overridden with ``--key value``, exactly as
for ``infosam train``. Prompts are the data layer's deterministic evaluation prompts (seeded by
the recipe's ``seed`` and the example index), the input size is the model's, and the scores are
computed at each image's original resolution -- the same protocol as the evaluation at the end of
training, so the numbers are reproducible and comparable.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import DataArguments, SamPromptCollator, open_source, take_first, validate_data, with_sam_transform
from ..data.sources import SYNTHETIC
from ..errors import UsageError
from ..models.inference import base_beside_adapter, load_for_inference, model_image_size, resolve_device
from ..models.processor import read_input_settings
from ..models.multiclass import sam_num_classes
from ..models.sam2 import keeps_aspect_ratio
from .click_eval import evaluate_clicks
from .loop import evaluate_segmentation, make_metrics, sam_logits

logger = logging.getLogger(__name__)

__all__ = ["evaluate_adapter", "format_results_table"]



def _base_model_name(model: torch.nn.Module, given: str | None, adapter: str) -> str | None:
    """The base the scores are of: a Hub id, or the local folder (a run's ``base_model/`` resolved)."""
    peft_config = getattr(model, "peft_config", None)
    if isinstance(peft_config, dict) and peft_config:
        recorded = base_beside_adapter(adapter, next(iter(peft_config.values())).base_model_name_or_path)
        return str(Path(recorded).resolve()) if recorded and Path(recorded).exists() else recorded
    return given


def evaluate_adapter(adapter: str, data_args: DataArguments, *, split: str = "test",
                     base_model: str | None = None, batch_size: int = 8, metric_input: str = "probability",
                     metric_set: str = "paper", seed: int = 42, device: str | torch.device | None = None,
                     num_workers: int = 0, progress: bool = True, clicks: int = 0) -> dict[str, Any]:
    """Score ``adapter`` (``"none"``: the base model alone) on ``split`` of ``data_args.dataset_name_or_path``.

    Returns the dataset-level metrics (keys as :class:`~infosam_hf.evaluation.metrics.SegmentationMetrics`
    produces them) plus ``num_images``, ``split``, ``dataset``, ``eval_prompt``, ``adapter``,
    ``base_model``, ``metric_input`` and ``metric_set``; with ``clicks=N`` also the click-by-click scores
    of :func:`~infosam_hf.evaluation.click_eval.evaluate_clicks` (binary models only).
    """
    if adapter.lower() == "none" and not base_model:
        raise UsageError("--adapter none needs --base_model (the SAM checkpoint to evaluate zero-shot)")
    device = resolve_device(device)
    data_args = _follow_adapter_inputs(data_args, adapter)
    # fail on data before the model loads
    dataset = take_first(open_source(data_args).get_split(split), data_args.max_eval_samples)
    validate_data(data_args, {split: dataset}, progress=progress)
    model = load_for_inference(adapter, base_model, device=device)
    data_args, reload = _follow_model_classes(data_args, sam_num_classes(model))
    if reload and data_args.dataset_name_or_path == SYNTHETIC:  # generated masks depend on num_labels
        dataset = take_first(open_source(data_args).get_split(split), data_args.max_eval_samples)
    image_size = model_image_size(model)
    dataset = with_sam_transform(dataset, data_args, image_size, train=False, seed=seed,
                                 keep_aspect_ratio=keeps_aspect_ratio(model))
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
        "base_model": _base_model_name(model, base_model, adapter),
        "metric_input": metric_input,
        "metric_set": metric_set,
    })
    if clicks:
        if not metrics.binary:
            raise UsageError("--clicks needs a binary (prompted) model, not a multi-class one")
        batches = tqdm(loader, desc=f"{clicks} clicks on {split}", unit="batch", disable=not progress)
        results.update(evaluate_clicks(model, batches, clicks, device))
    return results


def _follow_adapter_inputs(data_args: DataArguments, adapter: str) -> DataArguments:
    """The data settings with the input preparation the adapter's saved image processor records (its channel
    order, padding rule, fixed input frame and normalisation), which win over the recipe's."""
    settings = read_input_settings(adapter)
    changed = {key: value for key, value in settings.items()
               if key != "dynamic_input_size" and getattr(data_args, key) != value}
    if changed:
        logger.info("Preparing inputs as %s's image processor records: %s", adapter,
                    ", ".join(f"{key}={value}" for key, value in changed.items()))
    return dataclasses.replace(data_args, **changed)


def _follow_model_classes(data_args: DataArguments, classes: int) -> tuple[DataArguments, bool]:
    """The data settings for a model with ``classes`` channels: a multi-class model reads class ids
    (``num_labels`` left at 1 is raised to the model's) and takes no prompts. Returns the settings and
    whether ``num_labels`` changed."""
    if classes == data_args.num_labels:
        if classes > 1 and data_args.eval_prompt != "none":
            data_args = dataclasses.replace(data_args, eval_prompt="none")
        return data_args, False
    if data_args.num_labels != 1 or classes == 1:
        raise UsageError(f"num_labels={data_args.num_labels}, but the model predicts {classes} class channel(s)")
    return dataclasses.replace(data_args, num_labels=classes, eval_prompt="none"), True


def format_results_table(results: dict[str, Any], leading: list[str] | None = None) -> str:
    """A two-column text table of the numeric metrics under a one-line header; the metrics named in
    ``leading`` (a recipe's ``report_metrics``) come first."""
    header = (f"{results['adapter']} on {results['dataset']} [{results['split']}]: {results['num_images']} images, "
              f"{'no' if results['eval_prompt'] == 'none' else results['eval_prompt']} prompts, metric_input={results['metric_input']}")
    meta = {"num_images", "split", "dataset", "eval_prompt", "adapter", "base_model", "metric_input", "metric_set",
            "num_clicks", "click_images"}
    rows = [(key, value) for key, value in results.items() if key not in meta and isinstance(value, float)]
    order = {key: i for i, key in enumerate(leading or [])}
    rows.sort(key=lambda row: order.get(row[0], len(order)))  # stable: the others keep their order
    width = max([len("metric")] + [len(key) for key, _ in rows]) + 2
    lines = [header, f"  {'metric':<{width}}{'value':>10}", f"  {'-' * (width + 10)}"]
    for key, value in rows:
        lines.append(f"  {key:<{width}}{value:>10.4f}" if math.isfinite(value) else f"  {key:<{width}}{'nan':>10}")
    if results.get("click_iou"):
        lines.append(f"  IoU after each click ({results['click_images']} images): "
                     + " ".join(f"{value:.3f}" for value in results["click_iou"]))
    return "\n".join(lines)
