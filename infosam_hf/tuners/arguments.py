"""``PeftArguments``: the recipe keys that choose the student's PEFT method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PeftArguments"]


@dataclass
class PeftArguments:
    """The PEFT method of the student and its options (merged over the method's paper defaults)."""

    peft_method: str = field(default="lora", metadata={
        "help": "PEFT method: sam_adapter (the paper's), adaptformer, conv_lora, gsam_lora, gsam_conv_lora, bitfit, "
                "decoder_only, lora, or any peft method name.",
        "resets": "peft_config"})
    peft_config: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Options for the method, e.g. {r: 4, lora_alpha: 4}; replacing "
                                            "peft_method on the command line drops the recipe's peft_config."})
