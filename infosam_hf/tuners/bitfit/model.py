"""``BitFitModel``: the tuner that adds bias deltas to the image encoder."""

from __future__ import annotations

from ..base import SamTuner
from .layer import BIASED_TYPES, BiasDeltaLayer

__all__ = ["BitFitModel"]


class BitFitModel(SamTuner):
    prefix = "bitfit_"
    layer_cls = BiasDeltaLayer

    def _check_target_module_exists(self, peft_config, key: str) -> bool:
        if not peft_config.matches(key):
            return False
        module = self.model.get_submodule(key)
        return isinstance(module, BIASED_TYPES) and getattr(module, "bias", None) is not None
