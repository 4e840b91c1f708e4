"""``PeftArguments``: the recipe keys that choose the student's PEFT method."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["PeftArguments"]


@dataclass
class PeftArguments:
    """The PEFT method of the student and its options (merged over the method's paper defaults)."""

    peft_method: str = field(default="lora", metadata={"help": "Registered PEFT method name."})
    peft_config: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "Options for the method, e.g. {r: 4, lora_alpha: 4}."})
