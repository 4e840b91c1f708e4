"""Corrective-click simulation, as in the interactive-segmentation literature (RITM, SAM, micro-sam).

The next click goes into the larger error region of the current prediction -- false negatives give a
positive (foreground) click, false positives a negative one -- at the pixel farthest from that region's
border (the maximum of its Euclidean distance transform). The image border counts as border. The choice
is deterministic: no random numbers, ties go to the first pixel in row-major order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.ndimage import distance_transform_edt

__all__ = ["NOC_THRESHOLDS", "click_metrics_summary", "is_click_metric", "next_click", "number_of_clicks"]

NOC_THRESHOLDS = (0.85, 0.90)
CLICK_METRIC_STARTS = ("click_", "noc@", "noc_failures@")


def is_click_metric(name: str, prefix: str = "") -> bool:
    """Whether the metric ``name`` (e.g. ``test_click_iou_3``, ``noc@90``; ``prefix`` such as ``"test_"`` removed
    first) is a click-by-click score, e.g. to keep those out of a table of the one-prompt metrics."""
    return name.removeprefix(prefix).startswith(CLICK_METRIC_STARTS)


def _interior_distance(region: np.ndarray) -> np.ndarray:
    """Distance of each pixel of ``region`` to the nearest pixel outside it, the image border counting as outside."""
    padded = np.pad(region, 1, constant_values=False)
    return distance_transform_edt(padded)[1:-1, 1:-1]


def next_click(pred: np.ndarray, gt: np.ndarray) -> tuple[int, int, bool] | None:
    """The corrective click for binary ``pred`` against binary ``gt`` (both (H, W)).

    Returns ``(x, y, positive)``: ``positive`` is True for a click on a missed foreground pixel (false
    negative), False for one on a wrong foreground pixel (false positive); None when ``pred == gt``.
    """
    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    if pred.shape != gt.shape:
        raise ValueError(f"prediction {pred.shape} and ground truth {gt.shape} differ in shape")
    fn_dist = _interior_distance(gt & ~pred)
    fp_dist = _interior_distance(pred & ~gt)
    positive = fn_dist.max(initial=0.0) >= fp_dist.max(initial=0.0)  # ties: add the missed object first
    dist = fn_dist if positive else fp_dist
    if dist.max(initial=0.0) <= 0:
        return None
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y), bool(positive)


def number_of_clicks(ious: Sequence[float], threshold: float) -> int:
    """NoC@threshold of one image: the first click (1-based) whose IoU reaches ``threshold``; the number of
    clicks simulated when none does (counted as a failure, as RITM and the NoC literature do)."""
    for click, iou in enumerate(ious, start=1):
        if iou >= threshold:
            return click
    return len(ious)


def click_metrics_summary(ious: np.ndarray, dices: np.ndarray,
                          thresholds: Sequence[float] = NOC_THRESHOLDS) -> dict[str, float | list[float]]:
    """Dataset-level click metrics from per-image curves ``ious`` / ``dices`` (num_images, num_clicks).

    Returns ``click_iou`` and ``click_dice`` (mean after each click), ``noc@85`` / ``noc@90`` (mean NoC)
    and ``noc_failures@85`` / ``@90`` (fraction of images never reaching the threshold).
    """
    ious, dices = np.asarray(ious, dtype=np.float64), np.asarray(dices, dtype=np.float64)
    results: dict[str, float | list[float]] = {
        "click_iou": ious.mean(0).tolist() if len(ious) else [],
        "click_dice": dices.mean(0).tolist() if len(dices) else [],
    }
    for threshold in thresholds:
        tag = f"{round(threshold * 100):d}"
        nocs = [number_of_clicks(row, threshold) for row in ious]
        failures = [bool((row < threshold).all()) for row in ious]
        results[f"noc@{tag}"] = float(np.mean(nocs)) if nocs else float("nan")
        results[f"noc_failures@{tag}"] = float(np.mean(failures)) if failures else float("nan")
    return results
