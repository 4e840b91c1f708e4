"""Masks and overlay pictures for new images with a trained adapter (``infosam predict``).

Prompt coordinates are in the ORIGINAL image's pixels (as in any image viewer) and are mapped to
the model's input frame by the resize factor ``image_size / max(h, w)``, as the data layer does (SAM 2,
which resizes to the square: per axis).
For each image ``<stem>_mask.png`` (0/255, original size) and ``<stem>_overlay.png`` (the image
with the translucent mask, its contour and the prompt) are written to ``--out``. Images that cannot
be read are listed at the end and make the exit status 1; the others are still written.

A multi-class model (see :mod:`infosam_hf.models.multiclass`) takes no prompt and writes
``<stem>_classes.png`` instead of the mask: a palette PNG whose pixel values are the argmax class
ids, shown in colour, and an overlay tinted by class.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from ..data import DataError, decode_image, preprocess_image
from ..errors import UsageError, error_line
from ..models.inference import model_image_size, resolve_device
from ..models.multiclass import sam_num_classes
from ..data.class_names import is_background
from .class_map import class_legend, class_map_image, overlay_class_map
from ..models.sam2 import keeps_aspect_ratio
from .loop import sam_logits
from .metrics import logits_to_original
from .prompt_input import Prompt, check_prompt, find_images, fit_prompt, parse_box, parse_points  # noqa: F401  (re-exported)
from .visualization import overlay_mask

logger = logging.getLogger(__name__)

CLASSES_JSON = "classes.json"  # a multi-class prediction's legend: id, name and palette colour of each class

__all__ = [
    "Prompt",
    "parse_box",
    "parse_points",
    "find_images",
    "fit_prompt",
    "check_prompt",
    "scale_to_input",
    "PredictionResult",
    "predict_masks",
]


def scale_to_input(coords: Any, original_size: tuple[int, int], image_size: int,
                   resize: Sequence[int] | None = None) -> np.ndarray:
    """Original-pixel (x, y) coordinates → the model input frame: times ``image_size / max(h, w)``, or with a
    fixed ``resize`` (H, W) x times ``W / w`` and y times ``H / h``."""
    height, width = original_size
    if resize:
        scale = np.array([resize[1] / width, resize[0] / height], dtype=np.float32)
        return np.asarray(coords, dtype=np.float32).reshape(-1, 2) * scale
    return np.asarray(coords, dtype=np.float32) * np.float32(image_size / max(height, width))


@dataclass
class PredictionResult:
    """What happened to one input image."""

    path: Path
    mask_path: Path | None = None
    overlay_path: Path | None = None
    error: str | None = None
    foreground_fraction: float = field(default=float("nan"))  # multi-class: the fraction not of class 0


def _batches(items: Sequence[Path], size: int) -> Iterator[list[Path]]:
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def _output_names(paths: Sequence[Path]) -> dict[Path, str]:
    """A unique output stem per input (``name``, then ``name_2`` ... for repeated stems)."""
    names: dict[Path, str] = {}
    used: set[str] = set()
    for path in paths:
        stem, count = path.stem, 1
        while stem in used:
            count += 1
            stem = f"{path.stem}_{count}"
        used.add(stem)
        names[path] = stem
    return names


def _prompt_tensors(prompts: list[Prompt], sizes: list[tuple[int, int]], image_size: int,
                    resize: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """Per-image prompts (same kind, boxes possibly clipped differently) in the model input frame."""
    batch: dict[str, torch.Tensor] = {}
    if prompts[0].box is not None:
        boxes = [scale_to_input(np.reshape(p.box, (2, 2)), size, image_size, resize).reshape(4)
                 for p, size in zip(prompts, sizes)]
        batch["input_boxes"] = torch.from_numpy(np.stack(boxes)).unsqueeze(1)  # (B, 1, 4)
    if prompts[0].points:
        points = [scale_to_input(p.points, size, image_size, resize) for p, size in zip(prompts, sizes)]
        batch["input_points"] = torch.from_numpy(np.stack(points)).unsqueeze(1)  # (B, 1, N, 2)
        labels = torch.tensor(prompts[0].labels, dtype=torch.long)
        batch["input_labels"] = labels.expand(len(sizes), 1, len(prompts[0].labels)).clone()  # (B, 1, N)
    return batch


@torch.no_grad()
def predict_masks(model: torch.nn.Module, paths: Sequence[Path], prompt: Prompt, out_dir: str | Path, *,
                  batch_size: int = 4, threshold: float = 0.5, device: str | torch.device | None = None,
                  progress: bool = True, resize: Sequence[int] | None = None, image_mean: Sequence[float] | None = None,
                  image_std: Sequence[float] | None = None, preprocessing: str = "sam",
                  channel_order: str = "rgb", class_names: list[str] | None = None) -> list[PredictionResult]:
    """Segment every image in ``paths`` with ``prompt`` and write its mask and overlay PNGs to ``out_dir``.

    ``resize`` / ``image_mean`` / ``image_std`` / ``preprocessing`` / ``channel_order`` are the training run's data
    settings (a
    fixed H×W input needs a ``dynamic_input_size`` model unless it is the model's square size; SAM 2 resizes
    to its square).

    A multi-class model's outputs use ``class_names`` (the adapter's, see :mod:`infosam_hf.data.class_names`):
    overlays get a legend, and ``classes.json`` in ``out_dir`` names the class of each palette colour.

    Unreadable images get a :class:`PredictionResult` with ``error`` set; the others are written. A
    prompt that does not fit an image fails before anything is written (see :func:`fit_prompt`); a
    box partly outside an image is clipped to it, with a warning naming the image.
    """
    if not 0.0 < threshold < 1.0:
        raise UsageError(f"--threshold must be in (0, 1), got {threshold}")
    multiclass = sam_num_classes(model) > 1
    if multiclass and not prompt.empty:
        raise UsageError("this is a multi-class model: it segments every class without a prompt; drop --box / "
                         "--points")
    check_prompt(prompt, paths)
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_size = model_image_size(model)
    if multiclass:
        legend = class_legend(class_names, sam_num_classes(model))
        (out_dir / CLASSES_JSON).write_text(json.dumps(legend, indent=2) + "\n")
        background = 0 if is_background(class_names) else None
    if resize is None and not keeps_aspect_ratio(model):  # SAM 2: the whole square, no padding
        resize = (image_size, image_size)
    logit_threshold = math.log(threshold / (1.0 - threshold))
    names = _output_names(paths)
    results: list[PredictionResult] = []
    bar = tqdm(total=len(paths), desc="predicting", unit="image", disable=not progress)
    for group in _batches(list(paths), batch_size):
        loaded: list[tuple[Path, Image.Image, tuple[int, int], Prompt]] = []
        for path in group:
            try:
                image, size = decode_image(str(path))
            except DataError as err:
                message = error_line(err)
                results.append(PredictionResult(path, error=message.removeprefix(f"{path}: ")))
                bar.update(1)
                continue
            fitted, clipped = fit_prompt(prompt, size, str(path))
            if clipped:
                logger.warning("%s: the box %s reaches outside the %dx%d (WxH) image; clipped to %s", path,
                               ",".join(f"{v:g}" for v in prompt.box), size[1], size[0],
                               ",".join(f"{v:g}" for v in fitted.box))
            loaded.append((path, image, size, fitted))
        if not loaded:
            continue
        pixel_values, reshaped = [], []
        for _, image, _, _ in loaded:
            pixels, new_size = preprocess_image(image, image_size, mean=image_mean, std=image_std, resize=resize,
                                                preprocessing=preprocessing, channel_order=channel_order)
            pixel_values.append(pixels)
            reshaped.append(new_size)
        sizes = [size for _, _, size, _ in loaded]
        prompt_tensors = _prompt_tensors([fitted for *_, fitted in loaded], sizes, image_size, resize)
        batch = {"pixel_values": torch.stack(pixel_values), **prompt_tensors}
        batch = {key: value.to(device) for key, value in batch.items()}
        logits = sam_logits(model, batch)
        for i, (path, image, size, fitted) in enumerate(loaded):
            stem = names[path]
            if multiclass:
                full = logits_to_original(logits[i], logits.shape[-2:], reshaped[i], size)
                classes = full.argmax(0).cpu().numpy()
                map_path, overlay_path = out_dir / f"{stem}_classes.png", out_dir / f"{stem}_overlay.png"
                class_map_image(classes, class_names).save(map_path)
                overlay_class_map(image, classes, background=background, class_names=class_names).save(overlay_path)
                results.append(PredictionResult(path, map_path, overlay_path,
                                                foreground_fraction=float((classes != 0).mean())))
                bar.update(1)
                continue
            full = logits_to_original(logits[i, 0], logits.shape[-2:], reshaped[i], size).cpu().numpy()
            mask = full > logit_threshold
            mask_path, overlay_path = out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
            overlay_mask(image, mask, box=fitted.box, points=fitted.points, point_labels=fitted.labels).save(
                overlay_path)
            results.append(PredictionResult(path, mask_path, overlay_path, foreground_fraction=float(mask.mean())))
            bar.update(1)
    bar.close()
    order = {path: i for i, path in enumerate(paths)}
    return sorted(results, key=lambda r: order[r.path])
