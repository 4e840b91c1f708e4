"""Layers of ``sam_adapter``: a bottleneck adapter on a module's output, and LayerNorm deltas."""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import nn

from ..base import SamTunerLayer, ZeroDelta

__all__ = ["Bottleneck", "BottleneckLayer", "SeriesAdapterLayer", "NormDeltaLayer", "linear_widths"]


def linear_widths(module: nn.Module) -> tuple[int, int]:
    """(input width of the first Linear, output width of the last Linear) inside ``module``."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(module).__name__} has no Linear layer to take the adapter width from")
    return linears[0].in_features, linears[-1].out_features


class Bottleneck(nn.Sequential):
    """``Linear(d_in, ratio·d_in) → GELU → Linear(ratio·d_in, d_out)``; the last Linear is zero-initialised
    unless ``init="official"``."""

    def __init__(self, d_in: int, d_out: int, ratio: float, init: str):
        hidden = int(d_in * ratio)
        super().__init__(nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out))
        if init == "zero":
            nn.init.zeros_(self[2].weight)
            nn.init.zeros_(self[2].bias)


class BottleneckLayer(SamTunerLayer):
    """A bottleneck adapter added to a module's output, fed with its output (series) or its input (parallel)."""

    series: bool = True
    scale: float = 1.0

    def build(self, config) -> dict[str, nn.Module]:
        d_in, d_out = linear_widths(self.base_layer)
        width_in = d_out if self.series else d_in
        return {self.adapter_layer_names[0]: Bottleneck(width_in, d_out, config.adapter_ratio, config.adapter_init)}

    def adapted_forward(self, adapters: list[str], hidden_states, *args: Any, **kwargs: Any):
        output = self.base_layer(hidden_states, *args, **kwargs)
        main = output[0] if isinstance(output, tuple) else output
        source = main if self.series else hidden_states
        bottlenecks = getattr(self, self.adapter_layer_names[0])
        for name in adapters:
            main = main + self.scale * bottlenecks[name](source.to(bottlenecks[name][0].weight.dtype)).to(main.dtype)
        return (main, *output[1:]) if isinstance(output, tuple) else main


class SeriesAdapterLayer(BottleneckLayer):
    """``y = f(x)`` becomes ``y + A(y)`` (for a block's attention and MLP)."""

    adapter_layer_names = ("sadapter_bottleneck",)


class NormDeltaLayer(SamTunerLayer):
    """A LayerNorm whose weight and bias are trained as zero-initialised deltas over the frozen originals."""

    adapter_layer_names = ("sadapter_norm",)

    def build(self, config) -> dict[str, nn.Module]:
        return {"sadapter_norm": ZeroDelta(self.base_layer.weight.shape[0])}

    def adapted_forward(self, adapters: list[str], hidden_states, *args: Any, **kwargs: Any):
        norm = self.base_layer
        weight, bias = norm.weight, norm.bias
        for name in adapters:
            weight = weight + self.sadapter_norm[name].weight
            bias = bias + self.sadapter_norm[name].bias
        return F.layer_norm(hidden_states, norm.normalized_shape, weight, bias, norm.eps)
