"""Decoding images and masks from ``datasets`` Image values (PIL images or ``{"path", "bytes"}`` dicts).

Every failure is a :class:`DataError` whose message is one line naming the offending file.
"""

from __future__ import annotations

import io
import logging
import os
import threading
from typing import Any

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")  # what folders of images are read for

__all__ = ["DataError", "open_image", "decode_image", "decode_mask", "decode_mask_official", "source_name", "header_sizes",
           "size_mismatch", "EXIF_ORIENTATION", "IMAGE_MODES", "CLASS_ID_MODES", "READ_ERRORS"]

logger = logging.getLogger(__name__)

EXIF_ORIENTATION = 0x0112
_TRANSPOSING = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_WIDE_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")
# Modes that decode_image and binary decode_mask read; CLASS_ID_MODES are the single-channel ones
# (LA / PA: the first channel) that multi-class masks must use.
CLASS_ID_MODES = ("1", "L", "P", "LA", "PA") + _WIDE_MODES
IN_MEMORY_NAME = "<in-memory image>"  # source_name of an image held in memory (no file)
_COLOUR_MODES = ("RGB", "RGBA", "RGBX", "RGBa", "CMYK", "YCbCr", "LAB", "HSV")
IMAGE_MODES = CLASS_ID_MODES + _COLOUR_MODES
_ALPHA_MODES = ("RGBA", "LA", "PA")
READ_ERRORS = (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError)
_alpha_reported = False
_alpha_lock = threading.Lock()  # validate_data decodes masks in threads


class DataError(ValueError):
    """A data problem reported in one line that names the file, row or key."""


def source_name(value: Any) -> str:
    """A printable name for an Image value (its path, or '<in-memory image>')."""
    if isinstance(value, dict) and value.get("path"):
        return str(value["path"])
    if isinstance(value, (str, os.PathLike)):
        return str(value)
    filename = getattr(value, "filename", None)
    return filename or IN_MEMORY_NAME


def open_image(value: Any) -> Image.Image:
    """Open (lazily, without decoding pixels) an Image value: a PIL image, a path, or a datasets dict."""
    if isinstance(value, Image.Image):
        return value
    try:
        if isinstance(value, dict):
            if value.get("bytes") is not None:
                return Image.open(io.BytesIO(value["bytes"]))
            if not value.get("path"):
                raise DataError("<empty image value>: neither bytes nor path")
            return Image.open(value["path"])
        return Image.open(value)
    except FileNotFoundError:
        raise DataError(f"{source_name(value)}: file not found") from None
    except READ_ERRORS as err:
        raise DataError(f"{source_name(value)}: corrupt or unreadable image, cannot open it "
                        f"({type(err).__name__}: {err})") from None


def _wide_to_uint8(array: np.ndarray) -> np.ndarray:
    """Scale a 16-bit / 32-bit / float image to 0..255 by its own peak (non-finite pixels read as 0)."""
    array = array.astype(np.float64)
    finite = np.isfinite(array)
    if not finite.all():  # NaN / Inf pixels read as 0 and do not set the scale (one would blacken the image)
        array = np.where(finite, array, 0.0)
    low = min(float(array.min()), 0.0)
    peak = float(array.max()) - low
    return ((array - low) / (peak if peak > 0 else 1.0) * 255.0 + 0.5).astype(np.uint8)


def exif_orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(EXIF_ORIENTATION, 1) or 1)
    except Exception:  # broken EXIF blocks are common on phone photos; ignore them
        return 1


def size_mismatch(image_value: Any, image_size: tuple[int, int], mask_value: Any, mask_size: tuple[int, int]) -> str:
    """The one-line message for an image and a mask of different (height, width)."""
    return (f"size mismatch: image {source_name(image_value)} is {image_size[1]}x{image_size[0]} but mask "
            f"{source_name(mask_value)} is {mask_size[1]}x{mask_size[0]} (WxH)")


