"""Layer of ``adaptformer``: a scaled bottleneck fed with the MLP's input, added to its output."""

from __future__ import annotations

from ..sam_adapter.layer import BottleneckLayer

__all__ = ["ParallelAdapterLayer"]


class ParallelAdapterLayer(BottleneckLayer):
    """``y = f(x)`` becomes ``f(x) + scale·A(x)``."""

    adapter_layer_names = ("adaptformer_bottleneck",)
    series = False

    def build(self, config):
        self.scale = config.adapter_scale
        return super().build(config)
