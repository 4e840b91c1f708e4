"""Building blocks of the GSAM and SAMUS image encoders, run on a transformers ``SamVisionEncoder``'s frozen modules.

Shapes follow G-SAM's code (``models/generalized_segment_anything`` and ``models/segment_anything_samus``);
tokens are channels-last (B, H, W, C) as in SAM, convolutional features channels-first.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.sam.modeling_sam import SamLayerNorm, SamVisionAttention, SamVisionLayer

from ...models.sam import _resize_rel_pos

__all__ = [
    "LayerNorm2d", "Bottleneck", "MobileConvSE", "MultiScaleAdaptFormer", "ConvNormGELU", "SamusCNNBranch",
    "CrossAttention", "half_stride_patch_embed", "nearest_to", "attention", "resize_rel_pos",
]


def LayerNorm2d(channels: int) -> SamLayerNorm:  # noqa: N802 (a module factory named as G-SAM's module)
    """SAM's channels-first LayerNorm (eps 1e-6)."""
    return SamLayerNorm(channels, eps=1e-6, data_format="channels_first")


class Bottleneck(nn.Module):
    """``fc2(GELU(fc1(x)))`` (``fc1``: d → ratio·d), plus ``x`` when ``residual`` (G-SAM's ``Adapter``)."""

    def __init__(self, dim: int, ratio: float = 0.25, residual: bool = True):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc2(F.gelu(self.fc1(x)))
        return x + out if self.residual else out


class MobileConvSE(nn.Module):
    """GSAM's CNN refiner at the global blocks: 1×1 (C→C/8) → depthwise 3×3 → 1×1 (C/8→C), each bias-free
    with LayerNorm2d and GELU, plus a squeeze-excitation gate (C → C/4 → C, ReLU, sigmoid) of the input."""

    def __init__(self, dim: int):
        super().__init__()
        mid = dim // 8
        self.conv = nn.Sequential(
            nn.Conv2d(dim, mid, 1, bias=False), LayerNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, mid, 3, padding=1, groups=mid, bias=False), LayerNorm2d(mid), nn.GELU(),
            nn.Conv2d(mid, dim, 1, bias=False), LayerNorm2d(dim), nn.GELU())
        self.se_fc1 = nn.Linear(dim, round(dim / 4))
        self.se_fc2 = nn.Linear(round(dim / 4), dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.se_fc2(F.relu(self.se_fc1(x.mean(dim=(2, 3))))))
        return self.conv(x) + x * gate[:, :, None, None]


