"""Predict from an ``infosam export --onnx`` folder with numpy, onnxruntime and PIL only (``infosam predict --onnx``).

This module imports nothing else from the package (no torch), so it can be copied beside the graphs into a
deployment. Pre-processing follows ``onnx_config.json`` (written by the export from the training run's settings,
i.e. its ``preprocessor_config.json``), exactly as the PyTorch ``predict`` does: a fixed ``resize`` (H, W) resizes
to that size (no padding; a dynamic-size model's encoder takes it as it is), otherwise the image is fitted into the
encoder input keeping its aspect ratio (SAM: longest side to the input size) and padded bottom/right; channels in
the recorded order, normalised with the recorded mean / std (``preprocessing: official``: BGR, black padding
before normalising). Logits come back to the original size by bilinear resizing (``align_corners=False``).

:class:`OnnxSamPredictor` also implements the tiling / everything-mode backend interface
(:class:`~infosam_hf.evaluation.backends.SegmentBackend`: ``encode``, ``prompt_logits``, ``point_logits``), so
``predict --onnx --tile`` and ``--everything`` run the same algorithms as the PyTorch path.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["OnnxSamPredictor", "resize_bilinear"]

_SAM_MEAN_01, _SAM_STD_01 = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # the official loader's defaults


def _axis_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    source = np.maximum((np.arange(size_out, dtype=np.float64) + 0.5) * (size_in / size_out) - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(np.int64), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    return low, high, (source - low).astype(np.float32)


def resize_bilinear(x: np.ndarray, height: int, width: int) -> np.ndarray:
    """(..., h, w) float array resized like ``torch.nn.functional.interpolate(mode="bilinear",
    align_corners=False)`` (no antialiasing)."""
    if x.shape[-2:] == (height, width):
        return x.astype(np.float32, copy=False)
    low, high, frac = _axis_weights(x.shape[-2], height)
    x = x[..., low, :] * (1 - frac)[:, None] + x[..., high, :] * frac[:, None]
    low, high, frac = _axis_weights(x.shape[-1], width)
    return (x[..., low] * (1 - frac) + x[..., high] * frac).astype(np.float32)


@dataclass
class _Frame:
    """How one image (or crop) sits in the encoder input."""

    size: tuple[int, int]  # original (h, w)
    reshaped: tuple[int, int]  # resized (h, w) before padding
    canvas: tuple[int, int]  # the model input the logits are upsampled to (before any padding to the patch)
    scale: np.ndarray  # (x, y) original pixels → input frame


@dataclass
class _Encoded:
    embeddings: np.ndarray
    frames: list[_Frame]


class OnnxSamPredictor:
    """The exported graphs with their pre-processing; :meth:`predict_logits` segments one image."""

    def __init__(self, folder: str | Path, providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort

        folder = Path(folder)
        config_path = folder / "onnx_config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"--onnx {folder}: no onnx_config.json (export with `infosam export --onnx`)")
        self.config = json.loads(config_path.read_text())
        self.preprocessing = self.config.get("preprocessing", "sam")
        if self.preprocessing not in ("sam", "official"):
            raise ValueError(f"{config_path}: preprocessing {self.preprocessing!r} is not supported by the ONNX "
                             "predictor ('sam' or 'official')")
        providers = providers or ["CPUExecutionProvider"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self.encoder = ort.InferenceSession(str(folder / "encoder.onnx"), options, providers=providers)
        self.decoder = ort.InferenceSession(str(folder / "decoder.onnx"), options, providers=providers)
        multimask = folder / "decoder_multimask.onnx"
        self.multimask_decoder = (ort.InferenceSession(str(multimask), options, providers=providers)
                                  if multimask.is_file() else None)
        self.input_hw = tuple(self.config["input_size"])
        self.image_size = int(self.config.get("image_size", max(self.input_hw)))
        self.dynamic = bool(self.config.get("dynamic_input_size", False))
        self.num_classes = int(self.config.get("num_classes", 1))
        self.resize = tuple(self.config["resize"]) if self.config.get("resize") else None
        self.channel_order = self.config.get("channel_order", "rgb")
        self.patch = int(self.config.get("patch_size", 16))
        self.pads_to_patch = bool(self.config.get("pads_to_patch", False))
        self.mean = np.asarray(self.config["pixel_mean"], dtype=np.float32)
        self.std = np.asarray(self.config["pixel_std"], dtype=np.float32)
        self.mean01 = np.asarray(self.config.get("image_mean") or _SAM_MEAN_01, dtype=np.float32)
        self.std01 = np.asarray(self.config.get("image_std") or _SAM_STD_01, dtype=np.float32)

    # --- pre-processing -------------------------------------------------------------------------------------

    def _frame(self, size: tuple[int, int], resize=None, fit: tuple[int, int] | None = None) -> _Frame:
        """``resize`` (H, W): exactly that size (no padding); else fitted into ``fit`` keeping the aspect ratio."""
        height, width = size
        if resize:
            new_h, new_w = (int(v) for v in resize)
            return _Frame(size, (new_h, new_w), (new_h, new_w),
                          np.array([new_w / width, new_h / height], dtype=np.float32))
        fit = fit or self.input_hw
        if fit[0] == fit[1]:  # SAM: the longest side to the input size, prompts times the same factor
            factor = fit[0] / max(height, width)
            scale = np.array([factor, factor], dtype=np.float32)
        else:
            factor = min(fit[0] / height, fit[1] / width)
            scale = np.array([factor, factor], dtype=np.float32)
        new_h, new_w = max(1, int(height * factor + 0.5)), max(1, int(width * factor + 0.5))
        return _Frame(size, (new_h, new_w), tuple(fit), scale)

    def _pixels(self, image: Image.Image, frame: _Frame) -> np.ndarray:
        """(3, H, W) float32 encoder input of ``image`` in ``frame`` (as ``preprocess_image`` makes it)."""
        new_h, new_w = frame.reshaped
        image = image.convert("RGB")
        if (image.width, image.height) != (new_w, new_h):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        array = np.asarray(image)
        canvas = frame.canvas
        if self.pads_to_patch:  # a dynamic-size SAM pads its input to a multiple of the patch size
            canvas = tuple(math.ceil(side / self.patch) * self.patch for side in canvas)
        if self.preprocessing == "official":  # BGR, black padding, then normalised
            padded = np.zeros((*canvas, 3), dtype=np.uint8)
            padded[:new_h, :new_w] = array[..., ::-1]
            pixels = (padded.astype(np.float32) / np.float32(255) - self.mean01) / self.std01
        else:
            if self.channel_order == "bgr":
                array = array[..., ::-1]
            pixels = np.zeros((*canvas, 3), dtype=np.float32)
            pixels[:new_h, :new_w] = (np.asarray(array, dtype=np.float32) - self.mean) / self.std
        return pixels.transpose(2, 0, 1)

    def preprocess(self, image: Image.Image) -> tuple[np.ndarray, tuple[int, int], np.ndarray]:
        """(1, 3, H, W) float32 pixels of a whole image, the resized (h, w) before padding, and the (x, y) prompt
        scale."""
        frame = self._frame((image.height, image.width), self.resize)
        return self._pixels(image, frame)[None].copy(), frame.reshaped, frame.scale

    # --- graphs -----------------------------------------------------------------------------------------------

    def image_embeddings(self, pixels: np.ndarray) -> np.ndarray:
        return self.encoder.run(None, {"pixel_values": np.ascontiguousarray(pixels, dtype=np.float32)})[0]

    def decode(self, embeddings: np.ndarray, coords: np.ndarray | None = None, labels: np.ndarray | None = None,
               multimask: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Low-resolution logits (B, 1, K, h, w) and IoU scores: K = 1 for (B, 1, N, 2) input-frame points and
        labels, 3 with ``multimask``; a multi-class head takes no prompt and gives K = C class logits."""
        if self.num_classes > 1:
            return tuple(self.decoder.run(None, {"image_embeddings": embeddings}))
        session = self.decoder
        if multimask:
            if self.multimask_decoder is None:
                raise ValueError("this ONNX export has no decoder_multimask.onnx (re-export it for --everything)")
            session = self.multimask_decoder
        feeds = {"image_embeddings": embeddings, "point_coords": coords.astype(np.float32),
                 "point_labels": labels.astype(np.int64)}
        masks, scores = session.run(None, feeds)
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

    def _to_original(self, masks: np.ndarray, frame: _Frame) -> np.ndarray:
        """(..., h, w) low-resolution logits → (..., H, W) at the frame's original size."""
        if self.pads_to_patch:  # as DynamicSamModel: crop the logits of the padding, then upsample
            unit = self.patch // 4
            masks = masks[..., :math.ceil(frame.canvas[0] / unit), :math.ceil(frame.canvas[1] / unit)]
        logits = resize_bilinear(masks, *frame.canvas)[..., :frame.reshaped[0], :frame.reshaped[1]]
        return resize_bilinear(logits, *frame.size)

    def _need_prompt(self, empty: bool) -> None:
        if self.num_classes == 1 and empty:
            raise ValueError("the ONNX decoder needs a prompt (--box / --points) for a single-mask model")

    def predict_logits(self, image: Image.Image, box=None, points=None, labels=None) -> np.ndarray:
        """Float32 logits at the image's own size for one prompt in original-image pixels: (H, W) for a prompted
        model, (C, H, W) class logits (no prompt) for a multi-class head."""
        frame = self._frame((image.height, image.width), self.resize)
        embeddings = self.image_embeddings(self._pixels(image, frame)[None])
        if self.num_classes > 1:
            return self._to_original(self.decode(embeddings)[0][0, 0], frame)
        self._need_prompt(box is None and not points)
        coords, kinds = self.prompt_arrays(frame.scale, box, points, labels)
        masks, _ = self.decode(embeddings, coords, kinds)
        return self._to_original(masks[0, 0, 0], frame)

    # --- SegmentBackend (tiling, everything mode) -----------------------------------------------------------

    def encode(self, crops, own_size: bool) -> _Encoded:
        """Encode (h, w, 3) uint8 crops as one batch, at their own size or fitted into the square input."""
        square = (self.image_size, self.image_size)
        frames = [self._frame(crop.shape[:2], crop.shape[:2] if own_size else None, square) for crop in crops]
        pixels = np.stack([self._pixels(Image.fromarray(crop), frame) for crop, frame in zip(crops, frames)])
        return _Encoded(self.image_embeddings(pixels), frames)

    def prompt_logits(self, encoded: _Encoded, index: int, prompt) -> np.ndarray:
        """(C, h, w) logits at crop ``index``'s size for a crop-local prompt (a multi-class head: none)."""
        frame = encoded.frames[index]
        embeddings = encoded.embeddings[index:index + 1]
        if self.num_classes > 1:
            return self._to_original(self.decode(embeddings)[0][0, 0], frame)
        self._need_prompt(prompt is None or prompt.empty)
        coords, kinds = self.prompt_arrays(frame.scale, prompt.box, prompt.points, prompt.labels)
        masks, _ = self.decode(embeddings, coords, kinds)
        return self._to_original(masks[0, 0], frame)

    def point_logits(self, encoded: _Encoded, index: int, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """SAM's three candidate masks per single foreground point: (N, 3, h, w) logits, (N, 3) IoU scores."""
        frame = encoded.frames[index]
        count = len(points)
        coords = np.zeros((count, 1, 2, 2), dtype=np.float32)
        coords[:, 0, 0] = np.asarray(points, dtype=np.float32) * frame.scale
        labels = np.tile(np.array([1, -1], dtype=np.int64), (count, 1, 1))  # the point, then the padding point
        embeddings = np.repeat(encoded.embeddings[index:index + 1], count, axis=0)
        masks, scores = self.decode(embeddings, coords, labels, multimask=True)
        return self._to_original(masks[:, 0], frame), scores[:, 0]
