"""``gsam`` and ``samus``: G-SAM's GSAM architecture and its SAMUS baseline as peft tuners on a stock ``SamModel``.

``get_peft_model(sam, GsamConfig())`` (or a recipe's ``model_variant: gsam``) turns SAM into the variant; the trained
modules are the adapter, saved in ``adapter_model.safetensors`` with an ``adapter_config.json`` naming the method, and
``PeftModel``/``AutoPeftModel.from_pretrained`` rebuild it from the base SAM after ``import infosam_hf``.
"""

from ..base import register_sam_tuner
from .config import GsamConfig, SamusConfig, VariantConfig
from .layer import GsamEncoder, SamusEncoder
from .model import GsamModel, SamusModel, VariantSamModel, active_variant, load_pretrained_parts
from .resnet import RESNET101_WEIGHTS, download_timm_resnet, load_timm_resnet, timm_to_branch_key

register_sam_tuner(GsamConfig, GsamModel)
register_sam_tuner(SamusConfig, SamusModel)

VARIANTS = {"gsam": GsamConfig, "samus": SamusConfig}

__all__ = ["VARIANTS", "GsamConfig", "SamusConfig", "VariantConfig", "GsamEncoder", "SamusEncoder", "GsamModel",
           "SamusModel", "VariantSamModel", "active_variant", "load_pretrained_parts",
           "RESNET101_WEIGHTS", "download_timm_resnet",
           "load_timm_resnet", "timm_to_branch_key"]
