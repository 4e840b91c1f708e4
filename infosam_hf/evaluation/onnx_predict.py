"""Predict from an ``infosam export --onnx`` folder with numpy, onnxruntime and PIL only (``infosam predict --onnx``).

This module imports nothing else from the package (no torch), so it can be copied beside the graphs into a
deployment. Pre-processing follows ``onnx_config.json`` (written by the export from the training run's
settings): resize so the image fits the encoder input keeping its aspect ratio (SAM: longest side to the input
size), normalise with the recorded mean / std, pad bottom/right with zeros; logits come back to the original
size by bilinear resizing (``align_corners=False``), as the PyTorch path does.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["OnnxSamPredictor", "resize_bilinear"]


def _axis_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    source = np.maximum((np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (source - low).astype(np.float32)


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., h, w) float array resized like ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)`` (no antialiasing)."""
    low, high, frac = _axis_weights(x.shape[-2], height)
    x = x[..., low, :] * (1 - frac)[:, None] + x[..., high, :] * frac[:, None]
    low, high, frac = _axis_weights(x.shape[-1], width)
    return (x[..., low] * (1 - frac) + x[..., high] * frac).astype(np.float32)


class OnnxSamPredictor:
    """The two exported graphs with their pre-processing; :meth:`predict_logits` segments one image."""

    def __init__(self, folder: str | Path, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        folder = Path(folder)
        config_path = folder / "onnx_config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"--onnx {folder}: no onnx_config.json (export with `infosam export --onnx`)")
        self.config = json.loads(config_path.read_text())
        if self.config.get("preprocessing", "sam") != "sam":
            raise ValueError(f"{config_path}: preprocessing {self.config['preprocessing']!r} is not supported by the "
                             "ONNX predictor (only 'sam')")
        providers = providers or ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.encoder = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=providers)
        self.decoder = ort.InferenceSession(str(folder / "decoder.onnx"), options, providers=providers)
        self.input_hw = tuple(self.config["input_size"])
        self.mean = np.asarray(self.config["pixel_mean"], dtype=np.float32)
        self.std = np.asarray(self.config["pixel_std"], dtype=np.float32)

    def _scale(self, size: tuple[int, int]) -> tuple[np.ndarray, tuple[int, int]]:
        """(x, y) scale from original pixels to the input frame and the resized (h, w)."""
        height, width = size
        if self.config.get("resize"):
            new_h, new_w = self.config["resize"]
        else:
            scale = min(self.input_hw[0] / height, self.input_hw[1] / width)
            new_h, new_w = max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))
        return np.array([new_w / width, new_h / height], dtype=np.float32), (new_h, new_w)

    def preprocess(self, image: Image.Image) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
        """(1, 3, H, W) float32 pixels, the resized (h, w) before padding, and the (x, y) prompt scale."""
        scale, (new_h, new_w) = self._scale((image.height, image.width))
        image = image.convert("RGB")
        if (image.width, image.height) != (new_w, new_h):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        pixels = np.zeros((*self.input_hw, 3), dtype=np.float32)
        pixels[:new_h, :new_w] = (np.asarray(image, dtype=np.float32) - self.mean) / self.std
        return pixels.transpose(2, 0, 1)[None].copy(), (new_h, new_w), scale

    def image_embeddings(self, pixels: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"pixel_values": pixels})[0]

    def decode(self, embeddings: np.ndarray, coords: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Low-resolution logits (B, 1, 1, h, w) and IoU scores for (B, 1, N, 2) input-frame points and labels."""
        feeds = {"image_embeddings": embeddings, "point_coords": coords.astype(np.float32),
                 "point_labels": labels.astype(np.int64)}
        masks, scores = self.decoder.run(None, feeds)
        return masks, scores

    def prompt_arrays(self, scale: np.ndarray, box=None, points=None, labels=None) -> tuple[np.ndarray, np.ndarray]:
        """One prompt in original pixels → (1, 1, N, 2) coords and (1, 1, N) labels in SAM's point convention
        (points first, then the box corners labelled 2 and 3; a point-only prompt ends with a padding point)."""
        coords, kinds = [], []
        if points:
            coords += [np.asarray(p, dtype=np.float32) * scale for p in points]
            kinds += list(labels if labels is not None else [1] * len(points))
        if box is not None:
            corners = np.asarray(box, dtype=np.float32).reshape(2, 2) * scale
            coords += list(corners)
            kinds += [2, 3]
        else:
            coords.append(np.zeros(2, dtype=np.float32))
            kinds.append(-1)
        return np.stack(coords)[None, None], np.asarray(kinds, dtype=np.int64)[None, None]

    def predict_logits(self, image: Image.Image, box=None, points=None, labels=None) -> np.ndarray:
        """(H, W) float32 mask logits at the image's own size for one prompt in original-image pixels."""
        pixels, (new_h, new_w), scale = self.preprocess(image)
        coords, kinds = self.prompt_arrays(scale, box, points, labels)
        masks, _ = self.decode(self.image_embeddings(pixels), coords, kinds)
        logits = resize_bilinear(masks[0, 0, 0], *self.input_hw)[:new_h, :new_w]
        return resize_bilinear(logits, image.height, image.width)
