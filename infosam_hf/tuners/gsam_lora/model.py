"""``GsamLoraModel``: the tuner that adds G-SAM's per-head LoRA to each block's qkv."""

from __future__ import annotations

from ..base import SamTuner
from .layer import GsamLoraLayer

__all__ = ["GsamLoraModel"]


class GsamLoraModel(SamTuner):
    prefix = "gslr_"
    layer_cls = GsamLoraLayer
