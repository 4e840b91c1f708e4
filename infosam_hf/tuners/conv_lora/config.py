"""``ConvLoraConfig``: Conv-LoRA (ICLR 2024) as InfoSAM's code has it."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..base import SamTunerConfig

__all__ = ["ConvLoraConfig"]


@dataclass
class ConvLoraConfig(SamTunerConfig):
    """LoRA on each block's fused ``qkv`` whose rank-``r`` bottleneck passes a mixture of convolution experts.

    The bottleneck ``xA`` is laid out on the token grid; expert ``i`` (1..``num_experts``) upsamples it
    bicubically ×i, applies a 3×3 conv and GELU and resamples back; the one expert a noisy top-1 gate picks per
    image (or window) is added to the bottleneck before ``B``. The gate's load-balancing loss,
    ``aux_loss_coef·(cv²(importance) + cv²(load))`` per layer, is reported to the trainer as ``loss_aux``.
    """

    peft_name = "conv_lora"
    default_target_modules = ("qkv",)

    r: int = field(default=4, metadata={"help": "LoRA rank."})
    lora_alpha: float = field(default=4, metadata={"help": "LoRA scaling numerator (scale = alpha / r)."})
    num_experts: int = field(default=8, metadata={"help": "Number of convolution experts (scales 1..n)."})
    aux_loss_coef: float = field(default=0.01, metadata={"help": "Weight of each layer's load-balancing loss."})

    def __post_init__(self):
        super().__post_init__()
        if self.r < 1 or self.num_experts < 1:
            raise ValueError(f"{self.peft_name}: r and num_experts must be positive (got {self.r}, {self.num_experts})")
