"""Forward hooks that capture the two tensors InfoSAM's relation module reads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from transformers.models.sam.modeling_sam import SamTwoWayTransformer, SamVisionNeck

from .multiclass import class_token_slice

__all__ = ["RecordingHooks", "SamFeatureCapture"]


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
    """Forward hooks that capture the vision-neck output and the decoder's mask token(s).

    Use as ``with capture.record() as feats: model(...)``; afterwards ``feats["image_embeds"]`` is
    (B, HW, C) and ``feats["mask_token"]`` is (B, K, C): K = 1, SAM's first mask token, or with a
    ``num_classes``-channel head K = num_classes, one token per class. Only the first call of each
    hook inside a ``record()`` block is kept, so re-entrant activation checkpointing cannot overwrite
    a capture.
    """

    def __init__(self, model: nn.Module, num_classes: int = 1):
        self._tokens = class_token_slice(num_classes)
        self._handles = []
        for module in model.modules():
            if isinstance(module, SamVisionNeck):
                self._handles.append(module.register_forward_hook(self._neck_hook))
            elif isinstance(module, SamTwoWayTransformer):
                self._handles.append(module.register_forward_hook(self._transformer_hook))
        if not self._handles:
            raise ValueError("SamFeatureCapture: no SAM vision neck or two-way transformer found in the model")

    def _neck_hook(self, module, args, output):
        if self._store is not None and "image_embeds" not in self._store:
            self._store["image_embeds"] = output.flatten(2).transpose(1, 2)  # (B, C, h, w) -> (B, hw, C)

    def _transformer_hook(self, module, args, output):
        if self._store is not None and "mask_token" not in self._store:
            queries = output[0]  # (B, point_batch, tokens, C); token 0 is the IoU token
            self._store["mask_token"] = queries[:, 0, self._tokens, :]

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
