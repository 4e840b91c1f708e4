"""``SamAdapterModel``: the tuner that inserts InfoSAM's series adapters and LayerNorm deltas."""

from __future__ import annotations

from torch import nn

from ..base import SamTuner
from .layer import NormDeltaLayer, SeriesAdapterLayer

__all__ = ["SamAdapterModel"]


class SamAdapterModel(SamTuner):
    """LayerNorms get :class:`NormDeltaLayer`; attention and MLP modules get :class:`SeriesAdapterLayer`."""

    prefix = "sadapter_"

    def layer_class(self, config, target: nn.Module):
        return NormDeltaLayer if isinstance(target, nn.LayerNorm) else SeriesAdapterLayer
