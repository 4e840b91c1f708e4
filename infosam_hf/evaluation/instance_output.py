"""Many objects of one image as files: an instance-id PNG, a per-object colour overlay and COCO results (RLE).

* :func:`instance_id_map` paints N boolean masks into one H×W map of ids 1..N (0 = background).
* :func:`instance_png` stores that map losslessly (8-bit palette PNG up to 255 objects, 16-bit beyond).
* :func:`overlay_instances` tints each object of the map in its own colour and outlines it.
* :func:`coco_results` / :func:`coco_dataset` give the objects in COCO's results format (compressed RLE,
  ``pycocotools.mask``), the second as a whole data set that ``pycocotools.coco.COCO`` and annotation tools load.
* :func:`write_instance_outputs` writes the PNG and the overlay of one image and returns its COCO results.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..io import atomic_open

__all__ = [
    "instance_colors",
    "instance_id_map",
    "instance_png",
    "overlay_instances",
    "mask_to_rle",
    "coco_results",
    "coco_dataset",
    "write_instance_outputs",
]

# Longest side of the grid on which object outlines are computed: beyond it the outline is found on a
# downsampled map and scaled back, so overlays of very large images take a fraction of a second.
_OUTLINE_GRID = 2048


def instance_colors(count: int) -> np.ndarray:
    """(count + 1, 3) uint8 colours: index 0 (background) black, then well-separated hues (golden-ratio steps)."""
    colors = np.zeros((count + 1, 3), np.uint8)
    for index in range(1, count + 1):
        hue = (index * 0.618033988749895) % 1.0
        saturation, value = (0.85, 0.95) if index % 2 else (0.6, 0.85)
        colors[index] = [round(255 * c) for c in colorsys.hsv_to_rgb(hue, saturation, value)]
    return colors


def _as_masks(masks: np.ndarray | Sequence[np.ndarray]) -> np.ndarray:
    stacked = np.asarray(masks)
    if stacked.ndim == 2:
        stacked = stacked[None]
    if stacked.ndim != 3:
        raise ValueError(f"masks: expected N×H×W, got shape {stacked.shape}")
    return stacked.astype(bool, copy=False)


def instance_id_map(masks: np.ndarray | Sequence[np.ndarray], scores: Sequence[float] | None = None) -> np.ndarray:
    """An H×W uint16 map: 0 background, ``i + 1`` where object ``i`` of ``masks`` (N×H×W) is.

    Where objects overlap the one with the higher score wins (without scores: the later object), so the map
    shows every pixel once, as an instance PNG must.
    """
    masks = _as_masks(masks)
    if len(masks) > np.iinfo(np.uint16).max:
        raise ValueError(f"{len(masks)} objects do not fit an instance map of 16-bit ids")
    order = np.arange(len(masks)) if scores is None else np.argsort(np.asarray(scores, np.float64), kind="stable")
    id_map = np.zeros(masks.shape[1:], np.uint16)
    for index in order:  # lowest score first: higher scores paint over it
        id_map[masks[index]] = index + 1
    return id_map


def instance_png(id_map: np.ndarray) -> Image.Image:
    """The id map as a PNG-ready image: a palette ("P") image whose pixel values are the ids (shown in
    colour) up to 255 objects, else a 16-bit grey ("I;16") image of the ids."""
    id_map = np.asarray(id_map)
    if id_map.ndim != 2:
        raise ValueError(f"instance map: expected H×W, got shape {id_map.shape}")
    count = int(id_map.max()) if id_map.size else 0
    if count <= 255:
        image = Image.fromarray(id_map.astype(np.uint8))
        palette = np.zeros((256, 3), np.uint8)
        palette[: count + 1] = instance_colors(count)
        image.putpalette(palette.ravel().tolist())  # turns the "L" image into a "P" image of the same values
        return image
    return Image.fromarray(id_map.astype(np.uint16))  # mode "I;16"


def _outline(id_map: np.ndarray) -> np.ndarray:
    """Pixels where the id changes to a neighbour's (4-neighbourhood), on the map as given."""
    edge = np.zeros(id_map.shape, bool)
    vertical = id_map[1:] != id_map[:-1]
    horizontal = id_map[:, 1:] != id_map[:, :-1]
    edge[1:] |= vertical
    edge[:-1] |= vertical
    edge[:, 1:] |= horizontal
    edge[:, :-1] |= horizontal
    return edge & (id_map > 0)


