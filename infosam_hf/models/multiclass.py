"""Multi-class (semantic) segmentation on a stock ``SamModel``: C class channels from C mask tokens.

G-SAM turns SAM into a semantic segmenter by giving the mask decoder one mask token and one
hypernetwork MLP per class, fed without prompts. Here that head is built from transformers' own
``SamMaskDecoder`` so the model stays a plain ``SamModel`` (it saves, reloads with
``SamModel.from_pretrained`` / ``AutoPeftModel.from_pretrained`` and merges like any other):

* the decoder config gets ``num_multimask_outputs = C``, i.e. C + 1 mask tokens. Token 0 is SAM's
  single-mask slot; tokens 1..C are the classes, so the stock forward with ``multimask_output=True``
  returns exactly the C class logits (B, 1, C, h, w). Token 0 only rides along in the two-way
  transformer's attention (as G-SAM's surplus tokens do); its MLP and the IoU head get no loss.
* the top-level config records ``infosam_num_classes = C``: the marker every consumer (training,
  evaluation, prediction, the reloaded adapter) reads through :func:`sam_num_classes`.
* initialisation follows G-SAM: the two-way transformer and the upscaling layers are SAM's; class c's
  MLP is a copy of SAM's MLP c for c < 4 (SAM has four), later classes get the default init; the mask
  tokens, the IoU token and the IoU head are re-initialised at random. "Default" and "random" are
  transformers' SAM initialisation (normal with std ``initializer_range``, zero biases), not PyTorch's
  module defaults that G-SAM's code ends up with (e.g. N(0, 1) token embeddings).
"""

from __future__ import annotations

import copy

import torch
from torch import nn
from transformers import SamModel
from transformers.models.sam.modeling_sam import SamMaskDecoder

from .sam2 import _config_of

__all__ = ["NEW_HEAD_ATTR", "NUM_CLASSES_KEY", "add_multiclass_head", "class_token_slice", "freeze_unused_head", "sam_num_classes"]

NUM_CLASSES_KEY = "infosam_num_classes"  # SamConfig attribute: number of class channels (absent: binary)
NEW_HEAD_ATTR = "infosam_new_head"  # set on a model whose head was just built (its base must be saved)


def sam_num_classes(model: nn.Module) -> int:
    """Class channels of a (possibly wrapped) SAM: C for a multi-class head, 1 for prompted binary SAM."""
    return int(getattr(_config_of(getattr(model, "module", model)), NUM_CLASSES_KEY, None) or 1)  # DDP: .module


def class_token_slice(num_classes: int) -> slice:
    """Indices of the decoder's output queries that produce the masks read by training and prediction.

    Query 0 is the IoU token and query 1 SAM's single-mask token (binary); a C-class head reads
    queries 2 .. C+1.
    """
    return slice(1, 2) if num_classes <= 1 else slice(2, 2 + num_classes)


def add_multiclass_head(model: SamModel, num_classes: int) -> SamModel:
    """Replace ``model``'s mask decoder with a ``num_classes``-channel head (in place; returns ``model``).

    Uses the global torch RNG for the new weights (seed it first for reproducible heads).
    """
    if num_classes < 2:
        raise ValueError(f"num_labels={num_classes}: a multi-class head needs at least 2 classes")
    if getattr(model.config, NUM_CLASSES_KEY, None):
        raise ValueError(f"num_labels={num_classes}: the SAM checkpoint already has a "
                         f"{getattr(model.config, NUM_CLASSES_KEY)}-class head")
    config = copy.deepcopy(model.config)
    config.mask_decoder_config.num_multimask_outputs = num_classes
    setattr(config, NUM_CLASSES_KEY, num_classes)
    old = model.mask_decoder
    param = next(old.parameters())
    head = SamMaskDecoder(config.mask_decoder_config)
    for module in head.modules():
        model._init_weights(module)
    head.to(device=param.device, dtype=param.dtype)
    fresh = ("mask_tokens", "iou_token", "iou_prediction_head", "output_hypernetworks_mlps")
    head.load_state_dict({k: v for k, v in old.state_dict().items() if not k.startswith(fresh)}, strict=False)
    with torch.no_grad():
        head.output_hypernetworks_mlps[0].load_state_dict(old.output_hypernetworks_mlps[0].state_dict())
        for c in range(min(num_classes, len(old.output_hypernetworks_mlps))):
            head.output_hypernetworks_mlps[1 + c].load_state_dict(old.output_hypernetworks_mlps[c].state_dict())
    model.mask_decoder = head
    model.config = config
    setattr(model, NEW_HEAD_ATTR, True)
    return model


def freeze_unused_head(model: nn.Module) -> list[str]:
    """Freeze what no training loss reaches (the IoU head; with a multi-class head also token 0's MLP),
    so every trainable parameter gets a gradient each step (DDP needs no ``find_unused_parameters``).
    Returns the frozen parameter names."""
    unused = ["iou_prediction_head"]
    if sam_num_classes(model) > 1:
        unused.append("output_hypernetworks_mlps.0.")
    frozen = []
    for name, param in model.named_parameters():
        if any(part in name for part in unused):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen
