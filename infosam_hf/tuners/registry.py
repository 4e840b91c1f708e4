"""PEFT methods for the student, selected by name from a recipe (``peft_method`` + ``peft_config``).

The menu: the project's tuners (``sam_adapter``, the paper's setting; ``adaptformer``, ``conv_lora``,
``gsam_lora``, ``gsam_conv_lora``, ``bitfit``, ``decoder_only``; the model variants ``gsam`` and ``samus``), ``lora`` with the project's defaults, and any
other peft method by its peft name (``loha``, ``lokr``, ``adalora``, ``ia3``, ``oft``, ``boft``, ``vera`` …;
``lora`` with ``use_dora: true`` is DoRA). Recipe keys override the defaults. Every method trains the mask
decoder (``modules_to_save``) unless the recipe sets ``modules_to_save`` itself; the relation module is always
added. :func:`register_peft_builder` adds a builder under a new name.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import peft.mapping
from peft import LoraConfig, PeftConfig, PeftModel, PromptLearningConfig, get_peft_model
from peft.tuners.tuners_utils import BaseTunerLayer
from torch import nn

from ..relation import get_relation_module, RELATION_MODULE_NAME
from ..models.sam2 import is_sam2
from ..quiet import peft_wrapping
from . import adaptformer, bitfit, conv_lora, decoder_only, gsam_conv_lora, gsam_lora, sam_adapter, variants
from .base import DECODER_MODULE_NAME, SamTunerConfig

__all__ = ["PEFT_METHODS", "register_peft_builder", "build_peft_config", "build_student", "parameter_groups",
           "available_methods"]

PEFT_METHODS: dict[str, Callable[[dict[str, Any]], PeftConfig]] = {}
PROJECT_TUNERS = (sam_adapter.SamAdapterConfig, adaptformer.AdaptFormerConfig, conv_lora.ConvLoraConfig,
                  gsam_lora.GsamLoraConfig, gsam_conv_lora.GsamConvLoraConfig, bitfit.BitFitConfig,
                  decoder_only.DecoderOnlyConfig, variants.GsamConfig, variants.SamusConfig)
# stock methods whose installed peft layer cannot run on SAM's (N, H, W, C) tokens
UNSUPPORTED = {"oft": "peft's OFT Linear layer takes SAM's (N, H, W, C) tokens for a conv input and fails; "
                      "use boft"}
STOCK_DEFAULTS = {"target_modules": ["qkv"], "feedforward_modules": []}  # stock methods adapt the fused qkv
# SAM 2: the block-level tuners find the Hiera blocks at this path (each adapter takes its block's width); the
# gsam/conv tuners reshape SAM's ViT attention and have no Hiera counterpart
SAM2_BLOCKS_PATH = "vision_encoder.backbone.blocks"
SAM2_BLOCK_TUNERS = ("sam_adapter", "adaptformer")
VIT_ONLY_TUNERS = ("conv_lora", "gsam_lora", "gsam_conv_lora")


def register_peft_builder(name: str):
    """Decorator registering ``fn(peft_config: dict) -> PeftConfig`` under ``name`` in this package's menu
    (named apart from peft's ``register_peft_method``, which registers a tuner class)."""

    def wrap(fn):
        PEFT_METHODS[name] = fn
        return fn

    return wrap


def _make_config(config_cls: type[PeftConfig], defaults: dict[str, Any], options: dict[str, Any]) -> PeftConfig:
    kwargs = {"modules_to_save": [DECODER_MODULE_NAME], **defaults, **options}
    try:
        return config_cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"peft_config: {err}") from None


for _config_cls in PROJECT_TUNERS:
    register_peft_builder(_config_cls.peft_name)(
        lambda options, _cls=_config_cls: _make_config(_cls, {}, options))


@register_peft_builder("lora")
def lora_config(options: dict[str, Any]) -> LoraConfig:
    """LoRA r=4, alpha=4, no dropout, on the fused ``qkv`` of every image-encoder layer (``use_dora: true`` for
    DoRA), with the whole mask decoder trained."""
    return _make_config(LoraConfig, {"r": 4, "lora_alpha": 4, "lora_dropout": 0.0, "target_modules": ["qkv"]}, options)


