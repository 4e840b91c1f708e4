"""PEFT methods for the student, one builder per method, selected by name from a recipe.

A builder takes the recipe's ``peft_config`` mapping and returns a ``peft.PeftConfig``. The paper's
defaults are filled in; recipe keys override them. New methods (bottleneck Adapter, AdaptFormer,
ConvLoRA) register here with :func:`register_peft_method` and need no change in the trainer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model
from torch import nn

from ..models.sam import get_relation_module
from ..relation import RELATION_MODULE_NAME

__all__ = ["PEFT_METHODS", "register_peft_method", "build_peft_config", "build_student"]

PEFT_METHODS: dict[str, Callable[[dict[str, Any]], PeftConfig]] = {}

DECODER_MODULE_NAME = "mask_decoder"


def register_peft_method(name: str):
    """Decorator registering ``fn(peft_config: dict) -> PeftConfig`` under ``name``."""

    def wrap(fn):
        PEFT_METHODS[name] = fn
        return fn

    return wrap


@register_peft_method("lora")
def lora_config(options: dict[str, Any]) -> LoraConfig:
    """The paper's LoRA: r=4, alpha=4, no dropout, on the fused ``qkv`` of every image-encoder layer,
    with the whole mask decoder trained."""
    kwargs = {"r": 4, "lora_alpha": 4, "lora_dropout": 0.0, "target_modules": ["qkv"],
              "modules_to_save": [DECODER_MODULE_NAME]}
    kwargs.update(options)
    try:
        return LoraConfig(**kwargs)
    except TypeError as err:
        raise ValueError(f"peft_config: {err}") from None


def build_peft_config(method: str, options: dict[str, Any] | None = None) -> PeftConfig:
    """Build the ``PeftConfig`` of ``method`` and add the relation module to ``modules_to_save``."""
    if method not in PEFT_METHODS:
        raise ValueError(f"peft_method={method!r} is not known; available: {sorted(PEFT_METHODS)}")
    config = PEFT_METHODS[method](dict(options or {}))
    modules = list(config.modules_to_save or [])
    if RELATION_MODULE_NAME not in modules:
        modules.append(RELATION_MODULE_NAME)
    config.modules_to_save = modules
    return config


def build_student(sam: nn.Module, method: str = "lora", options: dict[str, Any] | None = None,
                  freeze_relation: bool = False) -> PeftModel:
    """Wrap a SAM that already carries a relation module with the chosen PEFT method."""
    if not hasattr(sam, RELATION_MODULE_NAME):
        raise ValueError("attach_relation_module(sam) must be called before build_student()")
    model = get_peft_model(sam, build_peft_config(method, options))
    if freeze_relation:
        get_relation_module(model).requires_grad_(False)
    return model
