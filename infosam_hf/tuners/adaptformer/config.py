"""``AdaptFormerConfig``: a scaled bottleneck parallel to each block's MLP (G-SAM's ``SAM_AdaptFormer``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..sam_adapter.config import BottleneckAdapterConfig

__all__ = ["AdaptFormerConfig"]


@dataclass
class AdaptFormerConfig(BottleneckAdapterConfig):
    """``x + mlp(n) + scale·A(n)`` with ``n = norm2(x)`` in every block; ``A`` as in ``sam_adapter``.

    ``adapter_init="zero"`` zero-initialises the last Linear (step 0 equals SAM); ``"official"`` keeps
    PyTorch's default init.
    """

    peft_name = "adaptformer"
    default_target_modules = ("mlp",)

    adapter_scale: float = field(default=0.5, metadata={"help": "Fixed scale of the adapter branch."})
