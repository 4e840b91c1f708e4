"""Prompt sampling from a mask: jittered boxes and foreground/background points.

All coordinates are (x, y) in the pixel frame of the mask they were sampled from.
"""

from __future__ import annotations

from typing import Literal, get_args

import numpy as np

__all__ = ["PROMPT_MODES", "sample_box", "sample_points"]

PromptMode = Literal["box", "point", "points", "mixed", "none"]
PROMPT_MODES: tuple[str, ...] = get_args(PromptMode)
MAX_BOX_SHIFT = 5


def sample_box(mask: np.ndarray, rng: np.random.Generator, clip_upper: bool = True) -> np.ndarray | None:
    """Tight box (x0, y0, x1, y1) around all foreground, shifted as a whole by one random offset.

    As in the official InfoSAM data code, one integer offset (dx, dy) is drawn from
    [-m, m) with m = min(5, ½·min(w, h)) (w, h: the tight box's extent) and applied to both corners;
    the result is clipped to the mask (``clip_upper=False``: at 0 only, as the official code, whose box may run
    past the image into the padding). Returns None for an empty mask.
    """
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max(), ys.min(), ys.max()
    shift = int(min(MAX_BOX_SHIFT, 0.5 * min(x1 - x0, y1 - y0)))
    dx, dy = (rng.integers(-shift, shift, size=2) if shift > 0 else (0, 0))
    box = np.array([x0 + dx, y0 + dy, x1 + dx, y1 + dy], dtype=np.float64)
    h, w = mask.shape
    box[[0, 2]] = np.clip(box[[0, 2]], 0, w - 1 if clip_upper else None)
    box[[1, 3]] = np.clip(box[[1, 3]], 0, h - 1 if clip_upper else None)
    return box.astype(np.float32)


def sample_points(mask: np.ndarray, rng: np.random.Generator, num_fg: int = 1,
                  num_bg: int = 0, background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Random foreground (label 1) and background (label 0) points, without replacement.

    Background points come from ``background`` (default ``~mask``). An empty mask yields one background point
    instead of foreground points. Returns
    ``points`` (N, 2) float32 and ``labels`` (N,) int64; N may be smaller than asked when the mask
    has fewer pixels of a kind.
    """
    fg_y, fg_x = np.nonzero(mask)
    bg_y, bg_x = np.nonzero(~mask if background is None else background)
    if len(fg_x) == 0:
        num_fg, num_bg = 0, max(num_bg, 1)
    picks_fg = rng.choice(len(fg_x), size=min(num_fg, len(fg_x)), replace=False) if num_fg else []
    picks_bg = rng.choice(len(bg_x), size=min(num_bg, len(bg_x)), replace=False) if num_bg and len(bg_x) else []
    points = [(fg_x[i], fg_y[i]) for i in picks_fg] + [(bg_x[i], bg_y[i]) for i in picks_bg]
    labels = [1] * len(picks_fg) + [0] * len(picks_bg)
    return np.asarray(points, dtype=np.float32).reshape(-1, 2), np.asarray(labels, dtype=np.int64)
