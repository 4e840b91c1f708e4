"""``DecoderOnlyModel``: a tuner that wraps nothing, so only ``modules_to_save`` (the mask decoder) trains."""

from __future__ import annotations

from ..base import SamTuner

__all__ = ["DecoderOnlyModel"]


class DecoderOnlyModel(SamTuner):
    prefix = "decoder_only_"