def _outline_at_full_size(id_map: np.ndarray) -> np.ndarray:
    """Object outlines at the map's size; for maps larger than ``_OUTLINE_GRID`` found on a nearest-neighbour
    downsampled map and scaled back (a few pixels thick, as a visible stroke on a large image should be)."""
    height, width = id_map.shape
    scale = max(height, width) / _OUTLINE_GRID
    if scale <= 1:
        return _outline(id_map)
    small_size = (max(1, round(width / scale)), max(1, round(height / scale)))
    small = np.asarray(Image.fromarray(id_map.astype(np.int32)).resize(small_size, Image.NEAREST))
    edge = Image.fromarray(_outline(small).astype(np.uint8) * 255).resize((width, height), Image.NEAREST)
    return np.asarray(edge) > 0


def overlay_instances(image: Image.Image | np.ndarray, id_map: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """``image`` with object ``i`` of ``id_map`` tinted in colour ``i`` (``alpha`` opacity) and outlined."""
    base = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    pixels = np.asarray(base.convert("RGB"), dtype=np.float32).copy()
    id_map = np.asarray(id_map)
    if id_map.shape != pixels.shape[:2]:
        raise ValueError(f"instance map shape {id_map.shape} != image size {pixels.shape[:2]} (H, W)")
    colors = instance_colors(int(id_map.max()) if id_map.size else 0).astype(np.float32)
    inside = id_map > 0
    pixels[inside] = (1.0 - alpha) * pixels[inside] + alpha * colors[id_map[inside]]
    edge = _outline_at_full_size(id_map)
    pixels[edge] = colors[id_map[edge]]
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


def mask_to_rle(mask: np.ndarray) -> dict[str, Any]:
    """A bool H×W mask as COCO compressed RLE (``{"size": [H, W], "counts": str}``), JSON-ready."""
    from pycocotools import mask as mask_utils

    rle = mask_utils.encode(np.asfortranarray(np.asarray(mask, dtype=np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _bbox(mask: np.ndarray) -> list[float]:
    """COCO's [x, y, width, height] of a mask's pixels ([0, 0, 0, 0] for an empty mask)."""
    ys, xs = np.nonzero(mask)
    if not len(xs):
        return [0.0, 0.0, 0.0, 0.0]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def coco_results(image_id: int, masks: np.ndarray | Sequence[np.ndarray], scores: Sequence[float] | None = None,
                 category_ids: Sequence[int] | None = None) -> list[dict[str, Any]]:
    """One COCO result per object: ``image_id``, ``category_id`` (default 1), ``segmentation`` (RLE),
    ``score`` (default 1.0), ``bbox`` and ``area`` — the list ``COCO.loadRes`` reads."""
    masks = _as_masks(masks)
    results = []
    for index, mask in enumerate(masks):
        results.append({
            "image_id": int(image_id),
            "category_id": int(category_ids[index]) if category_ids is not None else 1,
            "segmentation": mask_to_rle(mask),
            "score": float(scores[index]) if scores is not None else 1.0,
            "bbox": _bbox(mask),
            "area": float(mask.sum()),
        })
    return results


def coco_dataset(images: Sequence[dict[str, Any]], results: Sequence[dict[str, Any]],
                 categories: Sequence[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Predictions as a whole COCO instance data set (``images``, ``annotations`` with ids and ``iscrowd: 0``,
    ``categories``), for ``pycocotools.coco.COCO`` and annotation tools that import COCO JSON.

    ``images`` are ``{"id", "file_name", "height", "width"}``; ``categories`` default to one per category id
    used, named ``"object"`` for id 1 and ``"class_<id>"`` otherwise.
    """
    annotations = [{**result, "id": index + 1, "iscrowd": 0} for index, result in enumerate(results)]
    if categories is None:
        used = sorted({int(result["category_id"]) for result in results} or {1})
        categories = [{"id": c, "name": "object" if c == 1 else f"class_{c}"} for c in used]
    return {"images": list(images), "annotations": annotations, "categories": list(categories)}


def write_instance_outputs(out_dir: str | Path, stem: str, image: Image.Image,
                           masks: np.ndarray | Sequence[np.ndarray], *, scores: Sequence[float] | None = None,
                           category_ids: Sequence[int] | None = None, image_id: int = 0) -> list[dict[str, Any]]:
    """Write ``<stem>_instances.png`` (ids) and ``<stem>_overlay.png`` (colours) for one image's objects into
    ``out_dir`` and return their COCO results (collect them over images, then :func:`infosam_hf.io.atomic_write_json`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    masks = _as_masks(masks)
    if masks.shape[1:] != (image.height, image.width):
        raise ValueError(f"masks of {masks.shape[1:]} (H, W) for an image of {(image.height, image.width)}")
    id_map = instance_id_map(masks, scores)
    with atomic_open(out_dir / f"{stem}_instances.png", "wb") as file:
        instance_png(id_map).save(file, format="PNG")
    with atomic_open(out_dir / f"{stem}_overlay.png", "wb") as file:
        overlay_instances(image, id_map).save(file, format="PNG")
    return coco_results(image_id, masks, scores, category_ids)
