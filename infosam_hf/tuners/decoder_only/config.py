"""``DecoderOnlyConfig``: no adapter layers; only the mask decoder is trained."""

from __future__ import annotations

from dataclasses import dataclass

from peft.utils.constants import DUMMY_TARGET_MODULES

from ..base import SamTunerConfig

__all__ = ["DecoderOnlyConfig"]


@dataclass
class DecoderOnlyConfig(SamTunerConfig):
    """The mask decoder trained in full (``modules_to_save``), the image encoder frozen: G-SAM's "SAM" row."""

    peft_name = "decoder_only"

    def __post_init__(self):
        self.target_modules = None
        super().__post_init__()
        self.target_modules = DUMMY_TARGET_MODULES  # peft's marker for "adapt no module"

    def matches(self, key: str) -> bool:
        return False
