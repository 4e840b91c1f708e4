"""Loading SAM for InfoSAM: checkpoints or config fields, input-size surgery."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, Sam2Model, SamConfig, SamModel

from ..choices import check_choice
from ..relation import RELATION_MODULE_NAME
from ..remote import check_pretrained_name
from .dynamic import DYNAMIC_CONFIG_KEY, enable_dynamic_input_size, resize_pos_embed
from .multiclass import add_multiclass_head, keep_class_channels, sam_num_classes
from .sam2 import SAM2_MODEL_TYPE, build_sam2, is_sam2, sam_input_size, use_single_mask_output

logger = logging.getLogger(__name__)

CONFIG_LOCATION_KEYS = ("revision", "subfolder", "cache_dir", "token", "local_files_only")

__all__ = [
    "CONFIG_CHANGED_ATTR",
    "ORIGINAL_DECODER_LAYER_NORM_EPS",
    "RELATION_MODULE_NAME",
    "build_sam_config",
    "set_decoder_layer_norm_eps",
    "load_pretrained_sam",
    "load_sam",
    "resize_sam_input",
]


ORIGINAL_DECODER_LAYER_NORM_EPS = 1e-5  # segment_anything's TwoWayTransformer: nn.LayerNorm's default
CONFIG_CHANGED_ATTR = "infosam_config_changed"  # set on a model whose config no longer equals its checkpoint's


def set_decoder_layer_norm_eps(model: SamModel, eps: float) -> bool:
    """Set the eps of the mask decoder's two-way-transformer LayerNorms (config and modules; saved with the model).
    The original SAM code uses 1e-5, transformers' SAM configs 1e-6. Returns whether anything changed."""
    decoder_config = model.config.mask_decoder_config
    if eps <= 0:
        raise ValueError(f"decoder_layer_norm_eps must be > 0, got {eps}")
    changed = decoder_config.layer_norm_eps != eps
    decoder_config.layer_norm_eps = eps
    for module in model.mask_decoder.transformer.modules():
        if isinstance(module, nn.LayerNorm) and module.eps != eps:
            module.eps = eps
            changed = True
    if changed:
        setattr(model, CONFIG_CHANGED_ATTR, True)
    return changed


def build_sam_config(fields: dict[str, Any]) -> SamConfig:
    """Build a consistent ``SamConfig`` from partial fields (used for tiny random models).

    Accepts ``vision_config``, ``prompt_encoder_config``, ``mask_decoder_config`` dicts plus top-level
    keys (``initializer_range`` …). The decoder width drives the vision neck's ``output_channels``,
    the prompt encoder width and ``num_pos_feats``; the image size and patch size are shared.
    """
    fields = copy.deepcopy(dict(fields))
    vision = dict(fields.pop("vision_config", {}) or {})
    prompt = dict(fields.pop("prompt_encoder_config", {}) or {})
    decoder = dict(fields.pop("mask_decoder_config", {}) or {})
    known = {"vision_config", "prompt_encoder_config", "mask_decoder_config", "initializer_range"}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"sam_config: unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
    width = decoder.get("hidden_size", vision.get("output_channels", 256))
    decoder.setdefault("hidden_size", width)
    decoder.setdefault("iou_head_hidden_dim", width)
    decoder.setdefault("mlp_dim", 8 * width)
    vision.setdefault("output_channels", width)
    vision.setdefault("num_pos_feats", width // 2)
    vision.setdefault("initializer_range", fields.get("initializer_range", 0.02))
    image_size = vision.setdefault("image_size", 1024)
    patch_size = vision.setdefault("patch_size", 16)
    prompt.setdefault("hidden_size", width)
    prompt["image_size"] = image_size
    prompt["patch_size"] = patch_size
    if vision["num_pos_feats"] * 2 != width or vision["output_channels"] != width or prompt["hidden_size"] != width:
        raise ValueError("sam_config: vision output_channels, 2*num_pos_feats, prompt encoder and mask decoder "
                         f"hidden sizes must all be equal (got {vision['output_channels']}, "
                         f"{2 * vision['num_pos_feats']}, {prompt['hidden_size']}, {width})")
    return SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder,
                     initializer_range=fields.get("initializer_range", 0.02))


def load_pretrained_sam(model_name_or_path: str, **from_pretrained_kwargs) -> SamModel | Sam2Model:
    """``SamModel`` or ``Sam2Model`` from a checkpoint, chosen by its config's ``model_type``.

    A SAM whose saved config records ``dynamic_input_size`` takes any H×W again."""
    check_pretrained_name(model_name_or_path, "model_name_or_path")
    try:
        config, _ = PretrainedConfig.get_config_dict(  # only the keys that say where the config is
            model_name_or_path, **{key: value for key, value in from_pretrained_kwargs.items() if key in CONFIG_LOCATION_KEYS})
        model_type = config.get("model_type")
        if model_type == SAM2_MODEL_TYPE:
            return use_single_mask_output(Sam2Model.from_pretrained(model_name_or_path, **from_pretrained_kwargs))
        if model_type not in ("sam", None):
            raise ValueError(f"model_name_or_path={model_name_or_path!r} is a {model_type!r} checkpoint, "
                             "not SAM (sam) or SAM 2 (sam2)")
        model = SamModel.from_pretrained(model_name_or_path, **from_pretrained_kwargs)
    except OSError as err:
        raise OSError(f"model_name_or_path={model_name_or_path!r}: could not load a SAM checkpoint "
                      f"({str(err).splitlines()[0]})") from None
    if getattr(model.config, DYNAMIC_CONFIG_KEY, False):
        enable_dynamic_input_size(model)
    return keep_class_channels(model)  # a saved G-SAM head returns its C class channels


