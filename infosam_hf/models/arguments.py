"""``ModelArguments``: the recipe keys that choose and shape the SAM."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ..choices import check_choices

__all__ = ["ModelArguments", "MulticlassHead"]

MulticlassHead = Literal["project", "gsam"]
ModelVariant = Literal["gsam", "samus"]  # the keys of infosam_hf.tuners.variants.VARIANTS (tests/test_variants.py)

# Path keys for which `none` / `null` on the command line or in a recipe mean "not set".
UNSET_WORDS_KEYS = ("model_name_or_path", "teacher_model_name_or_path", "relation_from")


@dataclass
class ModelArguments:
    """Which SAM to fine-tune, at which input size, and the optional separate teacher."""

    model_name_or_path: str | None = field(
        default=None, metadata={"help": "SAM or SAM 2 checkpoint: a hub id such as facebook/sam-vit-base or "
                                        "facebook/sam2.1-hiera-tiny, or a directory; on the command line it "
                                        "replaces a recipe's sam_config ('none' unsets it).",
                                "resets": "sam_config"})
    sam_config: dict[str, Any] | None = field(
        default=None, metadata={"help": "Build a random SAM from SamConfig fields instead (demo and tests); "
                                        "with model_type: sam2, a SAM 2 from Sam2Config fields. On the command "
                                        "line it replaces a recipe's model_name_or_path.",
                                "resets": "model_name_or_path"})
    image_size: int | None = field(
        default=None, metadata={"help": "Train at this fixed input size (default: the checkpoint's)."})
    dynamic_input_size: bool = field(
        default=False, metadata={"help": "Take any input HxW per batch (G-SAM): crops, non-square images."})
    model_variant: ModelVariant | None = field(
        default=None, metadata={"help": "G-SAM's architectures on the base SAM: gsam or samus (their own trained "
                                        "modules replace peft_method; peft_config holds their options)."})
    multiclass_head: MulticlassHead = field(
        default="project", metadata={"help": "num_labels > 1: 'project' (C + 2 decoder tokens, transformers' init) or "
                                             "'gsam' (G-SAM's head: 5C + 1 tokens N(0, 1), its token reading)."})
    decoder_layer_norm_eps: float | None = field(
        default=None, metadata={"help": "Eps of the mask decoder's two-way-transformer LayerNorms: 1e-5 as the original "
                                        "SAM code (InfoSAM's and G-SAM's), default the checkpoint's (transformers' "
                                        "hub configs: 1e-6)."})
    attn_implementation: Literal["sdpa", "eager"] | None = field(
        default=None, metadata={"help": "Vision attention: 'sdpa' (fused; transformers' default) or 'eager'."})
    teacher_model_name_or_path: str | None = field(
        default=None, metadata={"help": "A separate frozen teacher SAM (default: the student with adapters off)."})
    relation_from: str | None = field(
        default=None, metadata={"help": "Initialise the relation module from an adapter dir/repo or an official .pth."})
    freeze_relation: bool = field(default=False, metadata={"help": "Keep the relation module fixed."})

    def __post_init__(self):
        check_choices(self)
        for key in UNSET_WORDS_KEYS:  # `--model_name_or_path none` unsets the recipe's value; it is not a Hub id
            value = getattr(self, key)
            if isinstance(value, str) and value.strip().lower() in ("none", "null", ""):
                setattr(self, key, None)
        if self.model_name_or_path and self.sam_config:
            raise ValueError(f"model_name_or_path={self.model_name_or_path!r} and sam_config are both set: a "
                             "checkpoint or a random SAM from config fields, not both (either one on the command line "
                             "replaces the recipe's other)")
