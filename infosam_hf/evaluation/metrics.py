"""Segmentation metrics for SAM fine-tuning, following the InfoSAM evaluation protocol.

Binary (one sigmoid mask per image), per image:

* ``iou`` / ``dice`` -- InfoSAM definition: prediction and GT are both thresholded at each of
  0.1, 0.3, 0.5, 0.7, 0.9; ``IoU = (|P∩G| + 1e-6) / (|P∪G| + 1e-6)`` and
  ``Dice = (2|P∩G| + 1e-4) / (|P| + |G| + 1e-4)``, averaged over the five thresholds.
* ``iou@0.5`` / ``dice@0.5`` -- the same formulas at the single threshold 0.5.
* ``s_measure`` (alpha 0.5), ``e_measure`` (adaptive threshold ``min(2·mean, 1)``),
  ``weighted_f_measure`` (beta² = 0.3) and ``mae``, computed with :mod:`py_sod_metrics`' per-sample
  routines on the float map in [0, 1] (no uint8 quantisation, no min-max rescaling -- as in the
  official InfoSAM evaluation) against ``gt > 0.5``.

Dataset level: per-image metrics are averaged over images (paper convention); ``miou`` is the
mean of background and foreground IoU from one 2×2 confusion matrix accumulated over the whole
set at threshold 0.5 (G-SAM's number). Multi-class: ``miou`` / ``iou_class_{k}`` /
``pixel_accuracy`` from one ``num_labels × num_labels`` confusion matrix.

``metric_input`` selects how binary mask logits become metric inputs:

* ``"probability"`` (default): ``sigmoid(logits)`` feeds every metric. Thresholds are applied
  in logit space (``logits > logit(t)``), which is equivalent and avoids the sigmoid when only
  IoU/Dice are needed.
* ``"official_logits"``: reproduces the official InfoSAM evaluation quirks -- the 0.1..0.9
  IoU/Dice thresholds are applied to the RAW logits (GT thresholded as usual) and the SOD metrics
  receive ``clip(logits, 0, 1)``. ``iou@0.5``/``dice@0.5`` and ``miou`` still use
  ``sigmoid(logits) > 0.5``, i.e. ``logits > 0``.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, get_args

import numpy as np
import torch
import torch.nn.functional as F
from py_sod_metrics import Emeasure, Smeasure, WeightedFmeasure

from ..choices import check_choice

logger = logging.getLogger(__name__)

__all__ = [
    "CLASS_IOU_PREFIX",
    "THRESHOLDS",
    "METRIC_INPUTS",
    "BINARY_IMAGE_KEYS",
    "compute_binary_metrics",
    "binary_metrics_from_logits",
    "logits_to_original",
    "miou_from_confusion",
    "SegmentationMetrics",
]

THRESHOLDS: tuple[float, ...] = (0.1, 0.3, 0.5, 0.7, 0.9)
MetricInput = Literal["probability", "official_logits"]
METRIC_INPUTS: tuple[str, ...] = get_args(MetricInput)
IOU_KEYS: tuple[str, ...] = ("iou", "dice", "iou@0.5", "dice@0.5")
SOD_KEYS: tuple[str, ...] = ("s_measure", "e_measure", "weighted_f_measure", "mae")
BINARY_IMAGE_KEYS: tuple[str, ...] = IOU_KEYS + SOD_KEYS

CLASS_IOU_PREFIX = "iou_class_"  # multi-class results: iou_class_0 ... iou_class_{C-1}
_IOU_SMOOTH = 1e-6
_DICE_SMOOTH = 1e-4
_LOGIT_THRESHOLDS = tuple(math.log(t / (1.0 - t)) for t in THRESHOLDS)
_IDX_05 = THRESHOLDS.index(0.5)


class _Smeasure(Smeasure):
    """py_sod_metrics' S-measure, except that an empty quadrant scores 0 instead of NaN.

    When the GT centroid falls on the last row/column one quadrant is empty; its weight is 0, but
    upstream computes ``nan * 0``. Every non-NaN upstream result is unchanged.
    """

    def ssim(self, pred: np.ndarray, gt: np.ndarray) -> float:
        if pred.size == 0:
            return 0.0
        return super().ssim(pred, gt)


_SMEASURE = _Smeasure(alpha=0.5)
_WFMEASURE = WeightedFmeasure(beta=0.3)  # upstream's ``beta`` enters the formula as beta²


# ----------------------------------------------------------------------------- helpers


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()
        return x.cpu().numpy()
    return np.asarray(x)


def _as_float(x: np.ndarray) -> np.ndarray:
    if x.dtype in (np.float32, np.float64):
        return x
    return x.astype(np.float32)


def _squeeze_mask(x: np.ndarray, what: str) -> np.ndarray:
    while x.ndim > 2 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 2:
        raise ValueError(f"{what}: expected one H×W (or 1×H×W) mask per image, got shape {x.shape}")
    return x


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:
        x = x.copy()
    return torch.from_numpy(x).sigmoid().numpy()


def _binarize(gt: np.ndarray, t: float, cache: dict) -> np.ndarray:
    """``gt > t``; bool/integer GT is binary already, so one mask serves every threshold."""
    if gt.dtype == np.bool_:
        return gt
    key = None if np.issubdtype(gt.dtype, np.integer) else t
    if key not in cache:
        cache[key] = gt > (0 if key is None else t)
    return cache[key]


def _threshold_counts(score, gt, score_thrs, gt_thrs):
    """|P_t|, |G_t| and |P_t ∩ G_t| for every (score, gt) threshold pair; one compare per pair."""
    k = len(score_thrs)
    n_pred = np.empty(k, np.int64)
    n_gt = np.empty(k, np.int64)
    n_inter = np.empty(k, np.int64)
    pbuf = np.empty(score.shape, np.bool_)
    ibuf = np.empty(score.shape, np.bool_)
    cache: dict = {}
    gt_counts: dict = {}
    for i, (ts, tg) in enumerate(zip(score_thrs, gt_thrs)):
        g = _binarize(gt, tg, cache)
        np.greater(score, score.dtype.type(ts), out=pbuf)
        np.logical_and(pbuf, g, out=ibuf)
        n_pred[i] = np.count_nonzero(pbuf)
        n_inter[i] = np.count_nonzero(ibuf)
        if id(g) not in gt_counts:
            gt_counts[id(g)] = np.count_nonzero(g)
        n_gt[i] = gt_counts[id(g)]
    return n_pred, n_gt, n_inter


def _iou_dice(n_pred, n_gt, n_inter):
    union = n_pred + n_gt - n_inter
    iou = (n_inter + _IOU_SMOOTH) / (union + _IOU_SMOOTH)
    dice = (2.0 * n_inter + _DICE_SMOOTH) / (n_pred + n_gt + _DICE_SMOOTH)
    return iou, dice


def _sod_metrics(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """S / adaptive E / weighted F / MAE for one float map in [0, 1] and a bool GT."""
    gt_fg = int(np.count_nonzero(gt))
    em = Emeasure()  # cal_em_with_threshold reads these two attributes set by ``step``
    em.gt_fg_numel = gt_fg
    em.gt_size = gt.shape[0] * gt.shape[1]
    return {
        "s_measure": float(_SMEASURE.cal_sm(pred, gt)),
        "e_measure": float(em.cal_adaptive_em(pred, gt)),
        "weighted_f_measure": float(_WFMEASURE.cal_wfm(pred, gt)) if gt_fg else 0.0,
        "mae": float(np.mean(np.abs(pred - gt))),
    }


def _evaluate_image(score, gt, score_thrs, gt_thrs, idx05, sod_pred, sod=True):
    """Per-image metrics and the 0.5-threshold confusion ``[[tn, fp], [fn, tp]]``."""
    if score.shape != gt.shape:
        raise ValueError(
            f"prediction shape {score.shape} != GT shape {gt.shape}; "
            "bring predictions to the original resolution first (see logits_to_original)"
        )
    n_pred, n_gt, n_inter = _threshold_counts(score, gt, score_thrs, gt_thrs)
    iou, dice = _iou_dice(n_pred, n_gt, n_inter)
    out = {
        "iou": float(iou[: len(THRESHOLDS)].mean()),
        "dice": float(dice[: len(THRESHOLDS)].mean()),
        "iou@0.5": float(iou[idx05]),
        "dice@0.5": float(dice[idx05]),
    }
    if sod:
        out.update(_sod_metrics(sod_pred(), _binarize(gt, 0.5, {})))
    tp = int(n_inter[idx05])
    fp = int(n_pred[idx05]) - tp
    fn = int(n_gt[idx05]) - tp
    tn = score.size - tp - fp - fn
    return out, np.array([[tn, fp], [fn, tp]], dtype=np.int64)


def _evaluate_logits(logits, gt, metric_input, sod=True):
    logits = _as_float(_squeeze_mask(_to_numpy(logits), "logits"))
    gt = _squeeze_mask(_to_numpy(gt), "gt")
    if metric_input == "probability":
        return _evaluate_image(
            logits, gt, _LOGIT_THRESHOLDS, THRESHOLDS, _IDX_05, lambda: _sigmoid(logits), sod
        )
    if metric_input == "official_logits":
        return _evaluate_image(
            logits,
            gt,
            THRESHOLDS + (0.0,),  # raw-logit thresholds, then sigmoid(logits) > 0.5 for @0.5
            THRESHOLDS + (0.5,),
            len(THRESHOLDS),
            lambda: np.clip(logits, 0, 1),
            sod,
        )
    raise ValueError(f"metric_input must be one of {METRIC_INPUTS}, got {metric_input!r}")


# ----------------------------------------------------------------------------- public API


def compute_binary_metrics(prob: Any, gt: Any, *, sod: bool = True) -> dict[str, float]:
    """Per-image binary metrics of a probability map ``prob`` (H×W in [0, 1]) vs ``gt`` (H×W).

    ``gt`` may be bool, integer (foreground = ``> 0``) or float (thresholded like the prediction).
    Returns the keys of :data:`BINARY_IMAGE_KEYS` (only ``IOU_KEYS`` when ``sod=False``).
    """
    prob = _as_float(_squeeze_mask(_to_numpy(prob), "prob"))
    gt = _squeeze_mask(_to_numpy(gt), "gt")
    return _evaluate_image(prob, gt, THRESHOLDS, THRESHOLDS, _IDX_05, lambda: prob, sod)[0]


def binary_metrics_from_logits(
    logits: Any, gt: Any, metric_input: str = "probability", *, sod: bool = True
) -> dict[str, float]:
    """Per-image binary metrics from mask logits (H×W); see the module doc for ``metric_input``.

    ``"probability"`` equals ``compute_binary_metrics(sigmoid(logits), gt)`` (up to pixels lying
    within float rounding of a threshold); ``"official_logits"`` reproduces the official quirks.
    """
    return _evaluate_logits(logits, gt, metric_input, sod)[0]


def _pair(size: Any) -> tuple[int, int]:
    if isinstance(size, torch.Tensor):
        size = size.tolist()
    if isinstance(size, (int, np.integer)):
        return int(size), int(size)
    h, w = size
    return int(h), int(w)


def logits_to_original(
    logits: torch.Tensor, input_size: Any, reshaped_input_size: Any, original_size: Any
) -> torch.Tensor:
    """Bring low-resolution SAM mask logits back to the original image resolution.

    Bilinear upsample (``align_corners=False``) to the model input ``input_size`` (int for a square,
    or (H, W)), crop the bottom/right padding to ``reshaped_input_size`` (h, w), then bilinear resize
    to ``original_size`` (H, W). Accepts (h, w), (C, h, w) or (B, C, h, w); returns the same rank.
    """
    x = torch.as_tensor(logits)
    rank = x.ndim
    if rank == 2:
        x = x[None, None]
    elif rank == 3:
        x = x[None]
    elif rank != 4:
        raise ValueError(f"logits must have 2, 3 or 4 dims, got shape {tuple(x.shape)}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    rh, rw = _pair(reshaped_input_size)
    x = F.interpolate(x, size=_pair(input_size), mode="bilinear", align_corners=False)
    x = x[..., :rh, :rw]
    x = F.interpolate(x, size=_pair(original_size), mode="bilinear", align_corners=False)
    return x.reshape(x.shape[4 - rank :])


def miou_from_confusion(confusion: Any) -> dict[str, Any]:
    """IoU per class, their NaN-mean and pixel accuracy from a (gt rows × pred cols) matrix.

    Classes absent from both GT and prediction get IoU NaN and are left out of ``miou``.
    Returns ``{"iou_per_class": ndarray, "miou": float, "pixel_accuracy": float}``.
    """
    conf = np.asarray(confusion, dtype=np.float64)
    inter = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        iou = np.where(union > 0, inter / np.where(union > 0, union, 1), np.nan)
    total = conf.sum()
    present = ~np.isnan(iou)
    return {
        "iou_per_class": iou,
        "miou": float(iou[present].mean()) if present.any() else float("nan"),
        "pixel_accuracy": float(inter.sum() / total) if total > 0 else float("nan"),
    }


def _split_batch(x: Any, what: str) -> list:
    if isinstance(x, (list, tuple)):
        return list(x)
    if isinstance(x, (np.ndarray, torch.Tensor)):
        if x.ndim < 3:
            raise ValueError(
                f"{what}: an array batch needs a leading batch dim (got shape {tuple(x.shape)}); "
                "pass a list for per-image arrays"
            )
        return list(x)
    raise TypeError(f"{what}: expected a list/tuple of per-image arrays or a batched array")


class SegmentationMetrics:
    """Streaming evaluator: keeps running sums and confusion matrices only, never masks.

    Args:
        num_labels: 1 for binary (one sigmoid mask per image); >= 2 for multi-class.
        ignore_index: GT label excluded from the multi-class confusion matrix (GT labels outside
            ``[0, num_labels)`` are excluded too). Binary GT has no ignore label.
        metric_input: ``"probability"`` or ``"official_logits"`` (binary only; see module doc).
        sod_metrics: binary only; also compute S/E/wF/MAE (slower, dominated by wF's distance
            transform). When False only IoU/Dice/miou are reported.

    ``update(preds, gts)`` takes a list/tuple of per-image arrays (numpy or torch, sizes may
    differ) or one array with a leading batch dim, at the original resolution:

    * binary: ``preds`` are mask logits, H×W or 1×H×W each (B×H×W / B×1×H×W batched); ``gts``
      are H×W masks (bool, {0,1}/{0,255} integers, or floats thresholded like the prediction).
    * multi-class: each pred is either C×H×W float class logits (argmax over C) or an H×W
      integer label map; ``gts`` are H×W integer label maps.
    """

    def __init__(
        self,
        num_labels: int = 1,
        ignore_index: int = 255,
        metric_input: str = "probability",
        sod_metrics: bool = True,
    ):
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        check_choice("metric_input", metric_input, METRIC_INPUTS)
        self.num_labels = int(num_labels)
        self.ignore_index = ignore_index
        self.metric_input = metric_input
        self.sod_metrics = bool(sod_metrics)
        self.binary = self.num_labels == 1
        self.reset()

    def reset(self) -> None:
        """Clear all accumulated state."""
        n = 2 if self.binary else self.num_labels
        self.confusion = np.zeros((n, n), dtype=np.int64)
        self.sums = dict.fromkeys(self._image_keys(), 0.0)
        self.num_images = 0
        self.empty_targets = 0  # binary: images whose ground truth has no foreground

    def _image_keys(self) -> tuple[str, ...]:
        if not self.binary:
            return ()
        return BINARY_IMAGE_KEYS if self.sod_metrics else IOU_KEYS

    def update(self, preds: Any, gts: Any) -> None:
        """Accumulate one batch (see the class doc for accepted inputs)."""
        preds = _split_batch(preds, "preds")
        gts = _split_batch(gts, "gts")
        if len(preds) != len(gts):
            raise ValueError(f"{len(preds)} predictions but {len(gts)} ground truths")
        for pred, gt in zip(preds, gts):
            if self.binary:
                values, conf = _evaluate_logits(pred, gt, self.metric_input, self.sod_metrics)
                for k, v in values.items():
                    self.sums[k] += v
                self.empty_targets += int(conf[1].sum() == 0)
            else:
                conf = self._multiclass_confusion(pred, gt)
            self.confusion += conf
            self.num_images += 1

    def _multiclass_confusion(self, pred: Any, gt: Any) -> np.ndarray:
        c = self.num_labels
        pred = _to_numpy(pred)
        if pred.ndim == 3 and pred.shape[0] == c and np.issubdtype(pred.dtype, np.floating):
            labels = pred.argmax(0)
        elif pred.ndim == 2:
            labels = pred.astype(np.int64, copy=False)
        else:
            raise ValueError(
                f"multi-class pred must be {c}×H×W float logits or an H×W label map, "
                f"got shape {pred.shape} dtype {pred.dtype}"
            )
        gt = _squeeze_mask(_to_numpy(gt), "gt").astype(np.int64, copy=False)
        if labels.shape != gt.shape:
            raise ValueError(f"prediction shape {labels.shape} != GT shape {gt.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= c):
            raise ValueError(f"predicted labels must lie in [0, {c})")
        valid = (gt >= 0) & (gt < c) & (gt != self.ignore_index)
        idx = np.where(valid, gt * c + labels, c * c)
        return np.bincount(idx.ravel(), minlength=c * c + 1)[: c * c].reshape(c, c)

    def merge(self, other: SegmentationMetrics) -> None:
        """Add another evaluator's state (e.g. from another process) into this one."""
        if (other.num_labels, other.metric_input) != (self.num_labels, self.metric_input):
            raise ValueError("cannot merge evaluators with different settings")
        self.confusion += other.confusion
        for k in self.sums:
            self.sums[k] += other.sums.get(k, float("nan"))
        self.num_images += other.num_images
        self.empty_targets += other.empty_targets

    def _warn_degenerate(self) -> None:
        """A set whose targets are all empty (or all ignore) gives numbers that mean nothing: say so."""
        if self.binary and self.num_images and self.empty_targets == self.num_images:
            logger.warning("Metrics over %d image(s) whose ground truth is all empty: IoU, Dice and the E-measure "
                           "only score the absence of false positives here and are not comparable", self.num_images)
        elif self.binary and self.empty_targets:
            logger.warning("%d of %d ground-truth mask(s) are empty (scored as empty targets)", self.empty_targets,
                           self.num_images)
        elif not self.binary and self.num_images and not self.confusion.any():
            logger.warning("Metrics over %d image(s) whose every pixel is ignore_index=%s: no pixel was scored (NaN)",
                           self.num_images, self.ignore_index)

    def compute(self) -> dict[str, float]:
        """Dataset-level metrics: per-image means (binary) plus confusion-matrix ``miou``."""
        summary = miou_from_confusion(self.confusion)
        self._warn_degenerate()
        if self.binary:
            n = self.num_images
            out = {k: (s / n if n else float("nan")) for k, s in self.sums.items()}
            out["miou"] = summary["miou"]
            return out
        out = {"miou": summary["miou"], "pixel_accuracy": summary["pixel_accuracy"]}
        for k, v in enumerate(summary["iou_per_class"]):
            out[f"{CLASS_IOU_PREFIX}{k}"] = float(v)
        return out
