"""Train-only augmentations applied identically to an image and its mask.

Hand-written on numpy and Pillow (no new dependency): the transform calls the augmenter on uint8
HWC images and (H, W) masks before resizing and before prompts are sampled, so prompt geometry
follows the augmented mask by construction. Masks are always resampled with nearest neighbour, and
pixels rotated in from outside the frame become background (binary) or ``ignore_index``
(multi-class), never a real class id.

Names (``DataArguments.augment``): ``hflip``, ``vflip`` (each with probability ½), ``rot90`` (a
uniformly drawn multiple of 90°), ``rotate`` (with probability ½ an angle uniform in ±``rotate_degrees``,
90 by default as in G-SAM, on the same canvas), ``crop`` (a random ``crop_size`` square, clipped to
the image), ``color_jitter`` (light brightness / contrast / saturation changes on the image only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from PIL import Image as PILImage

from .decoding import DataError

__all__ = ["AUGMENTATIONS", "SegmentationAugmenter", "build_augmenter", "parse_augment_names"]

AUGMENTATIONS = ("hflip", "vflip", "rot90", "rotate", "crop", "color_jitter")
# Spatial ops run in this order, colour last; the order in the recipe does not matter.
_ORDER = {name: rank for rank, name in enumerate(("crop", "hflip", "vflip", "rot90", "rotate", "color_jitter"))}


def parse_augment_names(names: str | Iterable[str] | None) -> list[str]:
    """Normalise ``augment`` (a list, or a comma / space separated string) and validate the names."""
    if names is None:
        return []
    if isinstance(names, str):
        names = names.replace(",", " ").split()
    parsed: list[str] = []
    for raw in names:
        for name in str(raw).replace(",", " ").split():
            name = name.strip().lower()
            if name in ("", "none"):
                continue
            if name not in AUGMENTATIONS:
                raise DataError(f"augment: unknown augmentation {name!r}; choose from {list(AUGMENTATIONS)}")
            if name not in parsed:
                parsed.append(name)
    return sorted(parsed, key=_ORDER.__getitem__)


class SegmentationAugmenter:
    """Callable ``(image, mask, rng) -> (image, mask)`` with the chosen augmentations (picklable).

    ``image``: uint8 (H, W, 3). ``mask``: bool (H, W) for binary sets or integer class ids.
    ``rng``: a ``numpy.random.Generator`` (the transform passes a per-sample one).
    """

    def __init__(self, names: Sequence[str], crop_size: int | None = None, rotate_degrees: float = 90.0,
                 color_jitter: float = 0.2, mask_fill: int = 0):
        self.names = parse_augment_names(names)
        if "crop" in self.names and (crop_size is None or crop_size <= 0):
            raise DataError("augment: 'crop' needs crop_size (a positive number of pixels)")
        self.crop_size = int(crop_size) if crop_size else None
        self.rotate_degrees = float(rotate_degrees)
        self.color_jitter = float(color_jitter)
        self.mask_fill = int(mask_fill)

    @property
    def keeps_resolution_free(self) -> bool:
        """True when the result does not depend on the pixel scale (so JPEG draft decoding is safe)."""
        return "crop" not in self.names

    def __bool__(self) -> bool:
        return bool(self.names)

    def __repr__(self) -> str:
        return f"SegmentationAugmenter({self.names}, crop_size={self.crop_size})"

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(f"augmenter: image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
        for name in self.names:
            image, mask = getattr(self, f"_{name}")(image, mask, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    # --- spatial ---------------------------------------------------------------------------
    def _crop(self, image, mask, rng):
        height, width = mask.shape
        size_h, size_w = min(self.crop_size, height), min(self.crop_size, width)
        top = int(rng.integers(0, height - size_h + 1))
        left = int(rng.integers(0, width - size_w + 1))
        return image[top:top + size_h, left:left + size_w], mask[top:top + size_h, left:left + size_w]

    @staticmethod
    def _hflip(image, mask, rng):
        if rng.random() < 0.5:
            return image[:, ::-1], mask[:, ::-1]
        return image, mask

    @staticmethod
    def _vflip(image, mask, rng):
        if rng.random() < 0.5:
            return image[::-1], mask[::-1]
        return image, mask

    @staticmethod
    def _rot90(image, mask, rng):
        turns = int(rng.integers(0, 4))
        return np.rot90(image, turns), np.rot90(mask, turns)

    def _rotate(self, image, mask, rng):
        if rng.random() >= 0.5 or self.rotate_degrees <= 0:
            return image, mask
        angle = float(rng.uniform(-self.rotate_degrees, self.rotate_degrees))
        # Same canvas, same centre for both: bilinear for the image, nearest for the mask.
        rotated = PILImage.fromarray(np.ascontiguousarray(image)).rotate(
            angle, resample=PILImage.BILINEAR, fillcolor=(0, 0, 0))
        if mask.dtype == bool:
            source = PILImage.fromarray(mask.astype(np.uint8) * 255)
            return np.asarray(rotated), np.asarray(source.rotate(angle, resample=PILImage.NEAREST, fillcolor=0)) > 127
        source = PILImage.fromarray(np.ascontiguousarray(mask, dtype=np.int32))  # mode "I": ids kept exactly
        warped = source.rotate(angle, resample=PILImage.NEAREST, fillcolor=int(self.mask_fill))
        return np.asarray(rotated), np.asarray(warped).astype(mask.dtype)

    # --- photometric (image only) ----------------------------------------------------------
    def _color_jitter(self, image, mask, rng):
        strength = self.color_jitter
        if strength <= 0:
            return image, mask
        brightness, contrast, saturation = rng.uniform(1 - strength, 1 + strength, size=3)
        pixels = image.astype(np.float32)
        gray = pixels @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        pixels = gray[..., None] + saturation * (pixels - gray[..., None])
        mean = float(gray.mean())
        pixels = mean + contrast * (pixels - mean)
        pixels *= brightness
        return np.clip(pixels, 0, 255).astype(np.uint8), mask


def build_augmenter(names: str | Iterable[str] | None, crop_size: int | None = None, rotate_degrees: float = 90.0,
                    color_jitter: float = 0.2, num_labels: int = 1,
                    ignore_index: int = 255) -> SegmentationAugmenter | None:
    """An augmenter for the given names, or None when the list is empty."""
    parsed = parse_augment_names(names)
    if not parsed:
        return None
    return SegmentationAugmenter(parsed, crop_size=crop_size, rotate_degrees=rotate_degrees,
                                 color_jitter=color_jitter, mask_fill=ignore_index if num_labels > 1 else 0)
