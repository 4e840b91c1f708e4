"""G-SAM's two test numbers, re-implemented from its ``train.py`` and ``test.py`` (``protocol: gsam``).

* ``train.py`` (the checkpoint pick and the paper's table): a confusion matrix over all images, per-class IoU
  ``(diag + 1e-7) / (row + col - diag - 1e-7)``, averaged over classes (binary: background and foreground). A class
  absent from both prediction and label scores ``1e-7 / -1e-7 = -1``; :func:`gsam_class_iou` reproduces that only
  when asked (``absent_minus_one``), otherwise such a class is left out, as the project's ``miou`` does.
* ``test.py``: a *soft* IoU per evaluation batch (softmax probabilities against one-hot labels,
  ``inter / (Σp² + Σy² - inter)`` per class, averaged over classes), then averaged over batches. It depends on the
  batch size (4 in G-SAM, last partial batch dropped).
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["GSAM_EPS", "SOFT_IOU_KEY", "ABSENT_MINUS_ONE_KEY", "ABSENT_CLASS_MODES", "GsamScores", "gsam_class_iou",
           "soft_batch_iou", "format_gsam_scores"]

GSAM_EPS = 1e-7
SOFT_IOU_KEY = "gsam_soft_iou"  # test.py's number
ABSENT_MINUS_ONE_KEY = "gsam_miou_absent_minus_one"  # train.py's mIoU with absent classes at -1 (labelled option)
AbsentClassMode = Literal["skip", "minus_one"]
ABSENT_CLASS_MODES: tuple[str, ...] = get_args(AbsentClassMode)


def gsam_class_iou(confusion: np.ndarray, absent_minus_one: bool = False) -> np.ndarray:
    """``train.py``'s per-class IoU from a (label rows × prediction columns) confusion matrix. Classes absent from
    both are NaN (left out of a NaN-mean), or -1 as ``train.py`` computes them with ``absent_minus_one``."""
    conf = np.asarray(confusion, dtype=np.float64)
    diag = np.diag(conf)
    denominator = conf.sum(axis=1) + conf.sum(axis=0) - (diag + GSAM_EPS)
    iou = (diag + GSAM_EPS) / denominator.astype(np.float32)
    absent = (conf.sum(axis=1) + conf.sum(axis=0)) == 0
    return np.where(absent, -1.0 if absent_minus_one else np.nan, iou)


def soft_batch_iou(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int | None = None) -> float:
    """``test.py``'s soft IoU of one batch: ``logits`` (B, C, H, W) class logits, or (B, 1, H, W) binary logits
    (read as the two classes background / foreground: ``test.py`` itself cannot score binary runs, its
    ``one_hot`` of float labels fails); ``labels`` (B, H, W) class ids. Pixels labelled ``ignore_index`` are left
    out (``test.py``'s ``one_hot`` would fail on them)."""
    logits = logits.float()
    if logits.shape[1] == 1:
        probs = torch.cat([1 - torch.sigmoid(logits), torch.sigmoid(logits)], dim=1)
    else:
        probs = F.softmax(logits, dim=1)
    num_classes = probs.shape[1]
    labels = labels.long()
    valid = (labels >= 0) & (labels < num_classes)
    if ignore_index is not None:
        valid &= labels != ignore_index
    onehot = F.one_hot(labels.clamp(0, num_classes - 1), num_classes).permute(0, 3, 1, 2).float()
    keep = valid.unsqueeze(1).float()
    probs, onehot = probs * keep, onehot * keep
    dims = (0, 2, 3)
    inter = (probs * onehot).sum(dims)
    union = (probs * probs).sum(dims) + (onehot * onehot).sum(dims) - inter
    return float(((inter + GSAM_EPS) / (union + GSAM_EPS)).mean())


class GsamScores:
    """Collects ``test.py``'s soft IoU batch by batch; :meth:`compute` gives the labelled G-SAM numbers."""

    def __init__(self, ignore_index: int | None = None):
        self.ignore_index = ignore_index
        self.batch_ious: list[float] = []

    def add_batch(self, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """One evaluation batch: logits (B, 1 or C, H, W) at the labels' (B, H, W) resolution."""
        self.batch_ious.append(soft_batch_iou(logits, labels, self.ignore_index))

    def compute(self, confusion: np.ndarray, absent_minus_one: bool = False, gather=None) -> dict[str, float]:
        """``gsam_soft_iou`` (mean over the batches of every process) and, with ``absent_minus_one``,
        ``gsam_miou_absent_minus_one`` from the (already gathered) confusion matrix."""
        values = torch.tensor(self.batch_ious, dtype=torch.float64)
        if gather is not None:
            values = gather(values)
        out = {SOFT_IOU_KEY: float(values.mean()) if values.numel() else float("nan")}
        if absent_minus_one:
            out[ABSENT_MINUS_ONE_KEY] = float(gsam_class_iou(confusion, absent_minus_one=True).mean())
        return out


GSAM_LABELS = {"miou": "mIoU, hard (G-SAM train.py: confusion matrix, the paper's table)",
               SOFT_IOU_KEY: "soft IoU (G-SAM test.py: per batch, averaged over batches)",
               ABSENT_MINUS_ONE_KEY: "mIoU, absent classes at -1 (G-SAM train.py, as coded)"}


def format_gsam_scores(metrics: dict[str, float], prefix: str = "test_") -> str:
    """G-SAM's test numbers side by side, one labelled line each."""
    rows = [(label, metrics[prefix + key]) for key, label in GSAM_LABELS.items() if prefix + key in metrics]
    width = max(len(label) for label, _ in rows) + 2
    return "\n".join(f"{label:<{width}}{value:.4f}" for label, value in rows)
