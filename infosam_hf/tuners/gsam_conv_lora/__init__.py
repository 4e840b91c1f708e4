"""``gsam_conv_lora``: G-SAM's ConvLoRA (per-head LoRA with a dense mixture of convolution experts)."""

from ..base import register_sam_tuner
from .config import GsamConvLoraConfig
from .layer import GsamConvLoraLayer, HeadConvLowRank
from .model import GsamConvLoraModel

register_sam_tuner(GsamConvLoraConfig, GsamConvLoraModel)

__all__ = ["GsamConvLoraConfig", "GsamConvLoraLayer", "GsamConvLoraModel", "HeadConvLowRank"]