def _stock_builder(method: str) -> Callable[[dict[str, Any]], PeftConfig] | None:
    """A builder for a stock peft method named ``method`` (its ``PeftConfig`` class), or ``None``."""
    config_cls = peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING.get(method.upper())
    if (config_cls is None or issubclass(config_cls, (SamTunerConfig, PromptLearningConfig))
            or not method.islower()):
        return None  # unknown, one of ours (registered by name), or prompt learning (needs a text model)
    fields = inspect.signature(config_cls).parameters
    defaults = {key: value for key, value in STOCK_DEFAULTS.items() if key in fields}
    if "modules_to_save" not in fields:
        return None
    return lambda options: _make_config(config_cls, defaults, options)


def available_methods() -> list[str]:
    """Names a recipe's ``peft_method`` may take."""
    names = [str(getattr(name, "value", name)).lower() for name in peft.mapping.PEFT_TYPE_TO_CONFIG_MAPPING]
    stock = [name for name in names if name not in UNSUPPORTED and _stock_builder(name) is not None]
    return sorted(set(PEFT_METHODS) | set(stock))


def build_peft_config(method: str, options: dict[str, Any] | None = None) -> PeftConfig:
    """Build the ``PeftConfig`` of ``method`` and add the relation module to ``modules_to_save``."""
    if method in UNSUPPORTED and method not in PEFT_METHODS:
        raise ValueError(f"peft_method={method!r}: {UNSUPPORTED[method]}")
    builder = PEFT_METHODS.get(method) or _stock_builder(method)
    if builder is None:
        raise ValueError(f"peft_method={method!r} is not known; available: {available_methods()}")
    config = builder(dict(options or {}))
    modules = list(config.modules_to_save or [])
    if RELATION_MODULE_NAME not in modules:
        modules.append(RELATION_MODULE_NAME)
    config.modules_to_save = modules
    return config


def build_student(sam: nn.Module, method: str = "lora", options: dict[str, Any] | None = None,
                  freeze_relation: bool = False) -> PeftModel:
    """Wrap a SAM (or SAM 2) that already carries a relation module with the chosen PEFT method.

    On SAM 2, ``sam_adapter`` and ``adaptformer`` adapt the Hiera blocks (``blocks_path``), each adapter as wide
    as its block's stage."""
    if not hasattr(sam, RELATION_MODULE_NAME):
        raise ValueError("attach_relation_module(sam) must be called before build_student()")
    if is_sam2(sam):
        if method in VIT_ONLY_TUNERS:
            raise ValueError(f"peft_method={method} reshapes SAM's ViT attention and has no SAM 2 (Hiera) form; use "
                             f"{', '.join(SAM2_BLOCK_TUNERS)}, lora, bitfit, decoder_only or a stock peft method")
        if method in SAM2_BLOCK_TUNERS:
            options = {"blocks_path": SAM2_BLOCKS_PATH, **(options or {})}
    with peft_wrapping():
        model = get_peft_model(sam, build_peft_config(method, options))
    if freeze_relation:
        get_relation_module(model).requires_grad_(False)
    return model


PARAMETER_GROUPS = ("adapter", "decoder", "LayerNorms", "relation module", "other")


def parameter_groups(model: nn.Module, trainable_only: bool = True) -> dict[str, int]:
    """Parameter counts by group: adapter, decoder, LayerNorms (trained norms or their deltas), relation module,
    other. Each parameter is counted once."""
    adapter_ids = set()
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            for attr in module.adapter_layer_names:
                container = getattr(module, attr, None)
                if isinstance(container, nn.Module):
                    adapter_ids.update(id(p) for p in container.parameters())
    norm_ids = {id(p) for m in model.modules() if isinstance(m, (nn.LayerNorm, sam_adapter.NormDeltaLayer))
                for p in m.parameters()}
    counts = dict.fromkeys(PARAMETER_GROUPS, 0)
    for name, param in model.named_parameters():
        if trainable_only and not param.requires_grad:
            continue
        if RELATION_MODULE_NAME in name:
            group = "relation module"
        elif DECODER_MODULE_NAME in name:
            group = "decoder"
        elif id(param) in norm_ids:
            group = "LayerNorms"
        elif id(param) in adapter_ids:
            group = "adapter"
        else:
            group = "other"
        counts[group] += param.numel()
    return counts
