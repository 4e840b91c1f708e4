"""Prompt-free "segment everything" with a fine-tuned SAM (``infosam predict --everything``).

The steps of SAM's automatic mask generator, on our (possibly adapter-wrapped, dynamic-size) model: crops (the
whole image, or tiles for a large one, plus ``crop_n_layers`` layers of 2^i × 2^i overlapping crops), a regular
grid of single-point prompts per crop, three candidate masks per point, filtering by predicted IoU and stability
score (IoU of the mask thresholded at ±``stability_offset``), box NMS inside each crop and then across crops,
and, with ``min_mask_region_area``, SAM's clean-up: islands and holes smaller than that many pixels are removed
and masks left smaller than it are dropped. Masks come back at full image resolution.

The model is called only through :class:`~infosam_hf.evaluation.backends.SegmentBackend`: a PyTorch SAM, or the
ONNX graphs of ``infosam export --onnx`` (an :class:`~infosam_hf.evaluation.onnx_predict.OnnxSamPredictor`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

# load_for_inference is re-exported: the models it loads once this module is imported can segment everything
from ..models.inference import POST_LOAD_HOOKS, load_for_inference  # noqa: F401
from .backends import as_backend
from .tiling import Tile, tile_grid

__all__ = ["MaskGeneratorSettings", "attach_generate_masks", "box_nms", "generate_masks", "load_for_inference"]


@dataclass
class MaskGeneratorSettings:
    """SAM's automatic-mask-generator knobs (same names and defaults)."""

    points_per_side: int = 32
    points_per_batch: int = 64
    pred_iou_thresh: float = 0.88
    stability_score_thresh: float = 0.95
    stability_score_offset: float = 1.0
    box_nms_thresh: float = 0.7
    crop_n_layers: int = 0
    crop_overlap_ratio: float = 512 / 1500
    crop_n_points_downscale_factor: int = 1
    min_mask_region_area: int = 0


