"""InfoSAM losses: relation compression (loss_r), relation distillation (loss_d) and the structure loss.

All information losses are built on batch-level Gram matrices: each sample is flattened to one
vector and L2-normalised, ``G = U·Uᵀ`` is B×B, ``Ĝ = G / trace(G)`` and ``H(G) = log2(‖Ĝ‖_F²)``.

The losses never read a value back to the host (no ``float(tensor)``): an undefined loss (a zero trace,
a NaN or Inf feature) comes out non-finite, and the trainer masks it on the device
(:meth:`~infosam_hf.InfoSAMTrainer.compute_loss`).
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Literal, get_args

import torch
import torch.nn.functional as F

from .choices import check_choice

__all__ = [
    "SEG_LOSSES",
    "binary_segmentation_loss",
    "segmentation_loss",
    "float32_region",
    "gram_matrix",
    "matrix_entropy",
    "compression_loss",
    "distillation_loss",
    "structure_loss",
    "class_cross_entropy",
]

_EPS_NORM = 1e-12
_warned_batch_of_one = False


def _as_float32(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype != torch.float32 else x


def float32_region(tensor: torch.Tensor):
    """Autocast off on ``tensor``'s device (a no-op context on the ``meta`` device, which has no autocast)."""
    if tensor.device.type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type=tensor.device.type, enabled=False)


def gram_matrix(features: torch.Tensor) -> torch.Tensor:
    """Linear-kernel Gram matrix (B×B) of per-sample L2-normalised flattened ``features``."""
    u = _as_float32(features).flatten(1)
    u = u / u.norm(dim=1, keepdim=True).clamp_min(_EPS_NORM)
    return u @ u.transpose(0, 1)


def _trace_normalize(gram: torch.Tensor) -> torch.Tensor:
    return gram / torch.diagonal(gram).sum()  # a zero trace gives NaN, masked by the trainer


def matrix_entropy(*grams: torch.Tensor) -> torch.Tensor:
    """``H`` of the trace-normalised Hadamard product of ``grams``: ``log2(‖Ĝ‖_F²)``."""
    product = _trace_normalize(grams[0])
    for gram in grams[1:]:
        product = _trace_normalize(product * _trace_normalize(gram))
    return torch.log2(product.pow(2).sum())


def _check_batch(batch_size: int) -> None:
    global _warned_batch_of_one
    if batch_size < 2 and not _warned_batch_of_one:
        _warned_batch_of_one = True
        warnings.warn("InfoSAM losses use batch-level Gram matrices: with a batch of 1 loss_r and loss_d "
                      "are exactly 0. Use per_device_train_batch_size >= 2.", stacklevel=3)


def compression_loss(image_embeds_t: torch.Tensor, mask_tokens_t: torch.Tensor,
                     relation_t: torch.Tensor) -> torch.Tensor:
    """loss_r = −H(G_r) + H(G_img ∘ G_tok ∘ G_r), all from the teacher pass.

    The image embeddings and mask tokens are detached, so only the relation module gets gradients.
    """
    _check_batch(relation_t.shape[0])
    with float32_region(relation_t):
        g_img = gram_matrix(image_embeds_t.detach())
        g_tok = gram_matrix(mask_tokens_t.detach())
        g_rel = gram_matrix(relation_t)
        loss = -matrix_entropy(g_rel) + matrix_entropy(g_img, g_tok, g_rel)
    return loss


def distillation_loss(relation_t: torch.Tensor, relation_s: torch.Tensor) -> torch.Tensor:
    """loss_d = H(G_r_t) + H(G_r_s) − H(G_r_t ∘ G_r_s): minus the mutual information of the relations."""
    _check_batch(relation_s.shape[0])
    with float32_region(relation_s):
        g_t = gram_matrix(relation_t)
        g_s = gram_matrix(relation_s)
        loss = matrix_entropy(g_t) + matrix_entropy(g_s) - matrix_entropy(g_t, g_s)
    return loss


def _box_mean_31(x: torch.Tensor) -> torch.Tensor:
    """``avg_pool2d(x, 31, stride=1, padding=15)`` (zero padding counted) as two 1-D passes: same values
    up to float rounding, ~10× faster at 1024²."""
    x = F.avg_pool2d(x, kernel_size=(31, 1), stride=1, padding=(15, 0))
    return F.avg_pool2d(x, kernel_size=(1, 31), stride=1, padding=(0, 15))


