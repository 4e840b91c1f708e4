"""A deterministic synthetic segmentation set for the embedded demo and the tests.

Each image shows three look-alike objects (stars, triangles, crosses, rings) on textured noise. The
target is one of them, chosen at random, so the prompt is what defines the mask: a model has to
learn to follow the prompt, and filling the prompt box is a weak baseline (these shapes cover about
a third to a half of their box).

With ``num_labels=5`` the same images get a semantic target instead: every visible object labelled
by its kind (0 background, 1 star, 2 triangle, 3 cross, 4 ring), for the multi-class head.
"""

from __future__ import annotations

import io
import math

import numpy as np
from datasets import Dataset, DatasetDict, Features, Image
from PIL import Image as PILImage
from PIL import ImageDraw

__all__ = ["SYNTHETIC_NUM_CLASSES", "make_synthetic_split", "make_synthetic_dataset"]

_SHAPES = ("star", "triangle", "cross", "ring")
SYNTHETIC_NUM_CLASSES = 1 + len(_SHAPES)  # background + one class per shape kind


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    """Low-saturation cloudy noise: busy enough to need learning, distinct from the objects."""
    coarse = rng.uniform(0, 1, (size // 16 + 2, size // 16 + 2, 1)).astype(np.float32)
    coarse_img = PILImage.fromarray((coarse[..., 0] * 255).astype(np.uint8)).resize((size, size), PILImage.BICUBIC)
    gray = np.asarray(coarse_img, dtype=np.float32)[..., None] * rng.uniform(0.25, 0.45) + rng.uniform(20, 60)
    tint = rng.uniform(-12, 12, 3).astype(np.float32)
    return gray + tint + rng.normal(0, 10, (size, size, 3))


def _polygon(rng: np.random.Generator, shape: str, cx: float, cy: float, radius: float) -> list[tuple[float, float]]:
    angle0 = rng.uniform(0, 2 * math.pi)
    if shape == "star":
        points = []
        for k in range(10):
            r = radius if k % 2 == 0 else radius * rng.uniform(0.35, 0.5)
            a = angle0 + k * math.pi / 5
            points.append((cx + r * math.cos(a), cy + r * math.sin(a)))
        return points
    if shape == "triangle":
        return [(cx + radius * math.cos(angle0 + k * 2 * math.pi / 3),
                 cy + radius * math.sin(angle0 + k * 2 * math.pi / 3)) for k in range(3)]
    # cross: a plus sign with arm width ~ radius/3, rotated
    w = radius * rng.uniform(0.28, 0.4)
    base = [(-w, -radius), (w, -radius), (w, -w), (radius, -w), (radius, w), (w, w), (w, radius),
            (-w, radius), (-w, w), (-radius, w), (-radius, -w), (-w, -w)]
    c, s = math.cos(angle0), math.sin(angle0)
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in base]


def _draw_object(draw: ImageDraw.ImageDraw, rng, shape: str, cx: float, cy: float, radius: float, fill) -> None:
    if shape == "ring":
        inner = radius * rng.uniform(0.45, 0.6)
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=0)  # the hole
    else:
        draw.polygon(_polygon(rng, shape, cx, cy, radius), fill=fill)


def _sample(rng: np.random.Generator, size: int, semantic: bool = False) -> tuple[PILImage.Image, PILImage.Image]:
    canvas = _texture(rng, size)
    class_map = np.zeros((size, size), np.uint8)
    cells = [(0.27, 0.27), (0.73, 0.27), (0.27, 0.73), (0.73, 0.73), (0.5, 0.5)]
    chosen = rng.choice(len(cells), size=3, replace=False)
    target = int(rng.integers(3))
    mask_out = None
    for k, cell in enumerate(chosen):
        radius = size * rng.uniform(0.12, 0.2)
        cx = size * cells[cell][0] + rng.uniform(-0.04, 0.04) * size
        cy = size * cells[cell][1] + rng.uniform(-0.04, 0.04) * size
        shape = _SHAPES[int(rng.integers(len(_SHAPES)))]
        layer = PILImage.new("L", (size, size), 0)
        _draw_object(ImageDraw.Draw(layer), rng, shape, cx, cy, radius, 255)
        region = np.asarray(layer) > 0
        color = rng.uniform(0, 1, 3)
        color = 120 + 135 * color / color.max()  # bright, saturated: objects stand out, yet look alike
        canvas[region] = color + rng.normal(0, 10, (int(region.sum()), 3))
        class_map[region] = 1 + _SHAPES.index(shape)
        if k == target:
            mask_out = region
        elif mask_out is not None:
            mask_out = mask_out & ~region  # the target's mask is what stays visible
    image = PILImage.fromarray(np.clip(canvas, 0, 255).astype(np.uint8), "RGB")
    mask = PILImage.fromarray(class_map if semantic else (mask_out * 255).astype(np.uint8), "L")
    return image, mask


def _png(img: PILImage.Image) -> dict:
    buffer = io.BytesIO()
    img.save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


def make_synthetic_split(num_samples: int, image_size: int = 128, seed: int = 0, num_labels: int = 1) -> Dataset:
    """``num_samples`` (image, label) pairs as a ``datasets.Dataset`` with PNG-encoded ``Image`` columns.

    Sample ``i`` depends only on ``(seed, i)``. ``num_labels``: 1 (a binary mask of one object) or
    :data:`SYNTHETIC_NUM_CLASSES` (a class map; same images).
    """
    if num_labels not in (1, SYNTHETIC_NUM_CLASSES):
        raise ValueError(f"num_labels={num_labels}: the synthetic set is binary (1) or has "
                         f"{SYNTHETIC_NUM_CLASSES} classes (background, {', '.join(_SHAPES)})")
    images, labels = [], []
    for index in range(num_samples):
        image, mask = _sample(np.random.default_rng([seed, index]), image_size, semantic=num_labels > 1)
        images.append(_png(image))
        labels.append(_png(mask))
    features = Features({"image": Image(decode=False), "label": Image(decode=False)})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def make_synthetic_dataset(num_train: int = 256, num_validation: int = 32, num_test: int = 64,
                           image_size: int = 128, seed: int = 0, num_labels: int = 1) -> DatasetDict:
    """Train/validation/test splits drawn from disjoint seeds."""
    return DatasetDict({
        "train": make_synthetic_split(num_train, image_size, seed, num_labels),
        "validation": make_synthetic_split(num_validation, image_size, seed + 1_000_003, num_labels),
        "test": make_synthetic_split(num_test, image_size, seed + 2_000_003, num_labels),
    })