def box_nms(boxes: torch.Tensor, scores: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices of the (N, 4) x0,y0,x1,y1 ``boxes`` kept by greedy non-maximum suppression, best score first."""
    order = scores.argsort(descending=True)
    boxes = boxes.float()
    area = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
    keep = []
    suppressed = torch.zeros(len(boxes), dtype=torch.bool)
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        top_left = torch.maximum(boxes[i, :2], boxes[:, :2])
        bottom_right = torch.minimum(boxes[i, 2:], boxes[:, 2:])
        inter = (bottom_right - top_left).clamp(min=0).prod(1)
        iou = inter / (area[i] + area - inter).clamp(min=1e-6)
        suppressed |= iou > threshold
    return torch.tensor(keep, dtype=torch.long)


def remove_small_regions(mask: np.ndarray, min_area: int) -> np.ndarray:
    """``mask`` without connected islands smaller than ``min_area`` pixels and with such holes filled (8-connected,
    as SAM's post-processing)."""
    from scipy import ndimage

    structure = np.ones((3, 3), dtype=bool)
    for keep_value in (False, True):  # first fill small holes, then drop small islands
        region = mask == keep_value
        labels, count = ndimage.label(region, structure=structure)
        if count == 0:
            continue
        sizes = np.bincount(labels.ravel(), minlength=count + 1)
        small = np.flatnonzero(sizes < min_area)
        small = small[small > 0]
        if len(small):
            mask = mask.copy()
            mask[np.isin(labels, small)] = not keep_value
    return mask


def _crops(height: int, width: int, tile: int | None, overlap: int, settings: MaskGeneratorSettings):
    """(crop, layer) pairs: layer 0 is the image (or its tiles), layer i splits it into 2^i × 2^i crops."""
    crops = [(t, 0) for row in tile_grid(height, width, tile, overlap) for t in row] if tile else \
        [(Tile(0, 0, height, width), 0)]
    for layer in range(1, settings.crop_n_layers + 1):
        per_side = 2 ** layer
        gap = int(settings.crop_overlap_ratio * min(height, width) * (2 / per_side))
        crop_h, crop_w = math.ceil((gap * (per_side - 1) + height) / per_side), math.ceil(
            (gap * (per_side - 1) + width) / per_side)
        for iy in range(per_side):
            for ix in range(per_side):
                y0, x0 = (crop_h - gap) * iy, (crop_w - gap) * ix
                crops.append((Tile(y0, x0, min(y0 + crop_h, height), min(x0 + crop_w, width)), layer))
    return crops


def _mask_box(masks: torch.Tensor) -> torch.Tensor:
    """(N, h, w) bool → (N, 4) x0, y0, x1, y1 (exclusive) boxes; zeros for empty masks."""
    rows, cols = masks.any(2), masks.any(1)
    def extent(flags):
        size = flags.shape[1]
        index = torch.arange(size)
        low = torch.where(flags, index, size).min(1).values
        high = torch.where(flags, index + 1, 0).max(1).values
        return torch.where(high > 0, low, 0), high
    x0, x1 = extent(cols)
    y0, y1 = extent(rows)
    return torch.stack([x0, y0, x1, y1], 1)


@torch.no_grad()
def _crop_masks(backend, image: np.ndarray, crop: Tile, layer: int, settings: MaskGeneratorSettings):
    """Masks of one crop (crop-local bool, with their scores and crop-local boxes) after IoU / stability / NMS."""
    size = (crop.y1 - crop.y0, crop.x1 - crop.x0)
    encoded = backend.encode([image[crop.y0:crop.y1, crop.x0:crop.x1]], own_size=False)
    side = max(1, settings.points_per_side // settings.crop_n_points_downscale_factor ** layer)
    grid = (np.arange(side, dtype=np.float32) + 0.5) / side
    points = np.stack(np.meshgrid(grid * size[1], grid * size[0]), -1).reshape(-1, 2)
    kept_masks, kept_scores, kept_points = [], [], []
    for start in range(0, len(points), settings.points_per_batch):
        chunk = points[start:start + settings.points_per_batch]
        logits, scores = backend.point_logits(encoded, 0, chunk)  # (count, 3, h, w), (count, 3)
        logits = torch.from_numpy(logits).reshape(-1, *size)
        scores = torch.from_numpy(scores).reshape(-1).float()
        offset = settings.stability_score_offset
        stability = (logits > offset).sum((1, 2)).float() / (logits > -offset).sum((1, 2)).clamp(min=1).float()
        good = (scores > settings.pred_iou_thresh) & (stability >= settings.stability_score_thresh)
        masks = logits[good] > 0
        good_area = masks.flatten(1).sum(1) > 0
        kept_masks.append(masks[good_area])
        kept_scores.append(scores[good][good_area])
        kept_points.append(np.repeat(chunk, 3, 0)[good.numpy()][good_area.numpy()])
    masks = torch.cat(kept_masks) if kept_masks else torch.zeros(0, *size, dtype=torch.bool)
    scores = torch.cat(kept_scores) if kept_scores else torch.zeros(0)
    if len(masks) == 0:
        return masks, scores, torch.zeros(0, 4, dtype=torch.long), np.zeros((0, 2), np.float32)
    boxes = _mask_box(masks)
    keep = box_nms(boxes, scores, settings.box_nms_thresh)
    return masks[keep], scores[keep], boxes[keep], np.concatenate(kept_points)[keep.numpy()]


def generate_masks(model, image: np.ndarray | Image.Image, settings: MaskGeneratorSettings | None = None, *,
                   tile: int | None = None, overlap: int = 64, device: str | torch.device = "cpu",
                   image_mean=None, image_std=None, preprocessing: str = "sam", channel_order: str = "rgb") -> list[dict]:
    """Every object SAM finds in an (H, W, 3) ``image``, as SAM's generator returns them: dicts with
    ``segmentation`` ((H, W) bool), ``area``, ``bbox`` (x, y, w, h), ``predicted_iou``, ``point_coords`` and
    ``crop_box``, best first. ``tile`` splits a large image into overlapping tiles (see :mod:`.tiling`).

    ``model`` is a PyTorch SAM (run with ``device`` and the pre-processing settings) or any
    :class:`~infosam_hf.evaluation.backends.SegmentBackend` such as an ONNX predictor."""
    settings = settings or MaskGeneratorSettings()
    backend = as_backend(model, device=device, image_mean=image_mean, image_std=image_std,
                         preprocessing=preprocessing, channel_order=channel_order)
    image = np.asarray(image.convert("RGB")) if isinstance(image, Image.Image) else np.asarray(image)
    height, width = image.shape[:2]
    found = []  # (crop, layer, mask, score, full-image box, point)
    for crop, layer in _crops(height, width, tile, overlap, settings):
        masks, scores, boxes, points = _crop_masks(backend, image, crop, layer, settings)
        shift = torch.tensor([crop.x0, crop.y0, crop.x0, crop.y0])
        for mask, score, box, point in zip(masks, scores, boxes, points):
            found.append((crop, layer, mask, float(score), box + shift, point + (crop.x0, crop.y0)))
    if not found:
        return []
    # across crops: NMS on full-image boxes, preferring masks from the less zoomed-in layer (as SAM does)
    boxes = torch.stack([f[4] for f in found])
    preference = torch.tensor([f[3] - 10.0 * f[1] for f in found])
    keep = box_nms(boxes, preference, settings.box_nms_thresh).tolist() if len(found) > 1 else [0]
    records = []
    for index in keep:
        crop, layer, mask, score, box, point = found[index]
        mask = mask.numpy()
        if settings.min_mask_region_area > 0:
            mask = remove_small_regions(mask, settings.min_mask_region_area)
            box = _mask_box(torch.from_numpy(mask)[None])[0] + torch.tensor([crop.x0, crop.y0, crop.x0, crop.y0])
        area = int(mask.sum())
        if area == 0 or area < settings.min_mask_region_area:
            continue
        full = np.zeros((height, width), dtype=bool)
        full[crop.y0:crop.y1, crop.x0:crop.x1] = mask
        x0, y0, x1, y1 = box.tolist()
        records.append({"segmentation": full, "area": area, "bbox": [x0, y0, x1 - x0, y1 - y0],
                        "predicted_iou": score, "point_coords": [list(map(float, point))],
                        "crop_box": [crop.x0, crop.y0, crop.x1 - crop.x0, crop.y1 - crop.y0]})
    return sorted(records, key=lambda r: r["predicted_iou"], reverse=True)


def attach_generate_masks(model: torch.nn.Module) -> torch.nn.Module:
    """Give ``model`` a ``generate_masks(image, settings=None, **options)`` method (see :func:`generate_masks`)."""
    bound = functools.update_wrapper(functools.partial(generate_masks, model), generate_masks)  # picklable
    object.__setattr__(model, "generate_masks", bound)
    return model


if attach_generate_masks not in POST_LOAD_HOOKS:  # every model load_for_inference returns can segment everything
    POST_LOAD_HOOKS.append(attach_generate_masks)
