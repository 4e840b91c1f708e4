"""Streamed evaluation: run SAM over a dataloader and score at the original image resolution."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..data.collator import OBJECT_CATEGORY_KEY, OBJECT_IMAGE_KEY, PAD_POINT_LABEL
from ..losses import segmentation_loss
from ..models.multiclass import sam_num_classes
from .metrics import SegmentationMetrics, logits_to_original
from .object_scores import OBJECT_SCORE_KEYS, ObjectScores, category_names_of

__all__ = ["PROMPT_KEYS", "METRIC_SETS", "make_metrics", "upsample_logits", "prompt_groups", "sam_logits",
           "box_fill_logits", "evaluate_segmentation"]

PROMPT_KEYS = ("input_boxes", "input_points", "input_labels")
MetricSet = Literal["paper", "iou"]
METRIC_SETS: tuple[str, ...] = get_args(MetricSet)


def make_metrics(num_labels: int = 1, ignore_index: int = 255, metric_input: str = "probability",
                 metric_set: str = "paper") -> SegmentationMetrics:
    """A streamed accumulator for a recipe's ``metric_set``: ``paper`` (IoU, Dice, S, E, wF, MAE, mIoU) or
    ``iou`` (IoU, Dice, mIoU only: fast)."""
    return SegmentationMetrics(num_labels=num_labels, ignore_index=ignore_index, metric_input=metric_input,
                               sod_metrics=metric_set == "paper")


def upsample_logits(pred_masks: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """SAM's low-res mask logits (B, 1, 1, h, w) or (B, 1, h, w) bilinearly upsampled to ``size`` (float32)."""
    if pred_masks.dim() == 5:
        pred_masks = pred_masks[:, 0]
    return F.interpolate(pred_masks.float(), size=size, mode="bilinear", align_corners=False)


def _point_groups(rows: torch.Tensor, points: torch.Tensor, labels: torch.Tensor) -> list[tuple[torch.Tensor, dict]]:
    """Rows grouped by their number of real (unpadded) points, each group cut to that number: a padded
    point is an extra zero token in SAM's decoder, so it would change a row's mask."""
    counts = (labels[rows] != PAD_POINT_LABEL).sum(-1).view(-1)
    groups = []
    for count in counts.unique().tolist():
        group = rows[counts == count]
        groups.append((group, {"input_points": points[group][:, :, :count],
                               "input_labels": labels[group][:, :, :count]}))
    return groups


