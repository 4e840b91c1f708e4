"""Streamed evaluation: run SAM over a dataloader and score at the original image resolution."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .losses import structure_loss
from .metrics import SegmentationMetrics, logits_to_original

__all__ = ["PROMPT_KEYS", "upsample_logits", "sam_logits", "box_fill_logits", "evaluate_segmentation",
           "reduce_metrics"]

PROMPT_KEYS = ("input_boxes", "input_points", "input_labels")


def upsample_logits(pred_masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """SAM's low-res mask logits (B, 1, 1, h, w) or (B, 1, h, w) bilinearly upsampled to ``size`` (float32)."""
    if pred_masks.dim() == 5:
        pred_masks = pred_masks[:, 0]
    return F.interpolate(pred_masks.float(), size=size, mode="bilinear", align_corners=False)


def sam_logits(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """Single-mask logits (B, 1, S, S) of ``model`` for a collated batch, upsampled to the input size."""
    prompts = {key: batch[key] for key in PROMPT_KEYS if key in batch}
    outputs = model(pixel_values=batch["pixel_values"], multimask_output=False, **prompts)
    return upsample_logits(outputs.pred_masks, batch["pixel_values"].shape[-2:])


def box_fill_logits(batch: dict[str, Any]) -> torch.Tensor:
    """The trivial baseline: the prompt box filled as the mask (logit +20 inside, -20 outside)."""
    if "input_boxes" not in batch:
        raise ValueError("the box-fill baseline needs box prompts (eval_prompt: box)")
    size = batch["pixel_values"].shape[-1]
    boxes = batch["input_boxes"][:, 0]
    coords = torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5
    inside_x = (coords[None] >= boxes[:, 0:1]) & (coords[None] <= boxes[:, 2:3] + 1)
    inside_y = (coords[None] >= boxes[:, 1:2]) & (coords[None] <= boxes[:, 3:4] + 1)
    inside = inside_y[:, :, None] & inside_x[:, None, :]
    return (inside.float() * 40 - 20).unsqueeze(1)


def reduce_metrics(metrics: SegmentationMetrics, accelerator=None) -> None:
    """Sum a metrics accumulator's state over processes (no-op on one process)."""
    if accelerator is None or accelerator.num_processes == 1:
        return
    keys = list(metrics.sums)
    state = torch.tensor([float(metrics.num_images)] + [metrics.sums[k] for k in keys]
                         + metrics.confusion.astype(np.float64).ravel().tolist(),
                         dtype=torch.float64, device=accelerator.device)
    state = accelerator.reduce(state, reduction="sum").cpu().numpy()
    metrics.num_images = int(round(state[0]))
    for i, key in enumerate(keys):
        metrics.sums[key] = float(state[1 + i])
    metrics.confusion = np.rint(state[1 + len(keys):]).astype(np.int64).reshape(metrics.confusion.shape)


@torch.no_grad()
def evaluate_segmentation(
    predict: Callable[[dict[str, Any]], torch.Tensor],
    batches: Iterable[dict[str, Any]],
    metrics: SegmentationMetrics,
    structure_loss_bce: str | None = "weighted",
    progress: bool = False,
    description: str = "eval",
) -> dict[str, float]:
    """Score ``predict(batch) -> (B, 1, S, S) logits`` over ``batches``; returns metrics and ``loss``.

    Logits are cropped of their padding and resized to each image's original size before scoring
    against ``original_labels``. Only running sums are kept, never masks.
    """
    loss_total, loss_batches = 0.0, 0
    iterator = tqdm(batches, desc=description, leave=False) if progress else batches
    for batch in iterator:
        logits = predict(batch)
        if structure_loss_bce is not None and metrics.binary:
            loss_total += float(structure_loss(logits, batch["labels"].unsqueeze(1).float(), structure_loss_bce))
            loss_batches += 1
        size = logits.shape[-1]
        preds = [
            logits_to_original(logits[i, 0], size, batch["reshaped_input_sizes"][i], batch["original_sizes"][i]).cpu()
            for i in range(logits.shape[0])
        ]
        metrics.update(preds, [gt.cpu() for gt in batch["original_labels"]])
    results = metrics.compute()
    if loss_batches:
        results["loss"] = loss_total / loss_batches
    return results
