"""``decoder_only``: the mask decoder only (G-SAM's "SAM" row, the HF fine-tuning tutorial's setting)."""

from ..base import register_sam_tuner
from .config import DecoderOnlyConfig
from .model import DecoderOnlyModel

register_sam_tuner(DecoderOnlyConfig, DecoderOnlyModel)

__all__ = ["DecoderOnlyConfig", "DecoderOnlyModel"]
