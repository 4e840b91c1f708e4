"""``GsamConvLoraModel``: the tuner that adds G-SAM's ConvLoRA to each block's qkv."""

from __future__ import annotations

from ..base import SamTuner
from .layer import GsamConvLoraLayer

__all__ = ["GsamConvLoraModel"]


class GsamConvLoraModel(SamTuner):
    prefix = "gscvlr_"
    layer_cls = GsamConvLoraLayer
