"""``BitFitConfig``: trained bias deltas on the image encoder."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..base import SamTunerConfig

__all__ = ["BitFitConfig"]


@dataclass
class BitFitConfig(SamTunerConfig):
    """Every Linear, Conv2d and LayerNorm with a bias under ``encoder_path`` learns a zero-initialised bias delta
    (the frozen bias stays, so disabling the adapter is exact); the mask decoder is trained."""

    peft_name = "bitfit"

    encoder_path: str = field(default="vision_encoder", metadata={"help": "Dotted path of the image encoder."})

    def matches(self, key: str) -> bool:
        return bool(re.fullmatch(rf"(?:.*\.)?{re.escape(self.encoder_path)}\..+", key))