def header_sizes(image: Image.Image, exact: bool = True) -> tuple[tuple[int, int], tuple[int, int]]:
    """(height, width) of a lazily opened image after EXIF orientation, and as stored.

    Without ``exact`` nothing is decoded: the orientation is read from the header alone, which misses
    the rare PNG whose eXIf chunk follows its pixel data (``exact``, like :func:`decode_image`, reads
    such a PNG to its end, decoding it).
    """
    width, height = image.size
    if exact:
        orientation = exif_orientation(image)
    else:
        try:  # the base implementation reads what the header parsed; PNG's override would decode pixels
            orientation = int(Image.Image.getexif(image).get(EXIF_ORIENTATION, 1) or 1)
        except Exception:  # broken EXIF blocks are ignored, as in exif_orientation
            orientation = 1
    if orientation in _TRANSPOSING:
        return (width, height), (height, width)
    return (height, width), (height, width)


def decode_image(value: Any, draft_size: tuple[int, int] | None = None,
                 apply_exif: bool = True) -> tuple[Image.Image, tuple[int, int]]:
    """Decode an image to RGB, with EXIF orientation applied unless ``apply_exif`` is False.

    L, LA, RGBA, P, CMYK, 16-bit and float images all become 8-bit RGB. Returns the image and its
    full-resolution (height, width) after orientation. With ``draft_size`` (w, h) in the oriented
    frame, JPEGs are decoded at the smallest DCT scale that is still at least that large, so the
    returned image may be smaller than the returned size.
    """
    image = open_image(value)
    name = source_name(value)
    try:
        width, height = image.size
        orientation = exif_orientation(image) if apply_exif else 1
        if orientation in _TRANSPOSING:
            width, height = height, width
        if draft_size is not None and image.format == "JPEG":
            request = draft_size if orientation not in _TRANSPOSING else draft_size[::-1]
            image.draft("RGB", tuple(int(v) for v in request))
        if orientation != 1:
            image = ImageOps.exif_transpose(image)
        if image.mode != "RGB":
            if image.mode in _WIDE_MODES:
                image = Image.fromarray(_wide_to_uint8(np.asarray(image)))
            elif image.mode == "P" and "transparency" in image.info:
                image = image.convert("RGBA")
            image = image.convert("RGB")
        image.load()
    except DataError:
        raise
    except READ_ERRORS as err:
        raise DataError(f"{name}: corrupt or unreadable image ({type(err).__name__}: {err})") from None
    return image, (height, width)


def _alpha_only(mask: Image.Image, name: str) -> np.ndarray | None:
    """The alpha channel of an RGBA / LA / PA mask whose colour channels are constant while alpha varies
    (matting and annotation tools export masks that way), else None. Logged once per process."""
    global _alpha_reported
    if mask.mode not in _ALPHA_MODES:
        return None
    array = np.asarray(mask)
    colour, alpha = array[..., :-1], array[..., -1]
    if not (colour == colour[:1, :1]).all() or alpha.min() == alpha.max():
        return None
    with _alpha_lock:
        first, _alpha_reported = not _alpha_reported, True
    if first:
        logger.warning("%s: the mask's colour channels are constant, so its alpha channel is used as the mask "
                       "(said once; applies to every such mask)", name)
    return alpha


