"""``GsamLoraConfig``: G-SAM's LoRA, a per-head low-rank update of q, k and v after the qkv projection."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..base import SamTunerConfig

__all__ = ["GsamLoraConfig"]


@dataclass
class GsamLoraConfig(SamTunerConfig):
    """Inside each block's attention, after the qkv projection and the head split,
    ``q ← q + scale·(1/b)·q·A·B`` (likewise k and v), ``A``: head_dim×b (Kaiming), ``B``: b×head_dim (zeros),
    shared across heads, ``b = rank_ratio·head_dim``. Not the stock LoRA (that one is ``lora``)."""

    peft_name = "gsam_lora"
    default_target_modules = ("qkv",)

    rank_ratio: float = field(default=0.25, metadata={"help": "Bottleneck width as a fraction of head_dim."})
    lora_scale: float = field(default=0.5, metadata={"help": "Outer scale of the update."})
