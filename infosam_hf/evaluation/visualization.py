"""Pictures of results: mask overlays (PIL/numpy only) and the training-curves plot (optional matplotlib).

* :func:`overlay_mask` draws a translucent mask, its contour and the prompt (box / points) on an image.
* :func:`plot_training_curves` turns a ``Trainer`` log history into ``training_curves.png``; it needs the
  optional ``plot`` extra (``pip install infosam-hf[plot]``) and skips with a logged note without it.
* :class:`TrainingCurvesCallback` writes that plot at the end of training (main process only).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from transformers import TrainerCallback

logger = logging.getLogger(__name__)

__all__ = [
    "MASK_COLOR",
    "BOX_COLOR",
    "POINT_COLORS",
    "LOSS_KEYS",
    "CURVES_FILENAME",
    "mask_contour",
    "overlay_mask",
    "plot_training_curves",
    "TrainingCurvesCallback",
]

MASK_COLOR = (30, 144, 255)
BOX_COLOR = (255, 215, 0)
POINT_COLORS = {1: (0, 220, 0), 0: (230, 20, 20)}  # foreground / background point labels
LOSS_KEYS = ("loss", "loss_seg", "loss_r", "loss_d")
INFO_PREFIX = "info/"  # relation diagnostics (infosam_hf.training.diagnostics)
COLLAPSE_COS2 = 0.95  # drawn as the collapse line in the diagnostics panel
CURVES_FILENAME = "training_curves.png"
# Keys of evaluation logs that are bookkeeping, not metrics.
_EVAL_SKIP = ("runtime", "samples_per_second", "steps_per_second", "loss")


# ----------------------------------------------------------------------------- overlays


def _line_width(height: int, width: int) -> int:
    """A stroke width that stays visible on large images (1 px up to ~400 px, then grows)."""
    return max(1, int(round(max(height, width) / 400)))


def mask_contour(mask: np.ndarray, width: int = 1) -> np.ndarray:
    """The inner boundary of a bool mask: mask pixels within ``width`` px of the background or the border."""
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return mask.copy()
    if width > 2:  # a (2w+1)² min filter costs w² per pixel: draw a 1-px outline at 1/w scale, scaled back up
        height, full_width = mask.shape
        small = Image.fromarray(mask.astype(np.uint8) * 255).reduce(width)  # box-averaged: > 0 where any pixel is
        outline = Image.fromarray(mask_contour(np.asarray(small) > 0, 1).astype(np.uint8) * 255)
        return mask & (np.asarray(outline.resize((full_width, height), Image.Resampling.NEAREST)) > 0)
    # Pad with background so that objects touching the image border get a contour there too.
    padded = np.pad(mask, width, constant_values=False)
    eroded = Image.fromarray(padded.astype(np.uint8) * 255).filter(ImageFilter.MinFilter(2 * width + 1))
    eroded = np.asarray(eroded)[width:-width, width:-width] > 0
    return mask & ~eroded


def overlay_mask(
    image: Image.Image | np.ndarray,
    mask: np.ndarray,
    *,
    box: Sequence[float] | None = None,
    points: Sequence[Sequence[float]] | None = None,
    point_labels: Sequence[int] | None = None,
    color: tuple[int, int, int] = MASK_COLOR,
    alpha: float = 0.45,
) -> Image.Image:
    """The image with ``mask`` blended in ``color``, the mask's contour and the prompt drawn on top.

    Args:
        image: RGB image (PIL or H×W×3 uint8), any size.
        mask: H×W bool (or 0/1, 0/255) mask of the same size as the image.
        box: optional (x0, y0, x1, y1) in the image's pixels, drawn as a rectangle.
        points: optional (x, y) points in the image's pixels, drawn as markers coloured by
            ``point_labels`` (1 foreground: green, 0 background: red; default all foreground).
        alpha: opacity of the mask fill.

    Returns a new RGB image of the input's size.
    """
    base = image if isinstance(image, Image.Image) else Image.fromarray(np.asarray(image, dtype=np.uint8))
    base = base.convert("RGB")
    mask = np.asarray(mask)
    mask = mask > (127 if mask.dtype == np.uint8 and mask.max() > 1 else 0)
    if mask.shape != (base.height, base.width):
        raise ValueError(f"mask shape {mask.shape} != image size {(base.height, base.width)} (H, W)")
    stroke = _line_width(base.height, base.width)
    tint = Image.new("RGB", base.size, tuple(color))  # blended in PIL's C loops: seconds, not a minute, at 6000x4000
    out = Image.composite(Image.blend(base, tint, alpha), base, Image.fromarray(mask.astype(np.uint8) * 255))
    out.paste(tint, mask=Image.fromarray(mask_contour(mask, stroke).astype(np.uint8) * 255))
    draw = ImageDraw.Draw(out)
    if box is not None:
        x0, y0, x1, y1 = (float(v) for v in box)
        draw.rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=BOX_COLOR,
                       width=max(2, stroke * 2))
    if points is not None:
        labels = list(point_labels) if point_labels is not None else [1] * len(points)
        radius = max(4, 3 * stroke)
        for (x, y), label in zip(points, labels):
            fill = POINT_COLORS.get(int(label), POINT_COLORS[1])
            draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=fill, outline=(255, 255, 255),
                         width=max(1, stroke))
    return out


# ----------------------------------------------------------------------------- training curves


def _series(log_history: Iterable[Mapping[str, Any]], key: str) -> tuple[list[float], list[float]]:
    steps, values = [], []
    for entry in log_history:
        value = entry.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) \
                and "step" in entry:
            steps.append(entry["step"])
            values.append(float(value))
    return steps, values


def _metric_keys(log_history: Sequence[Mapping[str, Any]], prefix: str) -> list[str]:
    keys: list[str] = []
    for entry in log_history:
        for key in entry:
            if key.startswith(prefix) and key not in keys and not key.removeprefix(prefix).endswith(_EVAL_SKIP):
                keys.append(key)
    return keys


def _label_panel(ax, title: str, ylabel: str, legend_size: int, columns: int = 1) -> None:
    ax.set_title(title)
    ax.set_xlabel("step")
    if ylabel:
        ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size, ncol=columns)


def plot_training_curves(log_history: Sequence[Mapping[str, Any]], path: str | Path) -> Path | None:
    """Plot a ``Trainer`` log history (``trainer.state.log_history``) to the PNG ``path``.

    Left panel: the training losses ``loss``, ``loss_seg``, ``loss_r``, ``loss_d`` (and ``eval_loss``,
    dashed) over steps. Middle panel, when logged: the relation diagnostics ``info/*`` (squared cosines
    and ``a2`` in [0, 1], entropies and mutual information in bits) with the collapse line at 0.95. Right
    panel, when evaluations were logged: the ``eval_*`` metrics as lines and ``test_*`` metrics (e.g.
    before / after training) as markers. Uses matplotlib's Agg backend.

    Returns the path written, or None when matplotlib is not installed or there is nothing to plot
    (both are logged, not raised).
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        logger.warning("matplotlib is not installed, so %s was not written (pip install infosam-hf[plot])", path)
        return None
    history = list(log_history)
    losses = [key for key in LOSS_KEYS if _series(history, key)[0]]
    has_eval_loss = bool(_series(history, "eval_loss")[0])
    metrics = [key for key in _metric_keys(history, "eval_") + _metric_keys(history, "test_")
               if _series(history, key)[0]]
    diagnostics = [key for key in _metric_keys(history, INFO_PREFIX) if _series(history, key)[0]]
    if not losses and not metrics and not has_eval_loss:
        logger.warning("no losses or metrics in the log history; %s was not written", path)
        return None

    # The object-oriented API on an Agg canvas: no pyplot, no global backend switch, no GUI needed.
    panels = int(bool(losses or has_eval_loss)) + int(bool(diagnostics)) + int(bool(metrics))
    figure = Figure(figsize=(6.0 * panels, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, panels, squeeze=False)[0]
    index = 0
    if losses or has_eval_loss:
        ax = axes[index]
        index += 1
        for key in losses:
            steps, values = _series(history, key)
            ax.plot(steps, values, label=key, linewidth=2.0 if key == "loss" else 1.2,
                    marker="." if len(steps) < 30 else None)
        if has_eval_loss:
            steps, values = _series(history, "eval_loss")
            ax.plot(steps, values, "--", marker="o", markersize=3, label="eval_loss")
        _label_panel(ax, "training losses", "loss", legend_size=8)
    if diagnostics:
        ax = axes[index]
        index += 1
        for key in diagnostics:
            steps, values = _series(history, key)
            ax.plot(steps, values, label=key.removeprefix(INFO_PREFIX), marker="." if len(steps) < 30 else None)
        ax.axhline(COLLAPSE_COS2, color="gray", linestyle=":", linewidth=1.0, label=f"collapse ({COLLAPSE_COS2})")
        _label_panel(ax, "relation diagnostics (info/)", "cos² / a2, or bits", legend_size=7)
    if metrics:
        ax = axes[index]
        last_step = max((entry.get("step", 0) for entry in history), default=0)
        names = list(dict.fromkeys(key.split("_", 1)[1] for key in metrics))
        for key in metrics:
            steps, values = _series(history, key)
            color = f"C{names.index(key.split('_', 1)[1]) % 10}"  # eval_iou and test_iou share a colour
            if key.startswith("test_"):  # before / after training: stars joined by a dotted line
                ax.plot(steps, values, linestyle=":", marker="*", markersize=10, color=color, label=key)
            else:
                ax.plot(steps, values, marker="o", markersize=3, color=color, label=key)
        if last_step > 0:
            margin = 0.03 * last_step
            ax.set_xlim(-margin, last_step + margin)
        before = any(entry.get("step", 0) == 0 and any(key in entry for key in metrics) for entry in history)
        _label_panel(ax, "evaluation metrics" + (" (step 0: before training)" if before else ""), "", legend_size=7,
                     columns=2 if len(metrics) > 6 else 1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


class TrainingCurvesCallback(TrainerCallback):
    """Writes ``output_dir/training_curves.png`` from the log history when training ends.

    Main process only. An evaluation before training (which ``Trainer.train`` drops from the history
    when it starts afresh) is kept and drawn at step 0; evaluations after training (such as the final
    test-split evaluation) redraw the plot so before, during and after appear together. Without
    matplotlib it logs a note and does nothing.
    """

    def __init__(self, filename: str = CURVES_FILENAME):
        self.filename = filename
        self._training_started = False
        self._training_done = False
        self._before: list[dict[str, Any]] = []
        self.path: Path | None = None

    def _plot(self, args, state) -> None:
        if not state.is_world_process_zero:
            return
        history = self._before + list(state.log_history)
        self.path = plot_training_curves(history, Path(args.output_dir) / self.filename)

    def on_train_begin(self, args, state, control, **kwargs):
        self._training_started = True

    def on_train_end(self, args, state, control, **kwargs):
        self._training_done = True
        self._plot(args, state)

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not self._training_started:
            if metrics:
                self._before.append({**metrics, "step": 0})
        elif self._training_done:
            self._plot(args, state)
