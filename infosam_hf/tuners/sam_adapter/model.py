"""``SamAdapterModel``: the tuner that inserts InfoSAM's series adapters and LayerNorm deltas."""

from __future__ import annotations

from torch import nn

from ..base import SamTuner
from .layer import NormDeltaLayer, SeriesAdapterLayer

__all__ = ["SamAdapterModel"]


class SamAdapterModel(SamTuner):
    """LayerNorms get :class:`NormDeltaLayer`; attention and MLP modules get :class:`SeriesAdapterLayer`."""

    prefix = "sadapter_"

    def _pre_injection_hook(self, model: nn.Module, config, adapter_name: str) -> None:
        if config.block_indices is None:
            try:
                num_blocks = len(model.get_submodule(config.blocks_path))
            except AttributeError:
                raise ValueError(f"sam_adapter: the model has no block list at {config.blocks_path!r}") from None
            config.block_indices = list(range(config.first_block if num_blocks > config.first_block else 0,
                                              num_blocks))

    def layer_class(self, config, target: nn.Module):
        return NormDeltaLayer if isinstance(target, nn.LayerNorm) else SeriesAdapterLayer
