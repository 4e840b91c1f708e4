"""Click-by-click evaluation (``infosam evaluate --clicks N``): IoU / Dice after each simulated click, NoC@85/90.

Every click is simulated (see :mod:`infosam_hf.evaluation.clicks`): the first is a positive click at the
interior of the object, each next one in the larger error region of the current prediction, and the
previous low-resolution logits go back in as SAM's mask prompt. Clicks are placed on the model-input
frame; IoU and Dice are scored at each image's original resolution (logits > 0). Images without
foreground are not scored (no click can be placed). The image encoder runs once per batch, only the
prompt encoder and mask decoder once per click; every row is independent of the others, so the numbers
do not depend on the batch size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ..io import atomic_write_with
from .clicks import click_metrics_summary, next_click
from .loop import upsample_logits
from .metrics import logits_to_original

logger = logging.getLogger(__name__)

__all__ = ["click_curves", "evaluate_clicks", "flat_click_metrics", "plot_click_curve"]



def _iou_dice(pred: np.ndarray, gt: np.ndarray) -> tuple[float, float]:
    inter = float(np.logical_and(pred, gt).sum())
    total = float(pred.sum() + gt.sum())
    union = total - inter
    return (inter / union if union else 1.0), (2 * inter / total if total else 1.0)


@torch.no_grad()
def click_curves(model: nn.Module, batch: dict[str, Any], num_clicks: int,
                 device: torch.device | str = "cpu") -> tuple[np.ndarray, np.ndarray, list[list[tuple[int, int, bool]]]]:
    """Simulate ``num_clicks`` corrective clicks on every image of a collated evaluation batch.

    Returns ``(ious, dices, clicks)``: (B, num_clicks) arrays and each row's clicks ``(x, y, positive)``
    in the model-input frame. Rows whose label is empty get NaN scores and no clicks.
    """
    if num_clicks < 1:
        raise ValueError(f"num_clicks must be >= 1, got {num_clicks}")
    pixel_values = batch["pixel_values"].to(device)
    size = tuple(pixel_values.shape[-2:])
    rows = pixel_values.shape[0]
    gts = [(batch["labels"][i][: int(h), : int(w)] > 0).cpu().numpy()
           for i, (h, w) in enumerate(batch["reshaped_input_sizes"].tolist())]
    originals = [(torch.as_tensor(label) > 0).cpu().numpy() for label in batch["original_labels"]]
    ious = np.full((rows, num_clicks), np.nan)
    dices = np.full((rows, num_clicks), np.nan)
    clicks: list[list[tuple[int, int, bool]]] = [[] for _ in range(rows)]
    active = [i for i in range(rows) if gts[i].any()]
    if not active:
        return ious, dices, clicks
    embeddings = model.get_image_embeddings(pixel_values[active])
    preds = [np.zeros_like(gts[i]) for i in active]
    done = [False] * len(active)
    mask_prompt = None
    for click in range(num_clicks):
        for j, i in enumerate(active):
            chosen = None if done[j] else next_click(preds[j], gts[i])
            if chosen is None:  # already perfect: repeat the last click, keep the last score
                done[j] = True
                chosen = clicks[i][-1]
            clicks[i].append(chosen)
        points = torch.tensor([[[c[:2] for c in clicks[i]]] for i in active], dtype=torch.float32, device=device)
        labels = torch.tensor([[[int(c[2]) for c in clicks[i]]] for i in active], dtype=torch.long, device=device)
        outputs = model(image_embeddings=embeddings, input_points=points, input_labels=labels,
                        input_masks=mask_prompt, multimask_output=False)
        mask_prompt = outputs.pred_masks[:, 0]  # (B, 1, h, w) low-res logits: next round's mask prompt
        logits = upsample_logits(outputs.pred_masks, size)
        for j, i in enumerate(active):
            if done[j]:
                ious[i, click], dices[i, click] = ious[i, click - 1], dices[i, click - 1]
                continue
            h, w = gts[i].shape
            preds[j] = (logits[j, 0, :h, :w] > 0).cpu().numpy()
            original = logits_to_original(logits[j, 0], size, (h, w), originals[i].shape) > 0
            ious[i, click], dices[i, click] = _iou_dice(original.cpu().numpy(), originals[i])
    return ious, dices, clicks


def evaluate_clicks(model: nn.Module, batches: Iterable[dict[str, Any]], num_clicks: int,
                    device: torch.device | str = "cpu",
                    gather: Callable[[torch.Tensor], torch.Tensor] | None = None) -> dict[str, Any]:
    """Click-by-click scores over ``batches``: ``click_iou`` / ``click_dice`` (mean after each click),
    ``noc@85``, ``noc@90``, ``noc_failures@85/90``, ``num_clicks`` and ``click_images`` (images scored).

    Under distributed evaluation pass ``gather=accelerator.gather_for_metrics``: each image's curves travel as
    one row, in dataset order, so the scores are those of one process at any batch size."""
    all_ious, all_dices = [], []
    for batch in batches:
        ious, dices, _ = click_curves(model, batch, num_clicks, device)
        if gather is not None:
            rows = gather(torch.as_tensor(np.concatenate([ious, dices], axis=1), device=device))
            rows = rows.cpu().numpy()
            ious, dices = rows[:, :num_clicks], rows[:, num_clicks:]
        scored = ~np.isnan(ious[:, 0])
        all_ious.append(ious[scored])
        all_dices.append(dices[scored])
    ious = np.concatenate(all_ious) if all_ious else np.zeros((0, num_clicks))
    dices = np.concatenate(all_dices) if all_dices else np.zeros((0, num_clicks))
    results: dict[str, Any] = dict(click_metrics_summary(ious, dices))
    results.update({"num_clicks": num_clicks, "click_images": len(ious)})
    return results


def flat_click_metrics(results: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The scores of :func:`evaluate_clicks` as scalar metrics, as a trainer logs them: ``click_iou`` becomes
    ``click_iou_1`` ... ``click_iou_N`` (after click k), likewise ``click_dice``; ``noc@85``, ``noc@90``,
    ``noc_failures@85/90`` and ``click_images`` keep their names. ``prefix`` (e.g. ``"test"``) leads each key."""
    lead = f"{prefix}_" if prefix else ""
    flat: dict[str, float] = {}
    for key, value in results.items():
        if key == "num_clicks":
            continue
        if isinstance(value, list):
            flat.update({f"{lead}{key}_{click}": float(v) for click, v in enumerate(value, start=1)})
        else:
            flat[f"{lead}{key}"] = float(value)
    return flat


def plot_click_curve(curves: dict[str, list[float]], path: str | Path) -> Path | None:
    """Plot mean IoU after each click for each named curve (e.g. ``{"adapter": [...], "base": [...]}``)
    to the PNG ``path``, with the 85 / 90 % lines. Returns the path, or None without matplotlib."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed, so %s was not written (pip install infosam-hf[plot])", path)
        return None
    figure = Figure(figsize=(5.0, 3.6), dpi=100, layout="constrained")
    canvas = FigureCanvasAgg(figure)
    ax = figure.subplots()
    for name, values in curves.items():
        ax.plot(range(1, len(values) + 1), values, marker="o", markersize=3, label=name)
    for level in (0.85, 0.90):
        ax.axhline(level, color="grey", linestyle=":", linewidth=0.8)
    ax.set(xlabel="clicks", ylabel="mean IoU", title="IoU after each click", ylim=(0, 1))
    ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_with(path, lambda temporary: canvas.print_png(temporary))
    return path
