"""One image at a time through any segmenter (tiled PyTorch, ONNX Runtime), writing what ``infosam predict`` writes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from ..data import DataError, decode_image
from ..errors import error_line
from .class_map import class_map_image, overlay_class_map
from .predict import PredictionResult, _output_names
from .prompt_input import Prompt, check_prompt, fit_prompt
from .visualization import overlay_mask

logger = logging.getLogger(__name__)

__all__ = ["predict_each_image"]


def predict_each_image(segment: Callable[[Image.Image, Prompt], np.ndarray], paths: Sequence[Path], prompt: Prompt,
                       out_dir: str | Path, *, multiclass: bool = False,
                       progress: bool = True) -> list[PredictionResult]:
    """``segment(image, fitted_prompt)`` → (H, W) uint8 mask (0/1) or class ids for each image in ``paths``; writes
    ``<stem>_mask.png`` (``<stem>_classes.png`` when ``multiclass``) and ``<stem>_overlay.png`` to ``out_dir``.
    Unreadable images get a result with ``error`` set, as in :func:`~.predict.predict_masks`."""
    check_prompt(prompt, paths)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    names = _output_names(paths)
    results = []
    for path in tqdm(paths, desc="predicting", unit="image", disable=not progress):
        try:
            image, size = decode_image(str(path))
        except DataError as err:
            results.append(PredictionResult(path, error=error_line(err).removeprefix(f"{path}: ")))
            continue
        fitted, clipped = fit_prompt(prompt, size, str(path))
        if clipped:
            logger.warning("%s: the box reaches outside the %dx%d (WxH) image; clipped", path, size[1], size[0])
        result = segment(image, fitted)
        stem = names[path]
        overlay_path = out_dir / f"{stem}_overlay.png"
        if multiclass:
            map_path = out_dir / f"{stem}_classes.png"
            class_map_image(result).save(map_path)
            overlay_class_map(image, result).save(overlay_path)
            results.append(PredictionResult(path, map_path, overlay_path, foreground_fraction=float((result != 0).mean())))
            continue
        mask = result.astype(bool)
        mask_path = out_dir / f"{stem}_mask.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
        overlay_mask(image, mask, box=fitted.box, points=fitted.points, point_labels=fitted.labels).save(overlay_path)
        results.append(PredictionResult(path, mask_path, overlay_path, foreground_fraction=float(mask.mean())))
    return results