def load_sam(model_name_or_path: str | None = None, sam_config: dict | None = None,
             image_size: int | None = None, seed: int | None = None, num_labels: int = 1,
             dynamic_input_size: bool = False, attn_implementation: str | None = None,
             multiclass_head: str = "project", **from_pretrained_kwargs) -> SamModel | Sam2Model:
    """Load a ``SamModel`` or ``Sam2Model`` from a checkpoint (hub id or directory) or build one from config
    fields (``sam_config: {model_type: sam2, ...}`` builds a SAM 2, see :func:`~.sam2.build_sam2_config`).

    The family comes from the checkpoint's ``model_type``. If ``image_size`` differs from a SAM checkpoint's,
    the position embeddings are resized (see :func:`resize_sam_input`); SAM 2 keeps its input size.
    ``num_labels > 1`` replaces SAM's mask decoder with a multi-class head of that many channels (see
    :mod:`infosam_hf.models.multiclass`), recorded in the config. ``dynamic_input_size=True`` (or a saved
    config that records it) makes a SAM take any H×W per batch (see
    :func:`~infosam_hf.models.dynamic.enable_dynamic_input_size`).
    ``multiclass_head``: ``project`` or ``gsam`` (G-SAM's 5C + 1 tokens), for a new head.
    ``attn_implementation``: the vision encoder's attention, ``"sdpa"`` (fused, transformers' default)
    or ``"eager"``.
    """
    if attn_implementation is not None:
        check_choice("attn_implementation", attn_implementation, ("sdpa", "eager"))
    if attn_implementation and model_name_or_path:
        from_pretrained_kwargs["attn_implementation"] = attn_implementation
    if model_name_or_path:
        model = load_pretrained_sam(model_name_or_path, **from_pretrained_kwargs)
    elif sam_config and is_sam2(sam_config):
        model = build_sam2(sam_config, seed)
    elif sam_config:
        if seed is not None:
            torch.manual_seed(seed)
        config = build_sam_config(sam_config)
        if attn_implementation:
            config._attn_implementation = attn_implementation
        model = SamModel(config)
        # transformers initialises the random Fourier position features with std = vision hidden // 2, far
        # too high-frequency for a small grid: prompts could not be located. SAM's own init uses std 1.
        with torch.no_grad():
            model.shared_image_embedding.positional_embedding.normal_(0.0, 1.0)
            model.prompt_encoder.shared_embedding.positional_embedding.copy_(
                model.shared_image_embedding.positional_embedding)
    else:
        raise ValueError("Set model_name_or_path (e.g. facebook/sam-vit-base) or sam_config")
    if is_sam2(model) and (num_labels > 1 or dynamic_input_size):
        raise ValueError("num_labels > 1 and dynamic_input_size are SAM-only options: SAM 2 has neither here")
    if image_size and image_size != sam_input_size(model):
        model = resize_sam_input(model, image_size)
    if num_labels > 1 and sam_num_classes(model) != num_labels:  # a saved multi-class SAM keeps its head
        model = add_multiclass_head(model, num_labels, multiclass_head)
    if dynamic_input_size or getattr(model.config, DYNAMIC_CONFIG_KEY, False):
        enable_dynamic_input_size(model)
    return model


def _resize_rel_pos(rel_pos: torch.Tensor, length: int) -> torch.Tensor:
    resized = F.interpolate(rel_pos.detach().float().t().unsqueeze(0), size=length, mode="linear",
                            align_corners=False)
    return resized.squeeze(0).t().to(rel_pos.dtype)


def resize_sam_input(model: SamModel, image_size: int) -> SamModel:
    """Return a copy of ``model`` that takes ``image_size``² inputs.

    The absolute position embedding is resized bicubically, the global-attention relative position
    tables linearly (windowed layers keep theirs), and the prompt encoder's image size and embedding
    size follow. The new model loads the converted state dict strictly. SAM (ViT) only.
    """
    if is_sam2(model):
        raise ValueError(f"image_size={image_size}: input-size surgery is for SAM (ViT) checkpoints; this SAM 2 "
                         f"model runs at its {sam_input_size(model)}x{sam_input_size(model)} input (drop image_size)")
    config = copy.deepcopy(model.config)
    vision = config.vision_config
    patch = vision.patch_size
    if image_size % patch:
        raise ValueError(f"image_size={image_size} must be a multiple of the patch size {patch}")
    grid = image_size // patch
    old_grid = vision.image_size // patch
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if vision.use_abs_pos:
        state["vision_encoder.pos_embed"] = resize_pos_embed(state["vision_encoder.pos_embed"], (grid, grid)).contiguous()
    if vision.use_rel_pos:
        for index in vision.global_attn_indexes:
            for axis in ("h", "w"):
                key = f"vision_encoder.layers.{index}.attn.rel_pos_{axis}"
                if state[key].shape[0] == 2 * old_grid - 1:
                    state[key] = _resize_rel_pos(state[key], 2 * grid - 1)
    vision.image_size = image_size
    config.prompt_encoder_config.image_size = image_size
    config.prompt_encoder_config.image_embedding_size = grid
    resized = SamModel(config).to(model.dtype)
    resized.load_state_dict(state, strict=True)
    resized.infosam_resized_from = getattr(model.config, "_name_or_path", "") or "<in-memory model>"
    logger.info("Resized SAM input from %d to %d (embedding grid %d -> %d)", old_grid * patch, image_size,
                old_grid, grid)
    return resized
