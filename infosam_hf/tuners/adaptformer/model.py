"""``AdaptFormerModel``: the tuner that adds parallel adapters to each block's MLP."""

from __future__ import annotations

from ..base import SamTuner
from .layer import ParallelAdapterLayer

__all__ = ["AdaptFormerModel"]


class AdaptFormerModel(SamTuner):
    prefix = "adaptformer_"
    layer_cls = ParallelAdapterLayer
