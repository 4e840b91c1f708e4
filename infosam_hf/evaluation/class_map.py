"""Pictures of multi-class predictions: a palette PNG of class ids and a colour overlay on the image."""

from __future__ import annotations

import numpy as np
from PIL import Image

__all__ = ["class_palette", "class_map_image", "overlay_class_map"]


def class_palette(num_classes: int = 256) -> np.ndarray:
    """(num_classes, 3) uint8 colours: class 0 black, then well-separated colours (the bit-interleaved
    palette of PASCAL VOC label maps, so neighbouring ids get distinct colours)."""
    palette = np.zeros((num_classes, 3), np.uint8)
    for index in range(num_classes):
        value, r, g, b = index, 0, 0, 0
        for shift in range(7, -1, -1):
            r |= (value & 1) << shift
            g |= ((value >> 1) & 1) << shift
            b |= ((value >> 2) & 1) << shift
            value >>= 3
        palette[index] = (r, g, b)
    return palette


_PALETTE = class_palette()  # built once


def class_map_image(labels: np.ndarray) -> Image.Image:
    """An H×W class-id map as a palette ("P") PNG: the pixel values are the class ids, shown in colour."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"class map: expected an H×W map of ids in [0, 255], got shape {labels.shape}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(_PALETTE.ravel().tolist())
    return image


def overlay_class_map(image: Image.Image, labels: np.ndarray, alpha: float = 0.5,
                      background: int | None = None) -> Image.Image:
    """``image`` with every pixel tinted by its class colour (``alpha`` opacity); pixels of class
    ``background`` (None: none) are left as they are."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    labels = np.asarray(labels)
    if labels.shape != base.shape[:2]:
        raise ValueError(f"class map shape {labels.shape} != image size {base.shape[:2]}")
    colours = _PALETTE[labels.astype(np.int64)].astype(np.float32)
    tint = np.ones(labels.shape, bool) if background is None else labels != background
    base[tint] = (1 - alpha) * base[tint] + alpha * colours[tint]
    return Image.fromarray(np.clip(base + 0.5, 0, 255).astype(np.uint8))
