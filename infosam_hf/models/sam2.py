"""SAM 2 (``Sam2Model``, Hiera encoder + FPN neck) as an InfoSAM backbone: config fields, loading, input frame.

The model family is read from a checkpoint's ``config.json`` (``model_type: sam2``) or, for random models
built from recipe fields, from ``sam_config: {model_type: sam2, ...}``. Differences from SAM that the rest
of the package follows through the helpers here:

* input: a plain resize to the square ``image_size`` (no aspect ratio kept, no padding), same ImageNet
  normalisation as SAM (:func:`keeps_aspect_ratio`);
* the mask decoder attends to the lowest-resolution FPN level and reads the two higher-resolution levels
  as skip features; its output tokens are object score, IoU, then the mask tokens;
* ``multimask_output=False`` means mask token 0 everywhere: the decoder's "dynamic multimask via
  stability" fallback (eval only, picks one of the multimask outputs, which fine-tuning does not train)
  is switched off (:func:`use_single_mask_output`).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from transformers import Sam2Config, Sam2Model
from transformers.image_utils import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from transformers.image_utils import IMAGENET_DEFAULT_STD as IMAGENET_STD
from transformers.models.sam2.configuration_sam2 import Sam2HieraDetConfig
from transformers.utils import IMAGE_PROCESSOR_NAME

__all__ = [
    "SAM2_MODEL_TYPE",
    "Sam2ImageProcessorConfig",
    "build_sam2_config",
    "build_sam2",
    "is_sam2",
    "keeps_aspect_ratio",
    "sam_input_size",
    "use_single_mask_output",
]

SAM2_MODEL_TYPE = "sam2"


def _config_of(model_or_config: Any) -> Any:
    config = getattr(model_or_config, "config", model_or_config)
    if hasattr(model_or_config, "get_base_model"):  # a PeftModel
        config = model_or_config.get_base_model().config
    return config


def is_sam2(model_or_config: Any) -> bool:
    """Whether a (PEFT-wrapped) model, a config or a config dict is SAM 2."""
    config = _config_of(model_or_config)
    model_type = config.get("model_type") if isinstance(config, dict) else getattr(config, "model_type", None)
    return model_type == SAM2_MODEL_TYPE


def sam_input_size(model_or_config: Any) -> int:
    """The square input side of a SAM or SAM 2 model (or config)."""
    config = _config_of(model_or_config)
    if is_sam2(config):
        return int(config.prompt_encoder_config.image_size)
    return int(config.vision_config.image_size)


def keeps_aspect_ratio(model_or_config: Any) -> bool:
    """SAM resizes the longest side and pads; SAM 2 resizes to the full square."""
    return not is_sam2(model_or_config)


def build_sam2_config(fields: dict[str, Any]) -> Sam2Config:
    """A consistent ``Sam2Config`` from partial recipe fields (tiny random models for tests and the demo).

    Keys: ``image_size`` (square input, default 1024), ``backbone_config`` (``Sam2HieraDetConfig`` fields:
    ``hidden_size``, ``embed_dim_per_stage``, ``blocks_per_stage`` …), ``vision_config``,
    ``prompt_encoder_config``, ``mask_decoder_config``, ``initializer_range`` (``model_type: sam2`` is
    accepted and dropped). The decoder width drives the FPN width and the prompt encoder; the backbone's
    per-stage widths give the neck's channel list; the feature sizes follow from the input size and the
    backbone's strides (patch stride, then ×2 per query-pool stage).
    """
    fields = copy.deepcopy(dict(fields))
    fields.pop("model_type", None)
    known = {"image_size", "backbone_config", "vision_config", "prompt_encoder_config", "mask_decoder_config",
             "initializer_range"}
    unknown = set(fields) - known
    if unknown:
        raise ValueError(f"sam_config (model_type sam2): unknown keys {sorted(unknown)}; expected some of "
                         f"{sorted(known)}")
    image_size = int(fields.get("image_size", 1024))
    init_range = fields.get("initializer_range", 0.02)
    backbone = dict(fields.get("backbone_config") or {})
    vision = dict(fields.get("vision_config") or {})
    prompt = dict(fields.get("prompt_encoder_config") or {})
    decoder = dict(fields.get("mask_decoder_config") or {})
    width = decoder.setdefault("hidden_size", vision.get("fpn_hidden_size", 256))
    decoder.setdefault("iou_head_hidden_dim", width)
    decoder.setdefault("mlp_dim", 8 * width)
    backbone.setdefault("image_size", [image_size, image_size])
    backbone.setdefault("initializer_range", init_range)
    hiera = Sam2HieraDetConfig(**backbone)
    stride = hiera.patch_stride[0] if isinstance(hiera.patch_stride, (list, tuple)) else hiera.patch_stride
    pool = hiera.query_stride[0] if isinstance(hiera.query_stride, (list, tuple)) else hiera.query_stride
    num_stages = len(hiera.blocks_per_stage)
    stage_starts = [sum(hiera.blocks_per_stage[:i]) for i in range(1, min(num_stages, hiera.num_query_pool_stages + 1))]
    pooled_global = sorted(set(stage_starts) & set(hiera.global_attention_blocks))
    if pooled_global:
        raise ValueError(f"sam_config (model_type sam2): global_attention_blocks {pooled_global} are the first blocks "
                         "of query-pool stages, which need windowed attention; pick later blocks")
    levels = vision.setdefault("num_feature_levels", 3)
    strides = [stride * pool ** min(i, hiera.num_query_pool_stages) for i in range(num_stages)]
    vision.setdefault("backbone_channel_list", list(reversed(hiera.embed_dim_per_stage)))
    vision.setdefault("backbone_feature_sizes", [[image_size // s, image_size // s] for s in strides[:levels]])
    vision.setdefault("fpn_hidden_size", width)
    vision.setdefault("initializer_range", init_range)
    vision["backbone_config"] = hiera.to_dict()
    prompt.setdefault("hidden_size", width)
    prompt["image_size"] = image_size
    prompt["patch_size"] = strides[levels - 1]  # the decoder's grid is the lowest-resolution FPN level
    if vision["fpn_hidden_size"] != width or prompt["hidden_size"] != width or width % 8:
        raise ValueError("sam_config (model_type sam2): the FPN, prompt encoder and mask decoder widths must be equal "
                         f"and a multiple of 8 (got {vision['fpn_hidden_size']}, {prompt['hidden_size']}, {width})")
    if image_size % strides[levels - 1]:
        raise ValueError(f"sam_config (model_type sam2): image_size={image_size} must be a multiple of the lowest "
                         f"FPN level's stride {strides[levels - 1]}")
    return Sam2Config(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder,
                      initializer_range=init_range)


def use_single_mask_output(model: Sam2Model) -> Sam2Model:
    """Make ``multimask_output=False`` return mask token 0 in eval mode too (as in training).

    SAM 2's decoder otherwise swaps in the best multimask output when token 0's mask is unstable; fine-tuning
    trains token 0 only, so that fallback would pick untrained outputs. The setting is stored in the config,
    so a saved base or a merged export keeps it.
    """
    model.config.mask_decoder_config.dynamic_multimask_via_stability = False
    model.mask_decoder.dynamic_multimask_via_stability = False
    return model


def build_sam2(fields: dict[str, Any], seed: int | None = None) -> Sam2Model:
    """A random ``Sam2Model`` from recipe fields, with the prompt and image positional encodings shared.

    ``Sam2Model`` draws its two random Fourier position matrices (image-wide and prompt encoder)
    independently; the original SAM 2 has one. Prompts can only be located when they agree, so the
    prompt encoder's copy is set to the image one (std 1, as SAM 2 initialises it).
    """
    if seed is not None:
        torch.manual_seed(seed)
    model = Sam2Model(build_sam2_config(fields))
    with torch.no_grad():
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding)
    return use_single_mask_output(model)


class Sam2ImageProcessorConfig:
    """``Sam2ImageProcessor``'s ``preprocessor_config.json`` for an input size, written without torchvision.

    The trainer saves it beside the adapter (``processing_class``); ``AutoImageProcessor.from_pretrained``
    reads it back as a ``Sam2ImageProcessor`` where torchvision is installed. It describes exactly what
    :class:`~infosam_hf.data.transforms.SamSegmentationTransform` does for SAM 2: a bilinear resize to the
    square, rescale to 0..1 and ImageNet normalisation.
    """

    model_input_names = ["pixel_values"]

    def __init__(self, image_size: int):
        self.image_size = int(image_size)

    def to_dict(self) -> dict[str, Any]:
        side = self.image_size
        return {"image_processor_type": "Sam2ImageProcessor", "do_resize": True,
                "size": {"height": side, "width": side}, "mask_size": {"height": side // 4, "width": side // 4},
                "resample": 2, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": IMAGENET_MEAN, "image_std": IMAGENET_STD, "do_convert_rgb": True}

    def save_pretrained(self, save_directory: str | Path, **kwargs) -> list[str]:
        path = Path(save_directory) / IMAGE_PROCESSOR_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return [str(path)]

