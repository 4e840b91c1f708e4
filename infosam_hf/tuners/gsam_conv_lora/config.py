"""``GsamConvLoraConfig``: G-SAM's ConvLoRA, per-head LoRA whose bottleneck is mixed by convolution experts."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..gsam_lora.config import GsamLoraConfig

__all__ = ["GsamConvLoraConfig"]


@dataclass
class GsamConvLoraConfig(GsamLoraConfig):
    """As ``gsam_lora``, but the bottleneck ``h·A`` is laid on the (window or global) token grid and replaced by
    ``Σ g_i·E_i`` over ``num_experts`` experts: ``E_i`` = nearest upsample ×i → 3×3 conv → nearest back;
    ``g`` = softmax over experts of ReLU(3×3 conv), per pixel. No noise, no top-k, no auxiliary loss."""

    peft_name = "gsam_conv_lora"

    num_experts: int = field(default=4, metadata={"help": "Number of convolution experts (scales 1..n)."})
