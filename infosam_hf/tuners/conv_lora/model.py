"""``ConvLoraModel``: the tuner that puts Conv-LoRA on each block's ``qkv``."""

from __future__ import annotations

from ..base import SamTuner
from .layer import ConvLoraLayer

__all__ = ["ConvLoraModel"]


class ConvLoraModel(SamTuner):
    """Reports the summed gate losses through :meth:`pop_auxiliary_loss` (added by the trainer as ``loss_aux``)."""

    prefix = "convlr_"
    layer_cls = ConvLoraLayer
