"""Layer of ``gsam_conv_lora``: per-head LoRA whose bottleneck is a per-pixel soft mixture of conv experts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..gsam_lora.layer import HeadLowRank, HeadwiseQkvLayer

__all__ = ["HeadConvLowRank", "GsamConvLoraLayer"]


class HeadConvLowRank(HeadLowRank):
    """:class:`HeadLowRank` whose bottleneck goes through ``num_experts`` multi-scale convolutions mixed by a
    dense softmax gate."""

    def __init__(self, head_dim: int, rank_ratio: float, num_experts: int = 4):
        super().__init__(head_dim, rank_ratio)
        rank = self.up.shape[0]
        self.experts = nn.ModuleList(nn.Conv2d(rank, rank, 3, padding=1) for _ in range(num_experts))
        self.gate = nn.Conv2d(rank, num_experts, 3, padding=1)

    def bottleneck(self, heads: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        low = (heads @ self.down).permute(0, 3, 1, 2)  # (N, b, H, W)
        height, width = grid
        gates = F.softmax(F.relu(self.gate(low)), dim=1)
        mixed = 0
        for index, expert in enumerate(self.experts):
            scale = index + 1
            hidden = F.interpolate(low, size=(height * scale, width * scale), mode="nearest")
            hidden = F.interpolate(expert(hidden), size=(height, width), mode="nearest")
            mixed = mixed + gates[:, index:index + 1] * hidden
        return mixed.permute(0, 2, 3, 1)


class GsamConvLoraLayer(HeadwiseQkvLayer):
    """G-SAM's ConvLoRA on q, k and v."""

    adapter_layer_names = ("gscvlr_q", "gscvlr_k", "gscvlr_v")

    def branch_class(self, head_dim: int, rank_ratio: float) -> HeadConvLowRank:
        return HeadConvLowRank(head_dim, rank_ratio, self.num_experts)

    def build(self, config) -> dict[str, nn.Module]:
        self.num_experts = config.num_experts
        return super().build(config)
