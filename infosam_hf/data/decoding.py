"""Decoding images and masks from ``datasets`` Image values (PIL images or ``{"path", "bytes"}`` dicts)."""

from __future__ import annotations

import io
import os
from typing import Any

import numpy as np
from PIL import Image, ImageOps

__all__ = ["DataError", "open_image", "decode_image", "decode_mask", "source_name"]


class DataError(ValueError):
    """A data problem reported in one line that names the file, row or key."""


def source_name(value: Any) -> str:
    """A printable name for an Image value (its path, or '<in-memory image>')."""
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    filename = getattr(value, "filename", None)
    return filename or "<in-memory image>"


def open_image(value: Any) -> Image.Image:
    """Open (lazily, without decoding pixels) an Image value."""
    if isinstance(value, Image.Image):
        return value
    try:
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                return Image.open(io.BytesIO(value["bytes"]))
            return Image.open(value["path"])
        return Image.open(value)
    except (OSError, ValueError, TypeError) as err:
        raise DataError(f"{source_name(value)}: cannot open image ({type(err).__name__})") from None


def decode_image(value: Any, draft_size: tuple[int, int] | None = None,
                 apply_exif: bool = True) -> tuple[Image.Image, tuple[int, int]]:
    """Decode an image to RGB, with EXIF orientation applied unless ``apply_exif`` is False.

    Returns the image and its full-resolution (height, width) after orientation. With ``draft_size``
    (w, h), JPEGs are decoded at the smallest DCT scale that is still at least that large.
    """
    image = open_image(value)
    try:
        width, height = image.size
        orientation = image.getexif().get(0x0112, 1) if apply_exif and hasattr(image, "getexif") else 1
        if orientation in (5, 6, 7, 8):
            width, height = height, width
        if draft_size is not None and image.format == "JPEG":
            request = draft_size if orientation not in (5, 6, 7, 8) else draft_size[::-1]
            image.draft("RGB", request)
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        if image.mode != "RGB":
            if image.mode in ("I;16", "I;16B", "I;16L", "I"):
                array = np.asarray(image, dtype=np.float64)
                peak = array.max() if array.max() > 0 else 1.0
                image = Image.fromarray((array / peak * 255).astype(np.uint8))
            image = image.convert("RGB")
        image.load()
    except DataError:
        raise
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{source_name(value)}: corrupt or unreadable image ({type(err).__name__})") from None
    return image, (height, width)


def decode_mask(value: Any, threshold: float | None = None, invert: bool = False,
                num_labels: int = 1) -> np.ndarray:
    """Decode a mask: bool (H, W) foreground for binary sets, int64 class ids for multi-class ones.

    Binary: foreground is ``value > threshold``; the default threshold is 127 for 8-bit masks whose
    maximum is above 1 and 0 for 0/1 masks. 16-bit masks are scaled to 8 bits first and RGB masks are
    converted to L. ``invert`` swaps foreground and background.
    """
    mask = open_image(value)
    try:
        if mask.mode in ("I;16", "I;16B", "I;16L", "I") and num_labels == 1:
            array = np.asarray(mask, dtype=np.float64)
            array = array / 257.0 if array.max() > 255 else array
        elif mask.mode == "P" and num_labels > 1:
            array = np.asarray(mask)
        else:
            array = np.asarray(mask.convert("L") if mask.mode not in ("L", "I", "I;16") else mask)
    except (OSError, ValueError, SyntaxError) as err:
        raise DataError(f"{source_name(value)}: corrupt or unreadable mask ({type(err).__name__})") from None
    if num_labels > 1:
        return array.astype(np.int64)
    if threshold is None:
        threshold = 127 if array.max() > 1 else 0
    foreground = array > threshold
    return ~foreground if invert else foreground
