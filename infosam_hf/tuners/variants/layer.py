"""The variants' encoders: modules trained around a frozen transformers ``SamVisionEncoder``, and the tuner layer
that runs them in place of the stock encoder.

Each ``*Encoder`` module holds only the variant's own (trained) parts; the frozen SAM modules (patch projection,
blocks, neck, position embedding) are passed in at call time, so they are never duplicated in the state dict.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.sam.modeling_sam import SamVisionEncoder, SamVisionEncoderOutput

from ...models.dynamic import resize_pos_embed
from ..base import SamTunerLayer
from .blocks import (Bottleneck, ConvNormGELU, CrossAttention, MobileConvSE, MultiScaleAdaptFormer, SamusCNNBranch,
                     attention, half_stride_patch_embed, nearest_to, resize_rel_pos, windowed)
from .config import GsamConfig, SamusConfig, VariantConfig
from .resnet import ResNetBranch

__all__ = ["GsamEncoder", "SamusEncoder", "VariantEncoderLayer", "GsamEncoderLayer", "SamusEncoderLayer"]


def _channels_last(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return module(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)


class VariantEncoder(nn.Module):
    """Shared parts: the input adapter and trained copies of the global blocks' relative-position tables."""

    stride_divisor = 2  # tokens at stride patch/2

    def __init__(self, encoder: SamVisionEncoder, config: VariantConfig):
        super().__init__()
        vision = encoder.config
        self.dim = vision.hidden_size
        self.patch_size = vision.patch_size
        self.adapter_scale = config.adapter_scale
        self.cnn_scale = config.cnn_scale
        self.global_blocks = [i for i, layer in enumerate(encoder.layers) if layer.window_size == 0]
        self.input_adapter = Bottleneck(self.dim, config.adapter_ratio, residual=True)
        grid = config.rel_pos_grid or max(1, vision.image_size // vision.patch_size // 2)
        self.rel_pos_h = nn.ParameterDict()
        self.rel_pos_w = nn.ParameterDict()
        if vision.use_rel_pos:
            for i in self.global_blocks:
                attn = encoder.layers[i].attn
                self.rel_pos_h[str(i)] = nn.Parameter(resize_rel_pos(attn.rel_pos_h, 2 * grid - 1))
                self.rel_pos_w[str(i)] = nn.Parameter(resize_rel_pos(attn.rel_pos_w, 2 * grid - 1))

    @property
    def token_stride(self) -> int:
        return self.patch_size // self.stride_divisor

    def rel_pos(self, index: int, attn) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The trained tables of a global block, SAM's frozen ones of a windowed block."""
        key = str(index)
        if key in self.rel_pos_h:
            return self.rel_pos_h[key], self.rel_pos_w[key]
        return (attn.rel_pos_h, attn.rel_pos_w) if attn.use_rel_pos else (None, None)

    def image_positional_embeddings(self, image_embeddings: torch.Tensor) -> torch.Tensor | None:
        """The decoder's image positional encoding, or ``None`` for SAM's Fourier encoding."""
        return None


class GsamEncoder(VariantEncoder):
    """GSAM's trained parts: ResNet branch, input adapter, PEG, per-block multi-scale AdaptFormer, MobileConv+SE
    refiners at the global blocks, global rel_pos tables, and the decoder's PosCNN."""

    def __init__(self, encoder: SamVisionEncoder, config: GsamConfig):
        super().__init__(encoder, config)
        dim, width = self.dim, encoder.config.output_channels
        self.key_grid = config.key_grid
        self.cnn = ResNetBranch(dim, config.resnet_depths, config.resnet_hidden_sizes, config.resnet_embedding_size)
        self.peg = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
        self.mlp_adapters = nn.ModuleList(MultiScaleAdaptFormer(dim, config.adapter_ratio, tuple(config.dilations))
                                          for _ in encoder.layers)
        self.refiners = nn.ModuleDict({str(i): MobileConvSE(dim) for i in self.global_blocks})
        self.pos_cnn = nn.Conv2d(width, width, 3, padding=1, groups=width)

    def image_positional_embeddings(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        return self.pos_cnn(image_embeddings)

    def forward(self, encoder: SamVisionEncoder, pixel_values: torch.Tensor) -> torch.Tensor:
        features = self.cnn(pixel_values)
        x = self.input_adapter(half_stride_patch_embed(encoder.patch_embed.projection, pixel_values))
        features = nearest_to(features, x.shape[1:3])
        x = x + features
        for i, layer in enumerate(encoder.layers):
            rel_h, rel_w = self.rel_pos(i, layer.attn)
            if str(i) in self.refiners:
                features = _channels_last(self.refiners[str(i)], features)
            x = x + windowed(layer, layer.layer_norm1(x),
                             lambda t, a=layer.attn: attention(a, t, rel_h, rel_w, self.key_grid))
            normed = layer.layer_norm2(x)
            x = x + layer.mlp(normed) + self.adapter_scale * self.mlp_adapters[i](normed)
            if i == 0:  # PEG: a depthwise conv of the tokens after the first block, in place of pos_embed
                x = x + _channels_last(self.peg, x)
        return encoder.neck(x + self.cnn_scale * features)


class SamusEncoder(VariantEncoder):
    """SAMUS's trained parts: 4-stage CNN branch, input adapter, position-embedding downsampler, and at each global
    block cross-attention to the CNN features, a conv refiner and a parallel MLP adapter; global rel_pos tables."""

    def __init__(self, encoder: SamVisionEncoder, config: SamusConfig):
        super().__init__(encoder, config)
        dim, heads = self.dim, encoder.config.num_attention_heads
        if encoder.pos_embed is None:
            raise ValueError("samus needs a SAM with an absolute position embedding (use_abs_pos)")
        self.cnn = SamusCNNBranch(dim)
        self.pos_down = ConvNormGELU(dim, dim, downsample=True)
        self.cross_attention = nn.ModuleDict({str(i): CrossAttention(dim, heads) for i in self.global_blocks})
        self.refiners = nn.ModuleDict({str(i): ConvNormGELU(dim, dim) for i in self.global_blocks})
        self.mlp_adapters = nn.ModuleDict({str(i): Bottleneck(dim, config.adapter_ratio, residual=False)
                                           for i in self.global_blocks})

    def forward(self, encoder: SamVisionEncoder, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.input_adapter(half_stride_patch_embed(encoder.patch_embed.projection, pixel_values))
        features = nearest_to(self.cnn(pixel_values), x.shape[1:3])
        position = _channels_last(self.pos_down, encoder.pos_embed)
        x = x + resize_pos_embed(position, x.shape[1:3])
        for i, layer in enumerate(encoder.layers):
            key = str(i)
            if key not in self.cross_attention:
                x = layer(x)
                continue
            rel_h, rel_w = self.rel_pos(i, layer.attn)
            normed = layer.layer_norm1(x)
            normed = normed + self.cross_attention[key](normed, features)
            features = _channels_last(self.refiners[key], features)
            x = x + attention(layer.attn, normed, rel_h, rel_w)
            normed = layer.layer_norm2(x)
            x = x + layer.mlp(normed) + self.adapter_scale * self.mlp_adapters[key](normed)
        return encoder.neck(x + self.cnn_scale * features)


class VariantEncoderLayer(SamTunerLayer):
    """Wraps SAM's vision encoder; with an active adapter the variant's encoder runs instead of SAM's."""

    encoder_class: type[VariantEncoder] = VariantEncoder

    def build(self, config: VariantConfig) -> dict[str, nn.Module]:
        return {self.adapter_layer_names[0]: self.encoder_class(self.base_layer, config)}

    def active_variant(self) -> VariantEncoder | None:
        """The encoder module of the first active adapter, or ``None`` when adapters are off."""
        adapters = self.adapters_in_use()
        return getattr(self, self.adapter_layer_names[0])[adapters[0]] if adapters else None

    def adapted_forward(self, adapters: list[str], pixel_values: torch.Tensor, *args: Any, **kwargs: Any):
        if len(adapters) > 1:
            raise ValueError(f"{type(self).__name__}: one model variant at a time, got adapters {adapters}")
        variant = getattr(self, self.adapter_layer_names[0])[adapters[0]]
        return SamVisionEncoderOutput(last_hidden_state=variant(self.base_layer, pixel_values))


class GsamEncoderLayer(VariantEncoderLayer):
    adapter_layer_names = ("variant_gsam_encoder",)
    encoder_class = GsamEncoder


class SamusEncoderLayer(VariantEncoderLayer):
    adapter_layer_names = ("variant_samus_encoder",)
    encoder_class = SamusEncoder
