"""The model calls behind tiled prediction and everything mode, as one small interface two backends implement.

:mod:`.tiling` and :mod:`.everything` hold the algorithms (tile grid, seam blending, point grids, filtering, NMS) and
talk to the model only through a :class:`SegmentBackend`: :class:`TorchBackend` here (a PyTorch SAM, possibly
adapter-wrapped) or :class:`~infosam_hf.evaluation.onnx_predict.OnnxSamPredictor` (the graphs of
``infosam export --onnx``, run by onnxruntime). Arrays cross the interface as numpy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from PIL import Image

from ..data import preprocess_image
from ..models.dynamic import is_dynamic_input_size
from ..models.inference import model_image_size
from ..models.multiclass import sam_num_classes
from .loop import upsample_logits
from .metrics import logits_to_original

__all__ = ["SegmentBackend", "TorchBackend", "as_backend"]


@runtime_checkable
class SegmentBackend(Protocol):
    """What the tiling and everything algorithms need from a model.

    ``image_size``: the square input side (the default tile); ``dynamic``: whether a crop can be encoded at its own
    size; ``num_classes``: 1 for prompted SAM, C for a multi-class head.
    """

    image_size: int
    dynamic: bool
    num_classes: int

    def encode(self, crops: Sequence[np.ndarray], own_size: bool) -> Any:
        """Encode (h, w, 3) uint8 crops as one batch: at their own size (``own_size``, dynamic-size models) or
        fitted into the square input (longest side to ``image_size``, padded). Returns an opaque handle."""

    def prompt_logits(self, encoded: Any, index: int, prompt) -> np.ndarray:
        """(C, h, w) float32 logits at crop ``index``'s own size for a crop-local
        :class:`~infosam_hf.evaluation.predict.Prompt` (empty: none; a multi-class head takes none)."""

    def point_logits(self, encoded: Any, index: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM's three candidate masks for each of the (N, 2) crop-pixel foreground points, one prompt per
        point: (N, 3, h, w) float32 logits at the crop's size and (N, 3) predicted IoU scores."""


@dataclass
class _Encoded:
    embeddings: torch.Tensor
    input_hw: tuple[int, int]
    reshaped: list[tuple[int, int]]
    sizes: list[tuple[int, int]]
    own_size: bool


class TorchBackend:
    """:class:`SegmentBackend` of a PyTorch SAM (``load_for_inference``'s model, or any ``SamModel``)."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", image_mean=None, image_std=None,
                 preprocessing: str = "sam", channel_order: str = "rgb"):
        self.model = model
        self.device = device
        self.image_size = model_image_size(model)
        self.dynamic = is_dynamic_input_size(getattr(model, "get_base_model", lambda: model)())
        self.num_classes = sam_num_classes(model)
        self.settings = {"mean": image_mean, "std": image_std, "preprocessing": preprocessing,
                         "channel_order": channel_order}

    @torch.no_grad()
    def encode(self, crops: Sequence[np.ndarray], own_size: bool) -> _Encoded:
        pixels, reshaped = [], []
        for crop in crops:
            resize = crop.shape[:2] if own_size else None
            values, size = preprocess_image(Image.fromarray(crop), self.image_size, resize=resize, **self.settings)
            pixels.append(values)
            reshaped.append(size)
        embeddings = self.model.get_image_embeddings(torch.stack(pixels).to(self.device))
        return _Encoded(embeddings, tuple(pixels[0].shape[-2:]), reshaped, [c.shape[:2] for c in crops], own_size)

    @torch.no_grad()
    def prompt_logits(self, encoded: _Encoded, index: int, prompt) -> np.ndarray:
        from .predict import _prompt_tensors

        size = encoded.sizes[index]
        own = encoded.input_hw if encoded.own_size else None  # prompts scaled per axis to the crop's own size
        kwargs = {} if prompt is None or prompt.empty else _prompt_tensors([prompt], [size], self.image_size, own)
        kwargs = {key: value.to(encoded.embeddings.device) for key, value in kwargs.items()}
        pred = self.model(image_embeddings=encoded.embeddings[index:index + 1], multimask_output=self.num_classes > 1,
                          **kwargs).pred_masks
        logits = upsample_logits(pred, encoded.input_hw)[0]
        return logits_to_original(logits, encoded.input_hw, encoded.reshaped[index], size).cpu().numpy()

    @torch.no_grad()
    def point_logits(self, encoded: _Encoded, index: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        size = encoded.sizes[index]
        scale = np.float32(self.image_size / max(size))  # crop pixels → the square input frame
        embeddings = encoded.embeddings[index:index + 1]
        count = len(points)
        chunk = torch.from_numpy(np.asarray(points, dtype=np.float32) * scale).to(embeddings.device)
        out = self.model(image_embeddings=embeddings.expand(count, -1, -1, -1), input_points=chunk.view(count, 1, 1, 2),
                         input_labels=torch.ones(count, 1, 1, dtype=torch.long, device=embeddings.device),
                         multimask_output=True)
        logits = upsample_logits(out.pred_masks[:, 0], encoded.input_hw)  # (count, 3, H, W)
        logits = logits_to_original(logits, encoded.input_hw, encoded.reshaped[index], size)
        return logits.cpu().numpy(), out.iou_scores[:, 0].float().cpu().numpy()


def as_backend(model, **options) -> SegmentBackend:
    """``model`` itself when it already is a :class:`SegmentBackend` (e.g. an ``OnnxSamPredictor``), else a
    :class:`TorchBackend` of it with ``options`` (``device``, ``image_mean``, ``image_std``, ``preprocessing``,
    ``channel_order``; ``None`` values take the defaults)."""
    if all(hasattr(model, name) for name in ("encode", "prompt_logits", "point_logits")):
        return model
    return TorchBackend(model, **{key: value for key, value in options.items() if value is not None})
