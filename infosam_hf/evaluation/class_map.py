"""Pictures of multi-class predictions: a palette PNG of class ids and a colour overlay on the image."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from ..data.class_names import is_background

__all__ = ["class_palette", "class_legend", "class_map_image", "overlay_class_map", "palette_for"]


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
_REAL_ZERO_PALETTE = np.concatenate([_PALETTE[1:], _PALETTE[:1]])  # class 0 a real class: no black


def palette_for(class_names: list[str] | None = None) -> np.ndarray:
    """The (256, 3) palette: class 0 black when it is background (or unnamed), else every class coloured."""
    return _PALETTE if is_background(class_names) else _REAL_ZERO_PALETTE


def class_legend(class_names: list[str] | None, num_classes: int) -> list[dict]:
    """``[{"id", "name", "color": [r, g, b]}, ...]``: what each palette colour of ``predict``'s outputs means."""
    palette = palette_for(class_names)
    return [{"id": i, "name": class_names[i] if class_names else f"class {i}", "color": palette[i].tolist()}
            for i in range(num_classes)]


def class_map_image(labels: np.ndarray, class_names: list[str] | None = None) -> Image.Image:
    """An H×W class-id map as a palette ("P") PNG: the pixel values are the class ids, shown in colour."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.size and (labels.min() < 0 or labels.max() > 255):
        raise ValueError(f"class map: expected an H×W map of ids in [0, 255], got shape {labels.shape}")
    image = Image.fromarray(labels.astype(np.uint8), mode="P")
    image.putpalette(palette_for(class_names).ravel().tolist())
    return image


def overlay_class_map(image: Image.Image, labels: np.ndarray, alpha: float = 0.5, background: int | None = None,
                      class_names: list[str] | None = None) -> Image.Image:
    """``image`` with every pixel tinted by its class colour (``alpha`` opacity); pixels of class
    ``background`` (None: none) are left as they are. With ``class_names``, a legend of the classes present is
    drawn in the top-left corner."""
    base = np.asarray(image.convert("RGB"), dtype=np.float32)
    labels = np.asarray(labels)
    if labels.shape != base.shape[:2]:
        raise ValueError(f"class map shape {labels.shape} != image size {base.shape[:2]}")
    palette = palette_for(class_names)
    colours = palette[labels.astype(np.int64)].astype(np.float32)
    tint = np.ones(labels.shape, bool) if background is None else labels != background
    base[tint] = (1 - alpha) * base[tint] + alpha * colours[tint]
    picture = Image.fromarray(np.clip(base + 0.5, 0, 255).astype(np.uint8))
    if class_names:
        _draw_legend(picture, [int(i) for i in np.unique(labels) if i < len(class_names)], class_names, palette)
    return picture


def _draw_legend(picture: Image.Image, present: list[int], class_names: list[str], palette: np.ndarray) -> None:
    """A colour swatch and name per class present, on a dark box in the top-left corner (in place)."""
    draw = ImageDraw.Draw(picture)
    line = 12
    width = 16 + 6 * max((len(class_names[i]) for i in present), default=0)
    draw.rectangle([0, 0, width + 4, 4 + line * len(present)], fill=(0, 0, 0))
    for row, index in enumerate(present):
        top = 3 + row * line
        draw.rectangle([3, top, 11, top + 8], fill=tuple(int(v) for v in palette[index]), outline=(255, 255, 255))
        draw.text((15, top - 1), class_names[index], fill=(255, 255, 255))
