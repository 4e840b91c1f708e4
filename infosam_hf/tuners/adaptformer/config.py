"""``AdaptFormerConfig``: a scaled bottleneck parallel to each block's MLP (G-SAM's ``SAM_AdaptFormer``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sam_adapter.config import ADAPTER_INITS
from ..base import SamTunerConfig

__all__ = ["AdaptFormerConfig"]


@dataclass
class AdaptFormerConfig(SamTunerConfig):
    """``x + mlp(n) + scale·A(n)`` with ``n = norm2(x)`` in every block; ``A`` as in ``sam_adapter``.

    ``adapter_init="zero"`` zero-initialises the last Linear (step 0 equals SAM); ``"official"`` keeps
    PyTorch's default init.
    """

    peft_name = "adaptformer"
    default_target_modules = ("mlp",)

    adapter_ratio: float = field(default=0.25, metadata={"help": "Bottleneck width as a fraction of the width."})
    adapter_scale: float = field(default=0.5, metadata={"help": "Fixed scale of the adapter branch."})
    adapter_init: str = field(default="zero", metadata={"help": "'zero' (step 0 = SAM) or 'official'."})

    def __post_init__(self):
        super().__post_init__()
        if self.adapter_init not in ADAPTER_INITS:
            raise ValueError(f"{self.peft_name}: adapter_init={self.adapter_init!r}; expected one of {ADAPTER_INITS}")
