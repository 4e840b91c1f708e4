"""Forward hooks that capture the two tensors InfoSAM's relation module reads."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from transformers.models.sam2.modeling_sam2 import Sam2MaskDecoder, Sam2TwoWayTransformer
from transformers.models.sam.modeling_sam import SamTwoWayTransformer, SamVisionNeck

from .multiclass import class_token_slice

__all__ = ["RecordingHooks", "SamFeatureCapture", "match_teacher_grid"]


# Extra output tokens in front of SAM's (IoU token, mask tokens...): SAM 2 adds an object-score token first.
LEADING_TOKENS = {SamTwoWayTransformer: 0, Sam2TwoWayTransformer: 1}


class RecordingHooks:
    """Base of forward-hook captures: hooks write into the dict of the current ``record()`` block, if any."""

    _store: dict[str, torch.Tensor] | None = None

    @contextlib.contextmanager
    def record(self) -> Iterator[dict[str, torch.Tensor]]:
        store: dict[str, torch.Tensor] = {}
        self._store = store
        try:
            yield store
        finally:
            self._store = None


class SamFeatureCapture(RecordingHooks):
    """Forward hooks that capture the image embedding the mask decoder attends to and its mask token(s).

    SAM: the vision-neck output. SAM 2: the lowest-resolution FPN level as the decoder receives it (its
    ``image_embeddings`` argument; the high-resolution skip features are not captured). Use as
    ``with capture.record() as feats: model(...)``; afterwards ``feats["image_embeds"]`` is (B, HW, C) (its
    (h, w) grid in ``feats["image_grid"]``) and ``feats["mask_token"]`` is (B, K, C): K = 1, the first mask
    token (index 1 in SAM, 2 in SAM 2), or with a ``num_classes``-channel head K = num_classes, one token per
    class. Only the first call of each
    hook inside a ``record()`` block is kept, so re-entrant activation checkpointing cannot overwrite a
    capture.
    """

    def __init__(self, model: nn.Module, num_classes: int = 1):
        tokens = class_token_slice(num_classes)
        self._handles = []
        for module in model.modules():
            if isinstance(module, SamVisionNeck):
                self._handles.append(module.register_forward_hook(self._neck_hook))
            elif isinstance(module, Sam2MaskDecoder):
                self._handles.append(module.register_forward_pre_hook(self._decoder_input_hook, with_kwargs=True))
            elif isinstance(module, tuple(LEADING_TOKENS)):
                shift = LEADING_TOKENS[type(module)]
                index = slice(tokens.start + shift, tokens.stop + shift)
                self._handles.append(module.register_forward_hook(
                    lambda mod, args, output, index=index: self._transformer_hook(output, index)))
        if not self._handles:
            raise ValueError("SamFeatureCapture: no SAM / SAM 2 image embedding or two-way transformer found in the "
                             "model")

    def _keep_image_embeds(self, embeddings: torch.Tensor) -> None:
        if self._store is not None and "image_embeds" not in self._store:
            self._store["image_embeds"] = embeddings.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, hw, C)
            self._store["image_grid"] = tuple(embeddings.shape[-2:])

    def _neck_hook(self, module, args, output):
        self._keep_image_embeds(output)

    def _decoder_input_hook(self, module, args, kwargs):
        self._keep_image_embeds(kwargs["image_embeddings"] if "image_embeddings" in kwargs else args[0])

    def _transformer_hook(self, output, index: slice):
        if self._store is not None and "mask_token" not in self._store:
            queries = output[0]  # (B, point_batch, tokens, C)
            self._store["mask_token"] = queries[:, 0, index, :]
            self._store["object_tokens"] = queries[:, :, index, :]  # (B, K, tokens, C): every prompt's token(s)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def match_teacher_grid(student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The student's features with ``image_embeds`` average-pooled to the teacher's grid when they differ (a model
    variant's neck is at stride 8, SAM's at 16: 2×2 averages; adaptive pooling for odd sides)."""
    tokens_s, tokens_t = student["image_embeds"].shape[1], teacher["image_embeds"].shape[1]
    if tokens_s == tokens_t:
        return student
    height, width = student["image_grid"]
    grid = teacher.get("image_grid")
    if grid is None:  # e.g. a cached teacher without its grid: same aspect, fewer tokens
        factor = math.sqrt(tokens_s / tokens_t)
        grid = (round(height / factor), round(width / factor))
        if grid[0] * grid[1] != tokens_t:
            raise ValueError(f"cannot match the student's {height}x{width} embedding grid to the teacher's "
                             f"{tokens_t} tokens")
    embeds = student["image_embeds"].transpose(1, 2).reshape(-1, student["image_embeds"].shape[2], height, width)
    pooled = F.adaptive_avg_pool2d(embeds, tuple(grid))
    return {**student, "image_embeds": pooled.flatten(2).transpose(1, 2), "image_grid": tuple(grid)}
