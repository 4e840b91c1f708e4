"""Layers of ``gsam_lora``: per-head low-rank updates of the q, k and v that a fused qkv Linear produces."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..base import SamTunerLayer

__all__ = ["HeadLowRank", "HeadwiseQkvLayer", "GsamLoraLayer"]


class HeadLowRank(nn.Module):
    """``h → h·A·B / b`` on each head's features (``A``: Kaiming, ``B``: zeros)."""

    def __init__(self, head_dim: int, rank_ratio: float):
        super().__init__()
        rank = int(head_dim * rank_ratio)
        self.down = nn.Parameter(torch.empty(head_dim, rank))
        nn.init.kaiming_uniform_(self.down, a=math.sqrt(5))
        self.up = nn.Parameter(torch.zeros(rank, head_dim))
        self.scaling = 1.0 / rank

    def bottleneck(self, heads: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        """The rank-b features of ``heads`` (``(N, H, W, b)``); convolutional variants mix them on the grid."""
        return heads @ self.down

    def forward(self, heads: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        return self.bottleneck(heads, grid) @ self.up * self.scaling


class HeadwiseQkvLayer(SamTunerLayer):
    """A fused ``qkv`` Linear whose q, k and v are each updated per head by their own :class:`HeadLowRank`.

    Equivalent to updating q, k and v after the attention's head split: the update is per token and per head.
    """

    adapter_layer_names = ("gslr_q", "gslr_k", "gslr_v")
    branch_class = HeadLowRank

    def build(self, config) -> dict[str, nn.Module]:
        if not self.num_heads:
            raise ValueError(f"{config.peft_name}: the attention around the qkv Linear has no num_attention_heads")
        self.lora_scale = config.lora_scale
        head_dim = self.base_layer.out_features // 3 // self.num_heads
        return {name: self.branch_class(head_dim, config.rank_ratio) for name in self.adapter_layer_names}

    def adapted_forward(self, adapters: list[str], hidden_states: torch.Tensor) -> torch.Tensor:
        result = self.base_layer(hidden_states)
        if hidden_states.dim() != 4:
            raise ValueError(f"expected (N, H, W, C) tokens at the qkv projection, got {tuple(hidden_states.shape)}")
        n, h, w, _ = hidden_states.shape
        parts = result.reshape(n, h, w, 3, self.num_heads, -1)
        # (N, H, W, heads, d) -> (N·heads, H, W, d): one grid per image (or window) and head
        heads = parts.permute(3, 0, 4, 1, 2, 5).reshape(3, n * self.num_heads, h, w, -1)
        updated = []
        for index, container in enumerate(self.adapter_layer_names):
            part = heads[index]
            delta = 0
            for name in adapters:
                branch = getattr(self, container)[name]
                delta = delta + branch(part.to(branch.down.dtype), (h, w)).to(part.dtype)
            updated.append(part + self.lora_scale * delta)
        stacked = torch.stack(updated).reshape(3, n, self.num_heads, h, w, -1).permute(1, 3, 4, 0, 2, 5)
        return stacked.reshape(result.shape)


class GsamLoraLayer(HeadwiseQkvLayer):
    """G-SAM's LoRA on q, k and v."""
