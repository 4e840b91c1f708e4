"""``scripts/predict.py``: masks and overlay pictures for new images with a trained adapter.

::

    scripts/predict.py --adapter DIR_OR_REPO --images PATH_OR_GLOB
                       [--box x0,y0,x1,y1 | --points "x,y[,label];..." | --auto] --out DIR
                       [--base_model B] [--batch_size N] [--threshold 0.5]

Prompt coordinates are in the ORIGINAL image's pixels (as in any image viewer) and are mapped to
the model's input frame by the resize factor ``image_size / max(h, w)``, as the data layer does.
For each image ``<stem>_mask.png`` (0/255, original size) and ``<stem>_overlay.png`` (the image
with the translucent mask, its contour and the prompt) are written to ``--out``. Images that cannot
be read are listed at the end and make the exit status 1; the others are still written.
"""

from __future__ import annotations

import argparse
import glob
import logging
import math
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from .data import DataError, decode_image, preprocess_image
from .data.sources import IMAGE_EXTENSIONS
from .evaluate_cli import USER_ERRORS, UsageError, error_line, resolve_device
from .evaluation import sam_logits
from .inference import load_for_inference, model_image_size
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


def scale_to_input(coords: Any, original_size: tuple[int, int], image_size: int) -> np.ndarray:
    """Original-pixel (x, y) coordinates → the model input frame: times ``image_size / max(h, w)``."""
    height, width = original_size
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


def _prompt_tensors(prompt: Prompt, sizes: list[tuple[int, int]], image_size: int) -> dict[str, torch.Tensor]:
    batch: dict[str, torch.Tensor] = {}
    if prompt.box is not None:
        boxes = [scale_to_input(np.reshape(prompt.box, (2, 2)), size, image_size).reshape(4) for size in sizes]
        batch["input_boxes"] = torch.from_numpy(np.stack(boxes)).unsqueeze(1)  # (B, 1, 4)
    if prompt.points:
        points = [scale_to_input(prompt.points, size, image_size) for size in sizes]
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
            pixels, new_size = preprocess_image(image, image_size)
            pixel_values.append(pixels)
            reshaped.append(new_size)
        sizes = [size for _, _, size in loaded]
        batch = {"pixel_values": torch.stack(pixel_values), **_prompt_tensors(prompt, sizes, image_size)}
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="predict.py", allow_abbrev=False,
        description="Predict masks with a trained InfoSAM adapter and draw overlays. Prompt coordinates are in "
                    "original image pixels.",
    )
    parser.add_argument("--adapter", required=True,
                        help="Adapter directory or Hub repo id; 'none' uses the base model alone (needs --base_model).")
    parser.add_argument("--images", required=True, help="An image file, a folder of images, or a glob pattern.")
    parser.add_argument("--out", required=True, help="Output folder for <stem>_mask.png and <stem>_overlay.png.")
    prompts = parser.add_argument_group("prompt (one of --box / --points, both together, or --auto)")
    prompts.add_argument("--box", default=None, help="x0,y0,x1,y1 in original image pixels.")
    prompts.add_argument("--points", default=None,
                         help="'x,y[,label];x,y[,label]...' in original pixels; label 1 = foreground (default), "
                              "0 = background.")
    prompts.add_argument("--auto", action="store_true", help="No prompt (for semantic-mode adapters).")
    parser.add_argument("--base_model", default=None, help="Base SAM (default: the adapter's recorded base model).")
    parser.add_argument("--batch_size", type=int, default=4, help="Images per forward pass (default: 4).")
    parser.add_argument("--threshold", type=float, default=0.5, help="Foreground if probability > this (default 0.5).")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ... (default: auto).")
    parser.add_argument("--no_progress", action="store_true", help="Hide the progress bar.")
    return parser


def parse_prompt(options: argparse.Namespace) -> Prompt:
    """The prompt from ``--box`` / ``--points`` / ``--auto`` (exactly one kind must be chosen)."""
    if options.auto and (options.box or options.points):
        raise UsageError("--auto runs without a prompt; drop --box / --points or drop --auto")
    if not (options.auto or options.box or options.points):
        raise UsageError("give a prompt: --box x0,y0,x1,y1, --points 'x,y[,label];...', or --auto for no prompt")
    prompt = Prompt()
    if options.box:
        prompt.box = parse_box(options.box)
    if options.points:
        prompt.points, prompt.labels = parse_points(options.points)
    return prompt


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 1 when some images could not be read, 2 on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    options = build_parser().parse_args(argv)
    try:
        prompt = parse_prompt(options)
        if options.batch_size < 1:
            raise UsageError(f"--batch_size must be >= 1, got {options.batch_size}")
        paths = find_images(options.images)
        if options.adapter.lower() == "none" and not options.base_model:
            raise UsageError("--adapter none needs --base_model")
        device = resolve_device(options.device)
        model = load_for_inference(options.adapter, options.base_model, device=device)
        results = predict_masks(model, paths, prompt, options.out, batch_size=options.batch_size,
                                threshold=options.threshold, device=device, progress=not options.no_progress)
    except (UsageError, *USER_ERRORS) as err:
        print(f"error: {error_line(err)}", file=sys.stderr)
        return 2
    written = [r for r in results if r.error is None]
    failed = [r for r in results if r.error is not None]
    print(f"Wrote masks and overlays of {len(written)} image(s) to {options.out}")
    if failed:
        print(f"error: {len(failed)} image(s) could not be read:", file=sys.stderr)
        for result in failed:
            print(f"  {result.path}: {result.error}", file=sys.stderr)
        return 1
    return 0