def prompt_groups(batch: dict[str, Any]) -> list[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
    """Split a collated batch into (rows, SAM prompt kwargs) groups that each get one decoder pass, so
    every row is prompted as it would be alone: boxes, and points by number of real points."""
    rows = torch.arange(batch["pixel_values"].shape[0], device=batch["pixel_values"].device)
    point_rows = rows
    groups = []
    if "point_prompted" in batch:  # evaluation batch holding both kinds (see SamPromptCollator)
        chosen = batch["point_prompted"].to(rows.device)
        groups.append((rows[~chosen], {"input_boxes": batch["input_boxes"][rows[~chosen]]}))
        point_rows = rows[chosen]
    elif "input_points" not in batch:
        return [(rows, {key: batch[key] for key in PROMPT_KEYS if key in batch})]
    groups += _point_groups(point_rows, batch["input_points"], batch["input_labels"])
    return [(rows, prompts) for rows, prompts in groups if len(rows)]


def sam_logits(model: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
    """Logits of ``model`` for a collated batch, upsampled to the input size: (B, 1, S, S) single-mask
    logits, or (B, C, S, S) class logits for a multi-class head.

    Each row is prompted as it would be alone, so scores do not depend on the batch size: the image
    encoder runs once, the mask decoder once per prompt group (see :func:`prompt_groups`).
    """
    size = batch["pixel_values"].shape[-2:]
    groups = prompt_groups(batch)
    multimask = sam_num_classes(model) > 1
    if len(groups) == 1:
        outputs = model(pixel_values=batch["pixel_values"], multimask_output=multimask, **groups[0][1])
        return upsample_logits(outputs.pred_masks, size)
    embeddings = model.get_image_embeddings(batch["pixel_values"])
    logits = None
    for rows, prompts in groups:
        part = upsample_logits(model(image_embeddings=embeddings[rows], multimask_output=multimask, **prompts).pred_masks,
                               size)
        if logits is None:
            logits = part.new_empty((embeddings.shape[0], *part.shape[1:]))
        logits[rows] = part
    return logits


def box_fill_logits(batch: dict[str, Any]) -> torch.Tensor:
    """The trivial baseline: each example's prompt box filled as the mask (logit +20 inside, -20
    outside); an example with an empty mask predicts background."""
    if "prompt_boxes" not in batch:
        raise ValueError("the box-fill baseline needs box prompts (eval_prompt: box)")
    height, width = batch["pixel_values"].shape[-2:]
    boxes = batch["prompt_boxes"]
    xs = torch.arange(width, device=boxes.device, dtype=torch.float32) + 0.5
    ys = torch.arange(height, device=boxes.device, dtype=torch.float32) + 0.5
    inside_x = (xs[None] >= boxes[:, 0:1]) & (xs[None] <= boxes[:, 2:3] + 1)
    inside_y = (ys[None] >= boxes[:, 1:2]) & (ys[None] <= boxes[:, 3:4] + 1)
    inside = inside_y[:, :, None] & inside_x[:, None, :] & batch["has_foreground"].view(-1, 1, 1)
    return (inside.float() * 40 - 20).unsqueeze(1)


def _state_row(metrics: SegmentationMetrics, loss: float) -> list[float]:
    """An accumulator's state (image count, metric sums, confusion counts) plus a loss, as one row."""
    return ([float(metrics.num_images), loss] + [metrics.sums[k] for k in metrics.sums]
            + metrics.confusion.astype(np.float64).ravel().tolist())


def _add_state(metrics: SegmentationMetrics, row: np.ndarray) -> float:
    """Add a summed state row into ``metrics``; returns the row's loss sum."""
    keys = list(metrics.sums)
    metrics.num_images += int(round(row[0]))
    for i, key in enumerate(keys):
        metrics.sums[key] += float(row[2 + i])
    metrics.confusion += np.rint(row[2 + len(keys):]).astype(np.int64).reshape(metrics.confusion.shape)
    return float(row[1])


def _object_rows(rows: torch.Tensor, metrics: SegmentationMetrics, batch: dict[str, Any],
                 gather: Callable[[torch.Tensor], torch.Tensor] | None) -> np.ndarray:
    """(image id, category, iou, dice) per object row of a batch of an instance set (NaN for a score not kept)."""
    keys = list(metrics.sums)
    scores = [rows[:, 2 + keys.index(key)] if key in keys else torch.full_like(rows[:, 0], float("nan"))
              for key in OBJECT_SCORE_KEYS]
    ids = torch.stack([batch[OBJECT_IMAGE_KEY], batch[OBJECT_CATEGORY_KEY]], 1).to(rows.device, torch.float64)
    if gather is not None:
        ids = gather(ids)
    return torch.cat([ids, torch.stack(scores, 1)], 1).cpu().numpy()


@torch.no_grad()
def evaluate_segmentation(
    predict: Callable[[dict[str, Any]], torch.Tensor],
    batches: Iterable[dict[str, Any]],
    metrics: SegmentationMetrics,
    structure_loss_bce: str | None = "weighted",
    progress: bool = False,
    description: str = "eval",
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    seg_loss: str = "structure",
) -> dict[str, float]:
    """Score ``predict(batch) -> (B, 1 or C, H, W) logits`` over ``batches``; returns metrics and ``loss``.

    Logits are cropped of their padding and resized to each image's original size before scoring
    against ``original_labels``. Only running sums are kept, never masks. Under distributed
    evaluation pass ``gather=accelerator.gather_for_metrics``: each image's contribution travels as
    one row, so the samples repeated to even out the last batches are dropped, not counted twice.

    An instance set's object rows (binary) are also scored per image (``image_iou``, ``image_dice``: the mean
    over images of each image's object mean) and, with several categories, per category (``iou_cat_<name>``);
    ``iou`` / ``dice`` are then means over objects.
    """
    loss_total = 0.0
    names = category_names_of(batches) if metrics.binary else None
    objects = ObjectScores(names) if names is not None else None
    iterator = tqdm(batches, desc=description, leave=False) if progress else batches
    with_loss = structure_loss_bce is not None
    for batch in iterator:
        logits = predict(batch)
        size = tuple(logits.shape[-2:])
        if not with_loss:
            losses = torch.zeros(logits.shape[0])
        else:
            losses = segmentation_loss(logits, batch["labels"], metrics.num_labels, kind=seg_loss,
                                       bce=structure_loss_bce, ignore_index=metrics.ignore_index, reduction="none")
        rows = []
        for i in range(logits.shape[0]):
            image_metrics = SegmentationMetrics(metrics.num_labels, metrics.ignore_index, metrics.metric_input,
                                                metrics.sod_metrics)  # this image's contribution alone
            pred = logits_to_original(logits[i, 0] if metrics.binary else logits[i], size,
                                      batch["reshaped_input_sizes"][i], batch["original_sizes"][i])
            image_metrics.update([pred.cpu()], [batch["original_labels"][i].cpu()])
            rows.append(_state_row(image_metrics, float(losses[i])))
        rows = torch.tensor(rows, dtype=torch.float64, device=logits.device)
        if gather is not None:
            rows = gather(rows)
        for row in rows.cpu().numpy():  # row by row: the same sums in the same order at any batch size
            loss_total += _add_state(metrics, row)
        if objects is not None and OBJECT_IMAGE_KEY in batch:
            objects.add(_object_rows(rows, metrics, batch, gather))
    results = metrics.compute()
    if objects is not None:
        results.update(objects.compute(tuple(metrics.sums)))
    if with_loss and metrics.num_images:
        results["loss"] = loss_total / metrics.num_images
    return results
