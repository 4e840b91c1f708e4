"""``SamAdapterConfig``: InfoSAM's series bottleneck adapters (the paper's setting)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..base import SamTunerConfig

__all__ = ["ADAPTER_INITS", "BottleneckAdapterConfig", "SamAdapterConfig"]

ADAPTER_INITS = ("zero", "official")


@dataclass
class BottleneckAdapterConfig(SamTunerConfig):
    """Options of bottleneck adapters: width ratio and the init of the last Linear."""

    adapter_ratio: float = field(default=0.25, metadata={"help": "Bottleneck width as a fraction of the width."})
    adapter_init: str = field(default="zero", metadata={"help": "'zero' (step 0 = SAM) or 'official'."})

    def __post_init__(self):
        super().__post_init__()
        if self.adapter_init not in ADAPTER_INITS:
            raise ValueError(f"{self.peft_name}: adapter_init={self.adapter_init!r}; expected one of {ADAPTER_INITS}")
        if not 0 < self.adapter_ratio <= 4:
            raise ValueError(f"{self.peft_name}: adapter_ratio={self.adapter_ratio} must be in (0, 4]")


@dataclass
class SamAdapterConfig(BottleneckAdapterConfig):
    """Series adapters after each adapted block's attention and MLP, plus trained LayerNorms.

    ``a = attn(norm1(x))`` becomes ``a + A(a)`` and ``m = mlp(norm2(x))`` becomes ``m + A(m)``, with
    ``A = Linear(d, ratio·d) → GELU → Linear(ratio·d, d)``; the LayerNorms of adapted blocks learn zero-initialised
    deltas, so the adapter-disabled model is exactly the pre-trained SAM. Defaults follow the official configs
    (blocks 2–11 of ViT-B, ratio 0.25). ``adapter_init="zero"`` zero-initialises the last Linear (step 0 equals SAM);
    ``"official"`` keeps PyTorch's default init, as the official code does.
    """

    peft_name = "sam_adapter"
    default_target_modules = ("attn", "mlp", "layer_norm1", "layer_norm2")

    first_block: int = field(default=2, metadata={
        "help": "Without block_indices: adapt every block from this one on (every block of an encoder that has "
                "no more than first_block blocks); saved as block_indices."})
