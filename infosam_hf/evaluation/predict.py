"""Masks and overlay pictures for new images with a trained adapter (``infosam predict``).

Prompt coordinates are in the ORIGINAL image's pixels (as in any image viewer) and are mapped to
the model's input frame by the resize factor ``image_size / max(h, w)``, as the data layer does (SAM 2,
which resizes to the square: per axis).
For each image ``<stem>_mask.png`` (0/255, original size) and ``<stem>_overlay.png`` (the image
with the translucent mask, its contour and the prompt) are written to ``--out``. Images that cannot
be read are listed at the end and make the exit status 1; the others are still written.
"""

from __future__ import annotations

import glob
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
from ..data.sources import IMAGE_EXTENSIONS
from ..errors import UsageError, error_line
from ..models.inference import model_image_size, resolve_device
from ..models.sam2 import keeps_aspect_ratio
from .loop import sam_logits
from .metrics import logits_to_original
from .visualization import overlay_mask

logger = logging.getLogger(__name__)

__all__ = [
    "Prompt",
    "parse_box",
    "parse_points",
    "find_images",
    "scale_to_input",
    "PredictionResult",
    "predict_masks",
    "parse_prompt",
    "build_parser",
    "main",
]


@dataclass
class Prompt:
    """One prompt applied to every image, in original-image pixels. Empty (all None) for ``--auto``."""

    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float]] | None = None
    labels: list[int] | None = None

    @property
    def empty(self) -> bool:
        return self.box is None and not self.points


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` → a box with ``x0 < x1`` and ``y0 < y1``."""
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise UsageError(f"--box {text!r}: expected four numbers x0,y0,x1,y1") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise UsageError(f"--box {text!r}: expected four numbers x0,y0,x1,y1")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise UsageError(f"--box {text!r}: needs x0 < x1 and y0 < y1 (top-left corner first)")
    return values


def parse_points(text: str) -> tuple[list[tuple[float, float]], list[int]]:
    """``"x,y[,label];x,y[,label]..."`` → points and labels (1 foreground, the default; 0 background)."""
    points, labels = [], []
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        parts = item.replace(" ", "").split(",")
        try:
            numbers = [float(v) for v in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3) or not all(math.isfinite(v) for v in numbers):
            raise UsageError(f"--points: {item!r} is not x,y or x,y,label")
        label = int(numbers[2]) if len(numbers) == 3 else 1
        if len(numbers) == 3 and (numbers[2] not in (0.0, 1.0)):
            raise UsageError(f"--points: label of {item!r} must be 1 (foreground) or 0 (background)")
        points.append((numbers[0], numbers[1]))
        labels.append(label)
    if not points:
        raise UsageError(f"--points {text!r}: no points given")
    return points, labels


def find_images(spec: str) -> list[Path]:
    """The images named by ``spec``: one file, a folder (its image files, sorted) or a glob pattern."""
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise UsageError(f"--images {spec}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return files
    if path.is_file():
        return [path]
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise UsageError(f"--images {spec}: the pattern matches no files")
        return files
    raise UsageError(f"--images {spec}: no such file or folder")


def scale_to_input(coords: Any, original_size: tuple[int, int], image_size: int,
                   keep_aspect_ratio: bool = True) -> np.ndarray:
    """Original-pixel (x, y) coordinates → the model input frame: times ``image_size / max(h, w)`` (SAM), or
    x times ``image_size / w`` and y times ``image_size / h`` (SAM 2's square resize)."""
    height, width = original_size
    if not keep_aspect_ratio:
        scale = np.array([image_size / width, image_size / height], dtype=np.float32)
        return (np.asarray(coords, dtype=np.float32).reshape(-1, 2) * scale).reshape(np.shape(coords))
    return np.asarray(coords, dtype=np.float32) * np.float32(image_size / max(height, width))


@dataclass
class PredictionResult:
    """What happened to one input image."""

    path: Path
    mask_path: Path | None = None
    overlay_path: Path | None = None
    error: str | None = None
    foreground_fraction: float = field(default=float("nan"))


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


def _prompt_tensors(prompt: Prompt, sizes: list[tuple[int, int]], image_size: int,
                    keep_aspect_ratio: bool = True) -> dict[str, torch.Tensor]:
    batch: dict[str, torch.Tensor] = {}
    if prompt.box is not None:
        boxes = [scale_to_input(np.reshape(prompt.box, (2, 2)), size, image_size, keep_aspect_ratio).reshape(4)
                 for size in sizes]
        batch["input_boxes"] = torch.from_numpy(np.stack(boxes)).unsqueeze(1)  # (B, 1, 4)
    if prompt.points:
        points = [scale_to_input(prompt.points, size, image_size, keep_aspect_ratio) for size in sizes]
        batch["input_points"] = torch.from_numpy(np.stack(points)).unsqueeze(1)  # (B, 1, N, 2)
        labels = torch.tensor(prompt.labels, dtype=torch.long)
        batch["input_labels"] = labels.expand(len(sizes), 1, len(prompt.labels)).clone()  # (B, 1, N)
    return batch


@torch.no_grad()
def predict_masks(model: torch.nn.Module, paths: Sequence[Path], prompt: Prompt, out_dir: str | Path, *,
                  batch_size: int = 4, threshold: float = 0.5, device: str | torch.device | None = None,
                  progress: bool = True) -> list[PredictionResult]:
    """Segment every image in ``paths`` with ``prompt`` and write its mask and overlay PNGs to ``out_dir``.

    Unreadable images get a :class:`PredictionResult` with ``error`` set; the others are written.
    """
    if not 0.0 < threshold < 1.0:
        raise UsageError(f"--threshold must be in (0, 1), got {threshold}")
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    image_size = model_image_size(model)
    keep_aspect = keeps_aspect_ratio(model)
    logit_threshold = math.log(threshold / (1.0 - threshold))
    names = _output_names(paths)
    results: list[PredictionResult] = []
    bar = tqdm(total=len(paths), desc="predicting", unit="image", disable=not progress)
    for group in _batches(list(paths), batch_size):
        loaded: list[tuple[Path, Image.Image, tuple[int, int]]] = []
        for path in group:
            try:
                image, size = decode_image(str(path))
            except DataError as err:
                message = error_line(err)
                results.append(PredictionResult(path, error=message.removeprefix(f"{path}: ")))
                bar.update(1)
                continue
            loaded.append((path, image, size))
        if not loaded:
            continue
        pixel_values, reshaped = [], []
        for _, image, _ in loaded:
            pixels, new_size = preprocess_image(image, image_size, keep_aspect_ratio=keep_aspect)
            pixel_values.append(pixels)
            reshaped.append(new_size)
        sizes = [size for _, _, size in loaded]
        prompts = _prompt_tensors(prompt, sizes, image_size, keep_aspect)
        batch = {"pixel_values": torch.stack(pixel_values), **prompts}
        batch = {key: value.to(device) for key, value in batch.items()}
        logits = sam_logits(model, batch)
        for i, (path, image, size) in enumerate(loaded):
            full = logits_to_original(logits[i, 0], image_size, reshaped[i], size).cpu().numpy()
            mask = full > logit_threshold
            stem = names[path]
            mask_path, overlay_path = out_dir / f"{stem}_mask.png", out_dir / f"{stem}_overlay.png"
            Image.fromarray(mask.astype(np.uint8) * 255).save(mask_path)
            overlay_mask(image, mask, box=prompt.box, points=prompt.points, point_labels=prompt.labels).save(
                overlay_path)
            results.append(PredictionResult(path, mask_path, overlay_path, foreground_fraction=float(mask.mean())))
            bar.update(1)
    bar.close()
    order = {path: i for i, path in enumerate(paths)}
    return sorted(results, key=lambda r: order[r.path])
