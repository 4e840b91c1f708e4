#!/usr/bin/env python
"""Benchmark: ``infosam predict``'s overlay of one large image (default 6000×4000), side by side.

Prints the time of the full-resolution reference (numpy float blend, a (2w+1)² min filter for the outline of
stroke w) and of :func:`~infosam_hf.evaluation.visualization.overlay_mask` (PIL blend, outline drawn at 1/w
scale), their ratio, and how many outline pixels the two agree on.

Usage: ``python benchmarks/bench_overlay.py [--width 6000] [--height 4000]``.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

from infosam_hf.evaluation.visualization import (  # noqa: E402
    MASK_COLOR,
    _line_width,
    mask_contour,
    overlay_mask,
)


def reference_overlay(image: Image.Image, mask: np.ndarray, alpha: float = 0.45) -> tuple[Image.Image, np.ndarray]:
    """The full-resolution overlay: float blend and an exact (2w+1)² min-filter outline."""
    width = _line_width(image.height, image.width)
    padded = np.pad(mask, width, constant_values=False)
    eroded = Image.fromarray(padded.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(2 * width + 1))
    contour = mask & ~(np.asarray(eroded)[width:-width, width:-width] > 0)
    pixels = np.asarray(image, dtype=np.float32).copy()
    tint = np.asarray(MASK_COLOR, dtype=np.float32)
    pixels[mask] = (1.0 - alpha) * pixels[mask] + alpha * tint
    pixels[contour] = tint
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8)), contour


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=6000)
    parser.add_argument("--height", type=int, default=4000)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (args.height, args.width, 3), dtype=np.uint8))
    yy, xx = np.mgrid[: args.height, : args.width]
    mask = ((yy - args.height / 2) ** 2 / (0.37 * args.height) ** 2
            + (xx - args.width / 2) ** 2 / (0.37 * args.width) ** 2) < 1
    start = time.perf_counter()
    _, exact = reference_overlay(image, mask)
    reference = time.perf_counter() - start
    start = time.perf_counter()
    overlay_mask(image, mask)
    fast = time.perf_counter() - start
    drawn = mask_contour(mask, _line_width(args.height, args.width))
    agree = (drawn & exact).sum() / max(1, (drawn | exact).sum())
    print(f"overlay {args.width}x{args.height}: reference {reference:.2f} s, overlay_mask {fast:.2f} s, "
          f"ratio {fast / reference:.3f}; outline pixels shared (IoU) {agree:.2f}")


if __name__ == "__main__":
    main()
