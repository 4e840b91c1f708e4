"""``sam_adapter``: InfoSAM's series bottleneck adapters in image-encoder blocks 2–11."""

from ..base import register_sam_tuner
from .config import SamAdapterConfig
from .layer import NormDeltaLayer, SeriesAdapterLayer
from .model import SamAdapterModel

register_sam_tuner(SamAdapterConfig, SamAdapterModel)

__all__ = ["NormDeltaLayer", "SamAdapterConfig", "SamAdapterModel", "SeriesAdapterLayer"]
