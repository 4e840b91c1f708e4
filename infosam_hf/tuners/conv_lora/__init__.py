"""``conv_lora``: Conv-LoRA on the fused ``qkv`` of every image-encoder block."""

from ..base import register_sam_tuner
from .config import ConvLoraConfig
from .layer import ConvLoraBranch, ConvLoraLayer
from .model import ConvLoraModel

register_sam_tuner(ConvLoraConfig, ConvLoraModel)

__all__ = ["ConvLoraBranch", "ConvLoraConfig", "ConvLoraLayer", "ConvLoraModel"]
