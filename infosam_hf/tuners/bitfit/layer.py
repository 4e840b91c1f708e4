"""Layer of ``bitfit``: a zero-initialised delta added to a module's bias."""

from __future__ import annotations

from typing import Any

from torch import nn

from ..base import SamTunerLayer, ZeroDelta

__all__ = ["BIASED_TYPES", "BiasDeltaLayer"]

BIASED_TYPES = (nn.Linear, nn.Conv2d, nn.LayerNorm)


class BiasDeltaLayer(SamTunerLayer):
    """``f(x) + δ`` broadcast over the output's channel axis (axis 1 for convolutions and channels-first norms)."""

    adapter_layer_names = ("bitfit_bias",)

    def build(self, config) -> dict[str, nn.Module]:
        base = self.base_layer
        self.channels_first = isinstance(base, nn.Conv2d) or getattr(base, "data_format", "") == "channels_first"
        return {"bitfit_bias": ZeroDelta(base.bias.shape[0], names=("bias",))}

    def adapted_forward(self, adapters: list[str], hidden_states, *args: Any, **kwargs: Any):
        output = self.base_layer(hidden_states, *args, **kwargs)
        for name in adapters:
            delta = self.bitfit_bias[name].bias.to(output.dtype)
            output = output + (delta[:, None, None] if self.channels_first else delta)
        return output
