"""Shared plumbing of the project's peft tuners: one config, layer and tuner base, and their registration.

Each method (``sam_adapter``, ``adaptformer``, ``conv_lora``, ``gsam_lora``, ``gsam_conv_lora``, ``bitfit``,
``decoder_only``) is a real peft method: a ``PeftConfig`` subclass, a ``BaseTuner`` and ``BaseTunerLayer``
layers, registered under its upper-case name so that ``adapter_config.json`` names it and
``PeftModel``/``AutoPeftModel.from_pretrained`` rebuild it after ``import infosam_hf``.

peft 0.21's public ``register_peft_method`` accepts only names of its ``PeftType`` enum, so registration adds
string keys to ``peft.mapping``'s three method tables (config, tuner, parameter prefix). These tables are
internal: :func:`check_peft_route` fails loudly at import if an upgrade changes them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import peft
import torch
from peft import PeftConfig
from peft.tuners.tuners_utils import BaseTuner, BaseTunerLayer
from torch import nn

__all__ = [
    "DECODER_MODULE_NAME", "SamTunerConfig", "SamTunerLayer", "SamTuner", "ZeroDelta", "TESTED_PEFT",
    "check_peft_route", "register_sam_tuner", "pop_auxiliary_loss",
]

DECODER_MODULE_NAME = "mask_decoder"
TESTED_PEFT = ">=0.21,<0.22"  # keep in step with pyproject.toml
_PEFT_TABLES = ("PEFT_TYPE_TO_CONFIG_MAPPING", "PEFT_TYPE_TO_TUNER_MAPPING", "PEFT_TYPE_TO_PREFIX_MAPPING")


def check_peft_route() -> None:
    """Raise ``ImportError`` unless ``peft.mapping`` still has the three method tables registration fills."""
    import peft.mapping as mapping

    missing = [name for name in _PEFT_TABLES if not isinstance(getattr(mapping, name, None), dict)]
    if missing:
        raise ImportError(f"peft {peft.__version__}: peft.mapping lacks {missing}; infosam-hf registers its tuners "
                          f"there and is tested with peft{TESTED_PEFT}")


def register_sam_tuner(config_cls: type[SamTunerConfig], tuner_cls: type[SamTuner]) -> None:
    """Make ``config_cls.peft_name`` a peft method (config, tuner and prefix tables of ``peft.mapping``)."""
    import peft.mapping as mapping

    check_peft_route()
    key = config_cls.peft_name.upper()
    taken = {prefix: name for name, prefix in mapping.PEFT_TYPE_TO_PREFIX_MAPPING.items() if name != key}
    for prefix, name in taken.items():
        if prefix and (prefix in tuner_cls.prefix or tuner_cls.prefix in prefix):
            raise ValueError(f"tuner prefix {tuner_cls.prefix!r} of {key} overlaps {prefix!r} of {name}")
    mapping.PEFT_TYPE_TO_CONFIG_MAPPING[key] = config_cls
    mapping.PEFT_TYPE_TO_TUNER_MAPPING[key] = tuner_cls
    mapping.PEFT_TYPE_TO_PREFIX_MAPPING[key] = tuner_cls.prefix


@dataclass
class SamTunerConfig(PeftConfig):
    """Options shared by the project's tuners: which blocks and sub-modules are adapted, what else is trained.

    A module is adapted when its name is ``<blocks_path>.<i>[.<path>].<name>`` with ``name`` in ``target_modules`` and
    ``i`` in ``block_indices`` (all blocks when ``None``), so the same tuner fits other ViT-style encoders
    (e.g. SAM 2's Hiera blocks) by changing ``blocks_path`` and the names.
    """

    peft_name: ClassVar[str] = ""
    default_target_modules: ClassVar[tuple[str, ...]] = ()

    target_modules: list[str] | None = field(
        default=None, metadata={"help": "Sub-module names inside each adapted block (method default if unset)."})
    block_indices: list[int] | None = field(
        default=None, metadata={"help": "Indices of the adapted blocks; all blocks when unset."})
    blocks_path: str = field(default="vision_encoder.layers",
                             metadata={"help": "Dotted path of the encoder's block list."})
    modules_to_save: list[str] | None = field(
        default_factory=lambda: [DECODER_MODULE_NAME],
        metadata={"help": "Modules trained in full and saved with the adapter (the mask decoder by default)."})

    def __post_init__(self):
        super().__post_init__()
        self.peft_type = self.peft_name.upper()
        if self.target_modules is None:
            self.target_modules = list(self.default_target_modules)
        if isinstance(self.target_modules, str) or not all(isinstance(n, str) for n in self.target_modules):
            raise ValueError(f"{self.peft_name}: target_modules must be a list of sub-module names")
        if self.block_indices is not None and not all(isinstance(i, int) and i >= 0 for i in self.block_indices):
            raise ValueError(f"{self.peft_name}: block_indices must be a list of non-negative integers")

    def matches(self, key: str) -> bool:
        """Whether the module called ``key`` is adapted."""
        names = "|".join(re.escape(name) for name in self.target_modules)
        found = re.fullmatch(rf"(?:.*\.)?{re.escape(self.blocks_path)}\.(\d+)\.(?:.*\.)?({names})", key)
        return bool(found) and (self.block_indices is None or int(found.group(1)) in self.block_indices)


class ZeroDelta(nn.Module):
    """Zero-initialised additive deltas for a module's affine parameters (``weight`` and/or ``bias``)."""

    def __init__(self, width: int, names: tuple[str, ...] = ("weight", "bias")):
        super().__init__()
        for name in names:
            self.register_parameter(name, nn.Parameter(torch.zeros(width)))


class SamTunerLayer(nn.Module, BaseTunerLayer):
    """A wrapped module (``base_layer``) plus one entry per adapter in each ``adapter_layer_names`` ModuleDict.

    Subclasses define :meth:`build` (the adapter modules for one adapter) and :meth:`adapted_forward`. With
    adapters disabled, or none active, the forward is exactly the base module's.
    """

    adapter_layer_names: tuple[str, ...] = ()

    def __init__(self, base_layer: nn.Module, num_heads: int | None = None):
        super().__init__()
        self.base_layer = base_layer
        self.num_heads = num_heads
        self._disable_adapters = False
        self.merged_adapters = []
        for name in self.adapter_layer_names:
            setattr(self, name, nn.ModuleDict())

    def build(self, config: SamTunerConfig) -> dict[str, nn.Module]:
        """``{adapter_layer_name: module}`` for one new adapter."""
        raise NotImplementedError

    def adapted_forward(self, adapters: list[str], *args: Any, **kwargs: Any):
        """The forward with the given (present, active) adapters applied."""
        raise NotImplementedError

    def update_layer(self, adapter_name: str, config: SamTunerConfig) -> None:
        reference = next(self.base_layer.parameters(), None)
        for name, module in self.build(config).items():
            if reference is not None:
                module = module.to(device=reference.device)
            getattr(self, name)[adapter_name] = module
        self.set_adapter(self.active_adapters)

    def adapters_in_use(self) -> list[str]:
        present = getattr(self, self.adapter_layer_names[0])
        return [] if self.disable_adapters else [name for name in self.active_adapters if name in present]

    def forward(self, *args: Any, **kwargs: Any):
        adapters = self.adapters_in_use()
        if not adapters:
            return self.base_layer(*args, **kwargs)
        return self.adapted_forward(adapters, *args, **kwargs)

    def merge(self, safe_merge: bool = False, adapter_names: list[str] | None = None) -> None:
        raise ValueError(f"{type(self).__name__}: this adapter cannot be merged into the base weights; "
                         "load it with PeftModel.from_pretrained instead of exporting a merged model")


class SamTuner(BaseTuner):
    """The tuner base: matches modules through the config, wraps each in :meth:`layer_class`'s layer."""

    prefix: str = ""
    tuner_layer_cls = SamTunerLayer
    target_module_mapping: dict[str, list[str]] = {}

    def _prepare_adapter_config(self, peft_config: SamTunerConfig, model_config: dict) -> SamTunerConfig:
        return peft_config

    def _check_target_module_exists(self, peft_config: SamTunerConfig, key: str) -> bool:
        return peft_config.matches(key)

    layer_cls: type[SamTunerLayer] | None = None  # the layer class that wraps every target

    def layer_class(self, config: SamTunerConfig, target: nn.Module) -> type[SamTunerLayer]:
        """The layer class that wraps ``target`` (``layer_cls`` unless a tuner picks per target)."""
        if self.layer_cls is None:
            raise NotImplementedError(f"{type(self).__name__} sets no layer_cls")
        return self.layer_cls

    def _create_and_replace(self, peft_config: SamTunerConfig, adapter_name: str, target: nn.Module,
                            target_name: str, parent: nn.Module, current_key: str, **kwargs: Any) -> None:
        if isinstance(target, SamTunerLayer):
            target.update_layer(adapter_name, peft_config)
            return
        num_heads = getattr(parent, "num_attention_heads", getattr(parent, "num_heads", None))
        layer = self.layer_class(peft_config, target)(target, num_heads=num_heads)
        layer.update_layer(adapter_name, peft_config)
        self._replace_module(parent, target_name, layer, target)

    def _unload_and_optionally_merge(self, *args: Any, **kwargs: Any):
        names = sorted({str(self.peft_config[name].peft_type).lower() for name in self.active_adapters})
        raise ValueError(f"{', '.join(names)}: the adapter cannot be merged into SAM's weights; load it with "
                         "PeftModel.from_pretrained (or AutoPeftModel) instead")

    def pop_auxiliary_loss(self) -> torch.Tensor | None:
        """Sum and clear the auxiliary losses the layers recorded in their last training forward."""
        losses = [loss for module in self.model.modules() if isinstance(module, SamTunerLayer)
                  for loss in [module.__dict__.pop("auxiliary_loss", None)] if loss is not None]
        return torch.stack([loss.reshape(()) for loss in losses]).sum() if losses else None


def pop_auxiliary_loss(model: nn.Module) -> torch.Tensor | None:
    """The auxiliary loss a (possibly wrapped) PEFT model's tuner reports, cleared; ``None`` if it has none."""
    model = getattr(model, "module", model)  # DDP
    tuner = getattr(model, "base_model", None)
    pop = getattr(type(tuner), "pop_auxiliary_loss", None) if tuner is not None else None
    return pop(tuner) if pop is not None else None
