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

``head="gsam"`` builds G-SAM's own head instead: 5C + 1 decoder tokens, all N(0, 1), where class c reads G-SAM's
``iou_token`` row c + 1 (c < C - 1) or ``mask_tokens`` row 0 (the last class) and the other 4C - 1 tokens only take
part in attention. The two-way transformer treats its tokens as a set (no position index), so the same tokens in
another order give the same outputs: here query 0 holds G-SAM's ``iou_token`` row 0, mask tokens 1..C the class
tokens in class order, and the surplus tokens the other 5C - C - 1 slots, i.e. ``num_multimask_outputs = 5C - 1``.
A forward hook keeps the C class channels (see :func:`keep_class_channels`; :func:`~infosam_hf.models.sam.load_sam`
re-attaches it on reload, a bare ``SamModel.from_pretrained`` returns 5C - 1 channels whose first C are the
classes). New MLPs keep PyTorch's default init, as G-SAM's.
"""

from __future__ import annotations

import copy
from typing import get_args

import torch
from torch import nn
from transformers import SamModel
from transformers.models.sam.modeling_sam import SamMaskDecoder

from ..choices import check_choice
from .arguments import MulticlassHead
from .sam2 import _config_of

__all__ = ["HEAD_KEY", "MULTICLASS_HEADS", "NEW_HEAD_ATTR", "NUM_CLASSES_KEY", "add_multiclass_head", "class_token_slice",
           "freeze_unused_head", "keep_class_channels", "sam_num_classes"]

NUM_CLASSES_KEY = "infosam_num_classes"  # SamConfig attribute: number of class channels (absent: binary)
NEW_HEAD_ATTR = "infosam_new_head"  # set on a model whose head was just built (its base must be saved)
HEAD_KEY = "infosam_multiclass_head"  # SamConfig attribute: "gsam" for G-SAM's head (absent: the project's)
MULTICLASS_HEADS: tuple[str, ...] = get_args(MulticlassHead)
GSAM_TOKENS_PER_CLASS = 5  # G-SAM: iou_token (C rows) + mask_tokens (4C + 1 rows) = 5C + 1 tokens


def sam_num_classes(model: nn.Module) -> int:
    """Class channels of a (possibly wrapped) SAM: C for a multi-class head, 1 for prompted binary SAM."""
    return int(getattr(_config_of(getattr(model, "module", model)), NUM_CLASSES_KEY, None) or 1)  # DDP: .module


def class_token_slice(num_classes: int) -> slice:
    """Indices of the decoder's output queries that produce the masks read by training and prediction.

    Query 0 is the IoU token and query 1 SAM's single-mask token (binary); a C-class head reads
    queries 2 .. C+1.
    """
    return slice(1, 2) if num_classes <= 1 else slice(2, 2 + num_classes)


def keep_class_channels(model: SamModel) -> SamModel:
    """Make a G-SAM-head model's decoder return only its C class channels (idempotent; returns ``model``)."""
    decoder = model.mask_decoder
    if getattr(model.config, HEAD_KEY, None) != "gsam" or getattr(decoder, "_infosam_class_hook", None):
        return model
    num_classes = sam_num_classes(model)

    def first_classes(module, args, output):
        return (output[0][:, :, :num_classes], output[1][:, :, :num_classes], *output[2:])

    decoder._infosam_class_hook = decoder.register_forward_hook(first_classes)
    return model


def add_multiclass_head(model: SamModel, num_classes: int, head: str = "project") -> SamModel:
    """Replace ``model``'s mask decoder with a ``num_classes``-channel head (in place; returns ``model``);
    ``head``: ``project`` (C + 2 tokens) or ``gsam`` (G-SAM's 5C + 1 tokens, see the module doc).

    Uses the global torch RNG for the new weights (seed it first for reproducible heads).
    """
    check_choice("multiclass_head", head, MULTICLASS_HEADS)
    if num_classes < 2:
        raise ValueError(f"num_labels={num_classes}: a multi-class head needs at least 2 classes")
    if getattr(model.config, NUM_CLASSES_KEY, None):
        raise ValueError(f"num_labels={num_classes}: the SAM checkpoint already has a "
                         f"{getattr(model.config, NUM_CLASSES_KEY)}-class head")
    config = copy.deepcopy(model.config)
    gsam = head == "gsam"
    config.mask_decoder_config.num_multimask_outputs = GSAM_TOKENS_PER_CLASS * num_classes - 1 if gsam else num_classes
    setattr(config, NUM_CLASSES_KEY, num_classes)
    if gsam:
        setattr(config, HEAD_KEY, head)
    old = model.mask_decoder
    param = next(old.parameters())
    decoder = SamMaskDecoder(config.mask_decoder_config)
    for module in decoder.modules():
        model._init_weights(module)
    decoder.to(device=param.device, dtype=param.dtype)
    fresh = ("mask_tokens", "iou_token", "iou_prediction_head", "output_hypernetworks_mlps")
    decoder.load_state_dict({k: v for k, v in old.state_dict().items() if not k.startswith(fresh)}, strict=False)
    with torch.no_grad():
        decoder.output_hypernetworks_mlps[0].load_state_dict(old.output_hypernetworks_mlps[0].state_dict())
        if gsam:  # G-SAM: nn.Embedding's N(0, 1) tokens, PyTorch's default init for MLPs not copied from SAM
            decoder.mask_tokens.weight.normal_(0.0, 1.0)
            decoder.iou_token.weight.normal_(0.0, 1.0)
            for mlp in decoder.output_hypernetworks_mlps:
                for layer in mlp.modules():
                    if isinstance(layer, nn.Linear):
                        layer.reset_parameters()
        for c in range(min(num_classes, len(old.output_hypernetworks_mlps))):
            decoder.output_hypernetworks_mlps[1 + c].load_state_dict(old.output_hypernetworks_mlps[c].state_dict())
    model.mask_decoder = decoder
    model.config = config
    setattr(model, NEW_HEAD_ATTR, True)
    return keep_class_channels(model)


def freeze_unused_head(model: nn.Module) -> list[str]:
    """Freeze what no training loss reaches (the IoU head; with a multi-class head also token 0's MLP),
    so every trainable parameter gets a gradient each step (DDP needs no ``find_unused_parameters``).
    Returns the frozen parameter names."""
    unused = ["iou_prediction_head"]
    num_classes = sam_num_classes(model)
    if num_classes > 1:
        unused.append("output_hypernetworks_mlps.0.")
    if getattr(_config_of(getattr(model, "module", model)), HEAD_KEY, None) == "gsam":  # surplus tokens' MLPs
        unused += [f"output_hypernetworks_mlps.{i}." for i in range(num_classes + 1, GSAM_TOKENS_PER_CLASS * num_classes)]
    frozen = []
    for name, param in model.named_parameters():
        if any(part in name for part in unused):
            param.requires_grad_(False)
            frozen.append(name)
    return frozen