def decode_mask(value: Any, threshold: float | None = None, invert: bool = False,
                num_labels: int = 1, ignore_index: int = 255, value_map: dict[int, int] | None = None) -> np.ndarray:
    """Decode a mask: bool (H, W) foreground for binary sets, int64 class ids for multi-class ones.

    Binary (``num_labels == 1``): foreground is ``value > threshold``; the default threshold is 127
    when the mask's maximum is above 1 and 0 for 0/1 masks. 16-bit masks with values above 255 are
    scaled to 8 bits first. Palette (P) masks are read by palette index (labelme writes index 1 for
    the object, which reads as a dark gray once converted). Colour masks are reduced to one channel
    by their brightest channel, which equals the L conversion for gray masks and keeps pure red /
    green / blue annotations as foreground. RGBA / LA / PA masks whose colour is constant while
    their alpha varies are read from alpha (logged once). ``invert`` swaps foreground and background.

    Multi-class (``num_labels > 1``): single-channel class ids; ids outside ``[0, num_labels)``
    become ``ignore_index``. ``value_map`` replaces raw values first (e.g. ``{85: 1, 255: 2}``); with it, colour masks
    are read as the mean of their R, G, B channels (G-SAM's Trans10k loader).
    """
    mask = open_image(value)
    name = source_name(value)
    try:
        mode = mask.mode
        if mode in _WIDE_MODES:
            array = np.asarray(mask)
            if num_labels == 1 and array.max() > 255:
                array = array.astype(np.float64) / 257.0
        elif mode in ("P", "L", "1"):
            array = np.asarray(mask)
        elif num_labels > 1 and value_map and mode in _COLOUR_MODES:  # G-SAM's Trans10k: mean of R, G, B, then mapped
            mean = np.asarray(mask.convert("RGB"), dtype=np.float64).mean(axis=2)
            array = np.where(np.mod(mean, 1) == 0, mean, -1).astype(np.int64)  # a mixed colour is no class
        elif num_labels > 1:
            if mode not in CLASS_ID_MODES:
                raise DataError(f"{name}: a multi-class mask must be single-channel class ids, got mode {mode}")
            array = _alpha_only(mask, name)
            if array is None:
                array = np.asarray(mask)[..., 0]
        else:
            array = _alpha_only(mask, name)
            if array is None and mode in _COLOUR_MODES:
                array = np.asarray(mask.convert("RGB")).max(axis=2)
            elif array is None:
                array = np.asarray(mask.convert("L"))
    except DataError:
        raise
    except READ_ERRORS as err:
        raise DataError(f"{name}: corrupt or unreadable mask ({type(err).__name__}: {err})") from None
    if array.ndim != 2:
        raise DataError(f"{name}: a mask must be 2-D, got shape {array.shape}")
    if value_map:
        raw = array
        array = raw.astype(np.int64)
        for source, target in value_map.items():
            array[raw == source] = target
    if num_labels > 1:
        ids = array.astype(np.int64)
        ids[(ids < 0) | (ids >= num_labels)] = ignore_index
        return ids
    if array.dtype == bool:
        foreground = array.copy()
    else:
        if threshold is None:
            threshold = 127 if array.max() > 1 else 0
        foreground = array > threshold
    return ~foreground if invert else foreground



def decode_mask_official(value: Any, apply_exif: bool = True) -> np.ndarray:
    """A mask as the official InfoSAM loader reads it: uint8 (H, W) gray levels (OpenCV's grayscale read,
    EXIF orientation applied), then, when the mask's maximum is 255, ``v // 255`` (foreground is exactly
    255); any other mask keeps its raw values. Colour masks become gray by luma, as OpenCV converts them."""
    mask = open_image(value)
    name = source_name(value)
    try:
        if apply_exif and exif_orientation(mask) != 1:
            mask = ImageOps.exif_transpose(mask)
        if mask.mode in _WIDE_MODES:  # OpenCV keeps the high byte of 16-bit data
            array = np.asarray(mask).astype(np.int64)
            array = (array >> 8 if array.max() > 255 else array).clip(0, 255).astype(np.uint8)
        else:
            array = np.asarray(mask.convert("L"))
    except READ_ERRORS as err:
        raise DataError(f"{name}: corrupt or unreadable mask ({type(err).__name__}: {err})") from None
    if array.ndim != 2:
        raise DataError(f"{name}: a mask must be 2-D, got shape {array.shape}")
    return array // 255 if array.max() == 255 else array.copy()
