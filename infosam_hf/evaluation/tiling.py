"""Tiled inference on images larger than the model input (``infosam predict --tile SIZE --overlap PX``).

The image is cut into overlapping ``tile``-sized windows (the last row/column aligned to the image edge), the
image encoder runs on batches of tiles, a prompt given in full-image pixels goes to every tile it touches
(boxes clipped to the tile, points outside it dropped; a tile the prompt does not touch is skipped), and the
tiles' logits are blended back with linear seam weights that ramp from 0 to 1 across the overlap.

Output is produced in horizontal bands, one tile row at a time: only the band being blended (``tile`` rows of
full-width float32 sums) and the final uint8 mask (or class map) are held at full width, so memory is bounded by
the tile batch and the image width, not by the image area.

The model is called only through :class:`~infosam_hf.evaluation.backends.SegmentBackend` (a PyTorch SAM or the
ONNX graphs of ``infosam export --onnx``), so both backends tile the same way.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import UsageError
from .backends import as_backend

__all__ = [
    "BACKGROUND_LOGIT",
    "Tile",
    "predict_tiled",
    "prompt_for_tile",
    "seam_weights",
    "tile_grid",
    "tiled_logit_bands",
]

BACKGROUND_LOGIT = -20.0  # pixels no prompted tile covers


@dataclass(frozen=True)
class Tile:
    """A window ``[y0, y1) × [x0, x1)`` of the full image, in pixels."""

    y0: int
    x0: int
    y1: int
    x1: int


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    stride = tile - overlap
    count = math.ceil((length - tile) / stride) + 1
    starts = [min(i * stride, length - tile) for i in range(count)]
    return sorted(set(starts))


def tile_grid(height: int, width: int, tile: int, overlap: int) -> list[list[Tile]]:
    """Rows of overlapping tiles covering a ``height × width`` image; every tile is ``min(tile, side)`` on each
    side, neighbours overlap by at least ``overlap`` pixels (more for the last, edge-aligned one)."""
    if tile < 1:
        raise UsageError(f"--tile must be >= 1, got {tile}")
    if not 0 <= overlap < tile:
        raise UsageError(f"--overlap must be in [0, --tile), got {overlap} with --tile {tile}")
    th, tw = min(tile, height), min(tile, width)
    return [[Tile(y, x, y + th, x + tw) for x in _starts(width, tile, overlap)] for y in _starts(height, tile, overlap)]


def _ramp(length: int, low_seam: bool, high_seam: bool, overlap: int) -> np.ndarray:
    """1-D seam weight: rises linearly over ``overlap`` pixels from a side shared with a neighbour tile."""
    weight = np.ones(length, dtype=np.float32)
    if overlap > 0:
        rise = (np.arange(length, dtype=np.float32) + 0.5) / overlap
        if low_seam:
            weight = np.minimum(weight, rise)
        if high_seam:
            weight = np.minimum(weight, rise[::-1])
    return weight


def seam_weights(tile: Tile, height: int, width: int, overlap: int) -> np.ndarray:
    """(h, w) blending weight of ``tile``: 1 inside, ramping down to ~0 towards sides inside the image."""
    wy = _ramp(tile.y1 - tile.y0, tile.y0 > 0, tile.y1 < height, overlap)
    wx = _ramp(tile.x1 - tile.x0, tile.x0 > 0, tile.x1 < width, overlap)
    return wy[:, None] * wx[None, :]


def prompt_for_tile(prompt, tile: Tile):
    """``prompt`` (a :class:`~infosam_hf.evaluation.predict.Prompt` in full-image pixels) in ``tile``'s pixels, or
    None when it does not touch the tile: the box is clipped to the tile, points outside it are dropped, and a
    tile holding no foreground point (points only) is skipped."""
    from .predict import Prompt

    if prompt is None or prompt.empty:
        return Prompt()
    box = None
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        if x1 <= tile.x0 or x0 >= tile.x1 or y1 <= tile.y0 or y0 >= tile.y1:
            return None
        box = (max(x0, tile.x0) - tile.x0, max(y0, tile.y0) - tile.y0,
               min(x1, tile.x1) - tile.x0, min(y1, tile.y1) - tile.y0)
    points = labels = None
    if prompt.points:
        kept = [((x - tile.x0, y - tile.y0), label) for (x, y), label in zip(prompt.points, prompt.labels)
                if tile.x0 <= x <= tile.x1 and tile.y0 <= y <= tile.y1]
        if kept:
            points, labels = [p for p, _ in kept], [label for _, label in kept]
        if box is None and not any(label == 1 for label in labels or []):
            return None
    return Prompt(box=box, points=points, labels=labels)


def tiled_logit_bands(model, image: np.ndarray, prompt=None, *, tile: int | None = None, overlap: int = 64,
                      batch_size: int = 4, device: str | torch.device = "cpu", image_mean=None, image_std=None,
                      preprocessing: str = "sam", channel_order: str = "rgb") -> Iterator[tuple[int, np.ndarray]]:
    """Blend tiled logits of an (H, W, 3) uint8 ``image``; yields ``(y0, band)`` with ``band`` the finished
    (C, rows, W) float32 logits of rows ``y0 …``, top to bottom (C = 1, or the class count).

    ``model`` is a PyTorch SAM (run with ``device`` and the pre-processing settings) or any
    :class:`~infosam_hf.evaluation.backends.SegmentBackend` such as an ONNX predictor. ``tile`` defaults to the
    model's input size; a fixed-size model resizes each tile to it, a dynamic-size model
    (:mod:`infosam_hf.models.dynamic`) runs it at its own size.
    """
    backend = as_backend(model, device=device, image_mean=image_mean, image_std=image_std,
                         preprocessing=preprocessing, channel_order=channel_order)
    height, width = image.shape[:2]
    tile = tile or backend.image_size
    rows = tile_grid(height, width, tile, overlap)
    channels = max(1, backend.num_classes)
    band_h = rows[0][0].y1 - rows[0][0].y0
    sums = np.zeros((channels, band_h, width), dtype=np.float32)
    weights = np.zeros((band_h, width), dtype=np.float32)
    band_y = 0

    def finished(upto: int) -> tuple[int, np.ndarray]:
        count = upto - band_y
        total = weights[:count]
        band = np.where(total > 0, sums[:, :count] / np.maximum(total, 1e-12), BACKGROUND_LOGIT)
        return band_y, band.astype(np.float32)

    for row in rows:
        y0 = row[0].y0
        if y0 > band_y:  # rows above this tile row are final: emit them and shift the band up
            yield finished(y0)
            shift = y0 - band_y
            sums[:, :-shift], sums[:, -shift:] = sums[:, shift:].copy(), 0.0
            weights[:-shift], weights[-shift:] = weights[shift:].copy(), 0.0
            band_y = y0
        work = [(t, p) for t in row if (p := prompt_for_tile(prompt, t)) is not None]
        for start in range(0, len(work), batch_size):
            chunk = work[start:start + batch_size]
            encoded = backend.encode([image[t.y0:t.y1, t.x0:t.x1] for t, _ in chunk], own_size=backend.dynamic)
            for i, (t, tile_prompt) in enumerate(chunk):
                tile_logits = backend.prompt_logits(encoded, i, tile_prompt)
                w = seam_weights(t, height, width, overlap)
                h = t.y1 - t.y0
                sums[:, :h, t.x0:t.x1] += tile_logits.reshape(channels, h, -1) * w
                weights[:h, t.x0:t.x1] += w
    yield finished(height)


def predict_tiled(model, image: np.ndarray, prompt=None, *, threshold: float = 0.5, **options) -> np.ndarray:
    """Full-resolution (H, W) uint8 result of tiled inference: the 0/1 mask (probability > ``threshold``) of a
    binary model, the argmax class ids of a multi-class one. ``options`` go to :func:`tiled_logit_bands`."""
    height, width = image.shape[:2]
    out = np.zeros((height, width), dtype=np.uint8)
    logit_threshold = math.log(threshold / (1.0 - threshold))
    for y0, band in tiled_logit_bands(model, image, prompt, **options):
        if band.shape[0] > 1:
            result = band.argmax(0)
        else:
            result = band[0] > logit_threshold
        out[y0:y0 + band.shape[1]] = result
    return out
