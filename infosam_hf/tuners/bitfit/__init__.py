"""``bitfit``: trained bias deltas on the image encoder, plus the mask decoder."""

from ..base import register_sam_tuner
from .config import BitFitConfig
from .layer import BiasDeltaLayer
from .model import BitFitModel

register_sam_tuner(BitFitConfig, BitFitModel)

__all__ = ["BiasDeltaLayer", "BitFitConfig", "BitFitModel"]