class MultiScaleAdaptFormer(nn.Module):
    """GSAM's MLP adapter: fc (d → d/4), GELU, then the sum of bias-free 3×3 convolutions at dilations
    (1, *dilations) each followed by ReLU, a global-average-pool branch (1×1 conv, ReLU, upsampled) and the
    identity, then fc (d/4 → d). Channels-last in and out."""

    def __init__(self, dim: int, ratio: float = 0.25, dilations: tuple[int, ...] = (12, 24, 36)):
        super().__init__()
        hidden = int(dim * ratio)
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.convs = nn.ModuleList(nn.Conv2d(hidden, hidden, 3, padding=d, dilation=d, bias=False)
                                   for d in (1, *dilations))
        self.pool_conv = nn.Conv2d(hidden, hidden, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.gelu(self.fc1(x)).permute(0, 3, 1, 2)
        total = hidden
        for conv in self.convs:
            total = total + F.relu(conv(hidden))
        pooled = F.relu(self.pool_conv(hidden.mean(dim=(2, 3), keepdim=True)))
        total = total + F.interpolate(pooled, size=hidden.shape[-2:], mode="bilinear", align_corners=False)
        return self.fc2(total.permute(0, 2, 3, 1))


class ConvNormGELU(nn.Sequential):
    """Optional 2×2 max-pool, bias-free 3×3 convolution, LayerNorm2d, GELU (SAMUS's ``SingleConv``/``SingleDown``)."""

    def __init__(self, in_channels: int, out_channels: int, downsample: bool = False):
        layers = [nn.MaxPool2d(2)] if downsample else []
        super().__init__(*layers, nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                         LayerNorm2d(out_channels), nn.GELU())


class SamusCNNBranch(nn.Sequential):
    """SAMUS's 4-stage CNN: conv (3→64) then three downsampling stages (→128 →256 →dim): stride 8."""

    def __init__(self, dim: int, in_channels: int = 3):
        super().__init__(ConvNormGELU(in_channels, 64), ConvNormGELU(64, 128, True), ConvNormGELU(128, 256, True),
                         ConvNormGELU(256, dim, True))


class CrossAttention(nn.Module):
    """SAMUS's cross-branch attention: queries from the tokens, keys and values from the CNN features
    (both channels-last on the same grid); separate q, k, v and output projections, no positional term."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = tokens.shape

        def heads(x: torch.Tensor) -> torch.Tensor:
            return x.reshape(batch, -1, self.num_heads, dim // self.num_heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(heads(self.q(tokens)), heads(self.k(features)), heads(self.v(features)))
        return self.proj(out.transpose(1, 2).reshape(batch, height, width, dim))


def half_stride_patch_embed(projection: nn.Conv2d, pixel_values: torch.Tensor) -> torch.Tensor:
    """G-SAM's stride-P/2 patch embedding with SAM's P×P convolution: bilinear resize to (H + P/2, W + P/2),
    the convolution at stride P/2, nearest resize to (H // (P/2), W // (P/2)). Returns (B, h, w, C)."""
    patch = projection.kernel_size[0]
    stride = patch // 2
    height, width = pixel_values.shape[-2:]
    x = F.interpolate(pixel_values, size=(height + stride, width + stride), mode="bilinear", align_corners=False)
    x = F.conv2d(x.to(projection.weight.dtype), projection.weight, projection.bias, stride=stride)
    return nearest_to(x, (height // stride, width // stride))


def nearest_to(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(B, C, h, w) features resized (nearest) to ``grid`` and made channels-last."""
    if tuple(features.shape[-2:]) != tuple(grid):
        features = F.interpolate(features, size=tuple(grid), mode="nearest")
    return features.permute(0, 2, 3, 1)


def resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    """A (L, d) relative-position table resized linearly (``align_corners=False``) to (length, d)."""
    if rel_pos.shape[0] == length:
        return rel_pos.detach().clone()
    return _resize_rel_pos(rel_pos, length).contiguous()  # the same resize as resize_sam_input


def attention(attn: SamVisionAttention, x: torch.Tensor, rel_pos_h: torch.Tensor | None,
              rel_pos_w: torch.Tensor | None, key_grid: int | None = None) -> torch.Tensor:
    """SAM's attention with the module's frozen qkv and proj, the given relative-position tables and,
    with ``key_grid``, keys and values average-pooled to ``key_grid``×``key_grid`` (GSAM)."""
    batch, height, width, dim = x.shape
    heads = attn.num_attention_heads
    qkv = attn.qkv(x).reshape(batch, height, width, 3, heads, -1).permute(3, 0, 4, 1, 2, 5)
    query, key, value = qkv.reshape(3, batch * heads, height, width, -1).unbind(0)
    key_size = (height, width)
    if key_grid is not None:
        key = F.adaptive_avg_pool2d(key.permute(0, 3, 1, 2), key_grid).permute(0, 2, 3, 1)
        value = F.adaptive_avg_pool2d(value.permute(0, 3, 1, 2), key_grid).permute(0, 2, 3, 1)
        key_size = (key_grid, key_grid)
    query = query.reshape(batch * heads, height * width, -1)
    key = key.reshape(batch * heads, key_size[0] * key_size[1], -1)
    value = value.reshape(batch * heads, key_size[0] * key_size[1], -1)
    weights = (query * attn.scale) @ key.transpose(-2, -1)
    if rel_pos_h is not None:
        weights = weights + attn.get_decomposed_rel_pos(query, rel_pos_h, rel_pos_w, (height, width),
                                                        key_size).reshape_as(weights)
    weights = weights.softmax(dim=-1)
    out = (weights @ value).view(batch, heads, height, width, -1).permute(0, 2, 3, 1, 4)
    return attn.proj(out.reshape(batch, height, width, dim))


def windowed(layer: SamVisionLayer, x: torch.Tensor, fn) -> torch.Tensor:
    """``fn`` applied per window of ``layer`` (or to the whole grid for a global layer)."""
    if layer.window_size == 0:
        return fn(x)
    height, width = x.shape[1:3]
    windows, padded = layer.window_partition(x, layer.window_size)
    return layer.window_unpartition(fn(windows), layer.window_size, padded, (height, width))
