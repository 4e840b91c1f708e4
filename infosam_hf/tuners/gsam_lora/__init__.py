"""``gsam_lora``: G-SAM's LoRA (per-head updates of q, k and v in every block)."""

from ..base import register_sam_tuner
from .config import GsamLoraConfig
from .layer import GsamLoraLayer, HeadLowRank, HeadwiseQkvLayer
from .model import GsamLoraModel

register_sam_tuner(GsamLoraConfig, GsamLoraModel)

__all__ = ["GsamLoraConfig", "GsamLoraLayer", "GsamLoraModel", "HeadLowRank", "HeadwiseQkvLayer"]
