"""Train-only augmentations applied identically to an image and its mask.

Hand-written on numpy and Pillow (no new dependency): the transform resizes, takes the random crop
(:func:`random_crop`, ``DataArguments.random_crop``), then calls the augmenter on uint8 HWC images
and (H, W) masks, before prompts are sampled, so prompt geometry follows the augmented mask by
construction (G-SAM's order: resize, crop, rotate, flip, normalise). Masks are always resampled
with nearest neighbour, and
pixels rotated in from outside the frame become background (binary) or ``ignore_index``
(multi-class), never a real class id.

Names (``DataArguments.augment``): ``hflip``, ``vflip`` (each with probability ½), ``rot90`` (a
uniformly drawn multiple of 90°), ``rotate`` (with probability ``rotate_prob``, ½ by default, an angle
uniform in ±``rotate_degrees``, 90 by default as in G-SAM, on the same canvas; the image resampled
``rotate_interpolation``: bilinear by default, nearest as in G-SAM), ``color_jitter`` (light brightness / contrast / saturation changes on the image only).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal, get_args

import numpy as np
from PIL import Image as PILImage

from .decoding import DataError

__all__ = ["AUGMENTATIONS", "SegmentationAugmenter", "build_augmenter", "parse_augment_names", "random_crop"]

AUGMENTATIONS = ("hflip", "vflip", "rot90", "rotate", "color_jitter")
RotateInterpolation = Literal["bilinear", "nearest"]
ROTATE_INTERPOLATIONS: tuple[str, ...] = get_args(RotateInterpolation)
# Spatial ops run in this order, colour last; the order in the recipe does not matter.
_ORDER = {name: rank for rank, name in enumerate(("rotate", "hflip", "vflip", "rot90", "color_jitter"))}


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

    def __init__(self, names: Sequence[str], rotate_degrees: float = 90.0, color_jitter: float = 0.2,
                 mask_fill: int = 0, rotate_prob: float = 0.5, rotate_interpolation: str = "bilinear"):
        self.names = parse_augment_names(names)
        if rotate_interpolation not in ROTATE_INTERPOLATIONS:
            raise DataError(f"rotate_interpolation must be one of {', '.join(ROTATE_INTERPOLATIONS)}, "
                            f"got {rotate_interpolation!r}")
        if not 0.0 <= rotate_prob <= 1.0:
            raise DataError(f"rotate_prob must be in [0, 1], got {rotate_prob}")
        self.rotate_prob = float(rotate_prob)
        self.rotate_interpolation = rotate_interpolation
        self.rotate_degrees = float(rotate_degrees)
        self.color_jitter = float(color_jitter)
        self.mask_fill = int(mask_fill)

    def __bool__(self) -> bool:
        return bool(self.names)

    def __repr__(self) -> str:
        return f"SegmentationAugmenter({self.names})"

    def __call__(self, image: np.ndarray, mask: np.ndarray,
                 rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        if image.shape[:2] != mask.shape[:2]:
            raise ValueError(f"augmenter: image {image.shape[:2]} and mask {mask.shape[:2]} differ in size")
        for name in self.names:
            image, mask = getattr(self, f"_{name}")(image, mask, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    # --- spatial ---------------------------------------------------------------------------
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
        if rng.random() >= self.rotate_prob or self.rotate_degrees <= 0:
            return image, mask
        angle = float(rng.uniform(-self.rotate_degrees, self.rotate_degrees))
        # Same canvas, same centre for both: bilinear (or nearest) for the image, nearest for the mask.
        resample = PILImage.BILINEAR if self.rotate_interpolation == "bilinear" else PILImage.NEAREST
        rotated = PILImage.fromarray(np.ascontiguousarray(image)).rotate(angle, resample=resample, fillcolor=(0, 0, 0))
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


def random_crop(image: np.ndarray, mask: np.ndarray, size: Sequence[int],
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random ``size`` = (h, w) window of an image and its mask, clipped to the image (a smaller image is
    returned whole; the transform pads it)."""
    height, width = mask.shape
    size_h, size_w = min(int(size[0]), height), min(int(size[1]), width)
    top = int(rng.integers(0, height - size_h + 1))
    left = int(rng.integers(0, width - size_w + 1))
    return image[top:top + size_h, left:left + size_w], mask[top:top + size_h, left:left + size_w]


def rotate_fill_label(value: str | int, num_labels: int, ignore_index: int) -> int:
    """The label of rotated-in corners: 0 (background) for binary masks; ``ignore`` (``ignore_index``) or a class
    id in ``[0, num_labels)`` for multi-class ones."""
    if num_labels == 1:
        return 0
    if str(value) == "ignore":
        return ignore_index
    try:
        label = int(value)
    except (TypeError, ValueError):
        label = -1
    if not 0 <= label < num_labels:
        raise ValueError(f"rotate_fill_label={value!r} must be 'ignore' or a class id in 0..{num_labels - 1}")
    return label


def build_augmenter(names: str | Iterable[str] | None, rotate_degrees: float = 90.0, color_jitter: float = 0.2,
                    num_labels: int = 1, ignore_index: int = 255, rotate_prob: float = 0.5,
                    rotate_interpolation: str = "bilinear", fill_label: str | int = "ignore",
                    ) -> SegmentationAugmenter | None:
    """An augmenter for the given names, or None when the list is empty (``fill_label``: see
    :func:`rotate_fill_label`)."""
    parsed = parse_augment_names(names)
    if not parsed:
        return None
    return SegmentationAugmenter(parsed, rotate_degrees=rotate_degrees, rotate_prob=rotate_prob,
                                 rotate_interpolation=rotate_interpolation, color_jitter=color_jitter,
                                 mask_fill=rotate_fill_label(fill_label, num_labels, ignore_index))