BceForm = Literal["weighted", "unweighted"]
BCE_FORMS: tuple[str, ...] = get_args(BceForm)


def check_bce_form(bce: str) -> None:
    """``structure_loss_bce`` must be one of :data:`BCE_FORMS`."""
    check_choice("structure_loss_bce", bce, BCE_FORMS)


def structure_loss(logits: torch.Tensor, target: torch.Tensor, bce: str = "weighted",
                   reduction: str = "mean") -> torch.Tensor:
    """PraNet/F3Net structure loss: boundary-weighted BCE plus weighted IoU, averaged over the batch.

    Args:
        logits: (B, 1, H, W) or (B, H, W) mask logits.
        target: same shape, values in {0, 1}.
        bce: ``"weighted"`` (the published form: each image's BCE is the w-weighted mean) or
            ``"unweighted"`` (the official code's behaviour: ``reduce="none"`` is read by PyTorch as a
            legacy flag, so its BCE term is the plain global mean).
        reduction: ``"mean"`` over the batch, or ``"none"`` for one loss per image.
    """
    check_bce_form(bce)
    if logits.dim() == 3:
        logits, target = logits.unsqueeze(1), target.unsqueeze(1)
    logits, target = _as_float32(logits), _as_float32(target)
    weight = 1 + 5 * torch.abs(_box_mean_31(target) - target)
    pixel_bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    if bce == "weighted":
        wbce = (weight * pixel_bce).sum(dim=(2, 3)) / weight.sum(dim=(2, 3))
    else:
        wbce = pixel_bce.mean().expand(logits.shape[0], logits.shape[1])
    prob = torch.sigmoid(logits)
    inter = (prob * target * weight).sum(dim=(2, 3))
    union = ((prob + target) * weight).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    per_image = (wbce + wiou).mean(dim=1)
    return per_image if reduction == "none" else per_image.mean()


def class_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = 255,
                        reduction: str = "mean") -> torch.Tensor:
    """Multi-class loss: pixel cross-entropy of (B, C, H, W) logits against (B, H, W) class ids.

    Pixels labelled ``ignore_index`` do not count. ``"mean"`` averages over the batch's valid pixels
    (0, still attached to the graph, when there are none); ``"none"`` gives one mean per image.
    """
    logits = _as_float32(logits)
    labels = labels.long()
    pixel = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")  # 0 where ignored
    valid = (labels != ignore_index).flatten(1).sum(1)
    if reduction == "none":
        return pixel.flatten(1).sum(1) / valid.clamp_min(1)
    return pixel.sum() / valid.sum().clamp_min(1)


SegLoss = Literal["structure", "bce"]
SEG_LOSSES: tuple[str, ...] = get_args(SegLoss)


def binary_segmentation_loss(logits: torch.Tensor, target: torch.Tensor, kind: str = "structure",
                             bce: str = "weighted", reduction: str = "mean") -> torch.Tensor:
    """The binary segmentation loss named by ``kind``: ``"structure"`` (:func:`structure_loss`, InfoSAM) or
    ``"bce"`` (plain BCE-with-logits averaged over pixels, G-SAM). Shapes and ``reduction`` as in
    :func:`structure_loss`."""
    if kind == "structure":
        return structure_loss(logits, target, bce, reduction)
    check_choice("seg_loss", kind, SEG_LOSSES)
    logits, target = _as_float32(logits), _as_float32(target)
    per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    per_image = per_pixel.flatten(1).mean(dim=1)
    return per_image if reduction == "none" else per_image.mean()


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, num_labels: int = 1, *, kind: str = "structure",
                      bce: str = "weighted", ignore_index: int = 255, reduction: str = "mean") -> torch.Tensor:
    """The segmentation loss of training and evaluation alike: :func:`binary_segmentation_loss` of (B, 1, H, W)
    logits against (B, H, W) masks, or with ``num_labels`` > 1 :func:`class_cross_entropy` against class ids.
    ``reduction="none"`` gives one value per image (what evaluation averages, so it is equal at any batch size)."""
    if num_labels > 1:
        return class_cross_entropy(logits, labels, ignore_index, reduction=reduction)
    return binary_segmentation_loss(logits, labels.unsqueeze(1).to(logits.dtype), kind, bce, reduction=reduction)
