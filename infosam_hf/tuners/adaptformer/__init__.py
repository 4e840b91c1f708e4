"""``adaptformer``: G-SAM's AdaptFormer, a scaled bottleneck parallel to every block's MLP."""

from ..base import register_sam_tuner
from .config import AdaptFormerConfig
from .layer import ParallelAdapterLayer
from .model import AdaptFormerModel

register_sam_tuner(AdaptFormerConfig, AdaptFormerModel)

__all__ = ["AdaptFormerConfig", "AdaptFormerModel", "ParallelAdapterLayer"]
