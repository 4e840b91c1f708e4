"""Configs of the ``gsam`` and ``samus`` model variants: which parts they add and train."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..base import DECODER_MODULE_NAME, SamTunerConfig
from .resnet import RESNET101_WEIGHTS

__all__ = ["VariantConfig", "GsamConfig", "SamusConfig"]


@dataclass
class VariantConfig(SamTunerConfig):
    """Shared options of the model variants. The variant wraps the whole vision encoder (``target_modules``:
    ``vision_encoder``); SAM's own encoder weights stay frozen and the variant's modules are trained.

    With adapters disabled the model is exactly the base SAM (taking any input size).
    """

    default_target_modules = ("vision_encoder",)

    adapter_ratio: float = field(default=0.25, metadata={"help": "Bottleneck width of the adapters / hidden size."})
    adapter_scale: float = field(default=0.5, metadata={"help": "Scale of the MLP adapter branch."})
    cnn_scale: float = field(default=0.5, metadata={"help": "Weight of the CNN features added to the encoder output."})
    rel_pos_grid: int | None = field(
        default=None, metadata={"help": "Token grid the trained global rel_pos tables are resized to at build "
                                        "(2*grid-1 rows); default: the base grid / 2 (32 for a 1024 SAM: 127 -> 63)."})
    train_decoder: bool = field(default=True, metadata={"help": "Train the mask decoder (modules_to_save)."})

    def __post_init__(self):
        super().__post_init__()
        if not self.train_decoder and self.modules_to_save:
            self.modules_to_save = [name for name in self.modules_to_save if name != DECODER_MODULE_NAME]
        if not 0 < self.adapter_ratio <= 1:
            raise ValueError(f"{self.peft_name}: adapter_ratio must be in (0, 1], got {self.adapter_ratio}")

    def save_pretrained(self, save_directory, **kwargs):
        """Record transformers' ``SamModel`` as the base class for ``AutoPeftModel`` (the wrapped model's class is a
        project subclass, which ``AutoPeftModel`` would refuse to import); loading re-applies the variant."""
        if kwargs.get("auto_mapping_dict"):
            kwargs["auto_mapping_dict"] = {"base_model_class": "SamModel", "parent_library": "transformers"}
        return super().save_pretrained(save_directory, **kwargs)

    def matches(self, key: str) -> bool:
        return key.split(".")[-1] in self.target_modules and ".mask_decoder" not in key


@dataclass
class GsamConfig(VariantConfig):
    """G-SAM's GSAM: stride-8 tokens, ResNet branch, pooled-key attention, multi-scale AdaptFormer, PEG, PosCNN."""

    peft_name = "gsam"

    key_grid: int = field(default=3, metadata={"help": "Keys and values are average-pooled to key_grid x key_grid."})
    dilations: list[int] = field(default_factory=lambda: [12, 24, 36],
                                 metadata={"help": "Dilations of the adapter's 3x3 convs besides 1."})
    resnet_depths: list[int] = field(default_factory=lambda: [3, 4, 23],
                                     metadata={"help": "Blocks per ResNet stage (ResNet-101's layers 1-3)."})
    resnet_hidden_sizes: list[int] = field(default_factory=lambda: [256, 512, 1024],
                                           metadata={"help": "Output widths of the ResNet stages."})
    resnet_embedding_size: int = field(default=64, metadata={"help": "Width of the ResNet stem."})
    resnet_weights: str | None = field(
        default=RESNET101_WEIGHTS,
        metadata={"help": "timm ResNet weights (Hub id or directory) loaded into the CNN branch when training "
                          "starts; null keeps the random init. Not used when an adapter is reloaded."})
    train_peg: bool = field(
        default=True, metadata={"help": "Train the PEG (the depthwise conv after block 0); G-SAM leaves it frozen "
                                        "at its random init (its recipes: false)."})

    def __post_init__(self):
        super().__post_init__()
        if len(self.resnet_depths) != len(self.resnet_hidden_sizes):
            raise ValueError("gsam: resnet_depths and resnet_hidden_sizes must have the same length")


@dataclass
class SamusConfig(VariantConfig):
    """G-SAM's SAMUS baseline: stride-8 tokens, a 4-stage CNN with cross-attention at the global blocks.
    G-SAM keeps SAMUS's mask decoder frozen (``train_decoder: false``)."""

    peft_name = "samus"

    train_decoder: bool = field(default=False, metadata={"help": "Train the mask decoder (G-SAM freezes it)."})
