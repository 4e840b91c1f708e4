"""The adapter's image processor: the one source of truth for how its inputs are prepared.

A training run saves an :class:`InfoSamImageProcessor` as ``preprocessor_config.json`` beside its adapter. It
is ``SamImageProcessorPil`` plus the three settings SAM's processor cannot express:

- ``preprocessing``: ``sam`` (RGB, zero padding after normalising) or ``official`` (the official InfoSAM
  loader: BGR channels, black padding before normalising); ``channel_order`` records the resulting order;
- ``resize``: a fixed ``[H, W]`` input frame (G-SAM) instead of longest side + padding;
- ``dynamic_input_size``: the model must take any H×W (a base loaded by Hub id cannot record it itself).

``import infosam_hf`` registers the class with ``AutoImageProcessor``, so ``SamProcessor.from_pretrained(adapter)``
and ``AutoProcessor`` reproduce the project's pixels exactly; :func:`load_image_processor` (used by
``load_for_inference``, ``infosam predict`` and ``infosam evaluate``) reads the same file, locally or from the
Hub cache. Folders saved before this file existed are read from their ``run_args.json`` (deprecated).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from transformers import AutoImageProcessor, PretrainedConfig
from transformers.image_utils import IMAGENET_DEFAULT_MEAN as IMAGENET_MEAN
from transformers.image_utils import IMAGENET_DEFAULT_STD as IMAGENET_STD
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorKwargs, SamImageProcessorPil
from transformers.utils import IMAGE_PROCESSOR_NAME

from ..data.transforms import PREPROCESSING_MODES, preprocess_image
from ..file_checks import DamagedFileError, read_json_file

logger = logging.getLogger(__name__)

__all__ = ["InfoSamImageProcessor", "InputSettings", "build_sam_image_processor", "load_image_processor",
           "read_class_names", "read_input_settings"]

RUN_ARGS_NAME = "run_args.json"
INPUT_KEYS = ("preprocessing", "channel_order", "resize", "image_mean", "image_std", "dynamic_input_size")
InputSettings = dict  # {"preprocessing", "resize", "image_mean", "image_std", "dynamic_input_size"}: known keys only


class InfoSamImageProcessorKwargs(SamImageProcessorKwargs, total=False):
    """``preprocessing`` (``sam`` | ``official``), ``channel_order`` (``RGB`` | ``BGR``, follows
    ``preprocessing``), ``resize`` (fixed ``[H, W]`` or None), ``dynamic_input_size`` (bool)."""

    preprocessing: str
    channel_order: str
    resize: list[int] | None
    dynamic_input_size: bool
    class_names: list[str] | None


class InfoSamImageProcessor(SamImageProcessorPil):
    """SAM's image processor with the project's exact pre-processing (see the module docstring).

    Pixels are produced by :func:`infosam_hf.data.transforms.preprocess_image`, the function training and
    evaluation use, so a processor loaded from an adapter feeds the model what it was trained on. Prompt
    coordinates given to ``SamProcessor`` are mapped into the same frame (a fixed ``resize`` scales x and y
    separately).
    """

    valid_kwargs = InfoSamImageProcessorKwargs
    preprocessing = "sam"
    channel_order = "RGB"
    resize = None
    dynamic_input_size = False
    class_names = None  # a multi-class adapter's names of classes 0, 1, ... (for outputs, not inputs)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ValueError(f"{IMAGE_PROCESSOR_NAME}: preprocessing={self.preprocessing!r} is not one of "
                             f"{PREPROCESSING_MODES}")
        # official pre-processing reads BGR by itself; `channel_order: bgr` (G-SAM's OpenCV loaders) does too
        self.channel_order = "BGR" if self.preprocessing == "official" else str(self.channel_order).upper()
        if self.channel_order not in ("RGB", "BGR"):
            raise ValueError(f"{IMAGE_PROCESSOR_NAME}: channel_order={self.channel_order!r} is not RGB or BGR")
        if self.resize is not None:
            if len(self.resize) != 2:
                raise ValueError(f"{IMAGE_PROCESSOR_NAME}: resize={self.resize!r} must be [height, width]")
            self.resize = [int(v) for v in self.resize]
            self.pad_size = {"height": self.resize[0], "width": self.resize[1]}  # post_process_masks' frame

    @property
    def image_size(self) -> int:
        """The square input side (the longest side is resized to it unless ``resize`` is set)."""
        return int(self.size["longest_edge"])

    def _get_preprocess_shape(self, old_shape: tuple[int, int], longest_edge: int):
        if self.resize is not None:  # SamProcessor scales prompt coordinates by this shape
            return tuple(self.resize)
        return super()._get_preprocess_shape(old_shape, longest_edge)

    def _preprocess(self, images: list[np.ndarray], image_mean=None, image_std=None, **kwargs):
        pixel_values, reshaped = [], []
        for array in images:  # channels-first, RGB
            array = np.moveaxis(np.asarray(array), 0, -1)
            if array.dtype != np.uint8:
                array = np.clip(np.rint(array), 0, 255).astype(np.uint8)
            pixels, size = preprocess_image(Image.fromarray(array), self.image_size, mean=_listed(image_mean, IMAGENET_MEAN),
                                            std=_listed(image_std, IMAGENET_STD), resize=self.resize,
                                            preprocessing=self.preprocessing, channel_order=self._data_channel_order())
            pixel_values.append(pixels.numpy())
            reshaped.append(size)
        return pixel_values, reshaped

    def _data_channel_order(self) -> str:
        """The data layer's ``channel_order`` key (official pre-processing swaps channels itself)."""
        return "bgr" if self.channel_order == "BGR" and self.preprocessing != "official" else "rgb"

    def to_dict(self) -> dict[str, Any]:
        return {**super().to_dict(), "processor_class": "SamProcessor"}  # AutoProcessor -> SamProcessor

    def input_settings(self) -> InputSettings:
        """The settings ``predict`` / ``evaluate`` / ``load_for_inference`` follow."""
        return {"preprocessing": self.preprocessing, "channel_order": self._data_channel_order(), "resize": self.resize, "image_mean": _listed(self.image_mean, IMAGENET_MEAN),
                "image_std": _listed(self.image_std, IMAGENET_STD), "dynamic_input_size": bool(self.dynamic_input_size)}


def _listed(value, default: tuple[float, ...] = ()) -> list[float] | None:
    """Per-channel statistics as a list; None for SAM's own (``default``), which the data layer keeps on the
    0-255 scale (so the pixels are bit-identical to training's)."""
    if value is None:
        return None
    values = [float(v) for v in (value if isinstance(value, (list, tuple)) else [value] * 3)]
    return None if tuple(values) == tuple(default) else values


def build_sam_image_processor(image_size: int, image_mean=None, image_std=None, preprocessing: str = "sam",
                              resize=None, dynamic_input_size: bool = False,
                              class_names: list[str] | None = None, channel_order: str = "rgb") -> InfoSamImageProcessor:
    """The processor a SAM run saves beside its adapter (``image_mean`` / ``image_std`` on the [0, 1] scale)."""
    stats = {key: list(value) for key, value in (("image_mean", image_mean), ("image_std", image_std)) if value}
    return InfoSamImageProcessor(size={"longest_edge": image_size},
                                 pad_size={"height": image_size, "width": image_size},
                                 preprocessing=preprocessing, resize=list(resize) if resize else None,
                                 dynamic_input_size=bool(dynamic_input_size), class_names=class_names,
                                 channel_order=channel_order.upper(), **stats)


def _adapter_file(adapter: str, name: str, revision: str | None = None) -> Path | None:
    """``adapter/name`` from a local folder or the Hub (its cache when offline), or None when absent."""
    local = Path(adapter)
    if local.is_dir():
        return local / name if (local / name).is_file() else None
    from ..remote import hub_unreachable_reason

    if hub_unreachable_reason() is not None:  # offline: the cache alone, at once (no download retries)
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(adapter, name, revision=revision)
        return Path(found) if isinstance(found, str) else None
    from transformers.utils import cached_file

    try:
        found = cached_file(adapter, name, revision=revision, _raise_exceptions_for_missing_entries=False,
                            _raise_exceptions_for_connection_errors=False)
    except (OSError, ValueError):
        return None
    return Path(found) if found else None


def _read_json(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    what = "the run record" if path.name == RUN_ARGS_NAME else "the image processor config"
    value = read_json_file(path, what)  # a damaged file is one line naming it, never silently ignored
    if not isinstance(value, dict):
        raise DamagedFileError(f"{path}: {what} is not a JSON object")
    return value


def load_image_processor(adapter: str, revision: str | None = None) -> InfoSamImageProcessor | None:
    """``adapter``'s saved processor as an :class:`InfoSamImageProcessor` (None when it saved none, or a SAM 2
    processor)."""
    config = _read_json(_adapter_file(adapter, IMAGE_PROCESSOR_NAME, revision))
    if config.get("image_processor_type") != InfoSamImageProcessor.__name__:
        return None
    return InfoSamImageProcessor.from_dict(
        {k: v for k, v in config.items() if k not in ("image_processor_type", "processor_class")})


def read_class_names(adapter: str | None, revision: str | None = None) -> list[str] | None:
    """A multi-class adapter's class names, as its saved image processor records them (None if it does not)."""
    processor = load_image_processor(adapter, revision) if adapter and str(adapter).lower() != "none" else None
    return list(processor.class_names) if processor is not None and processor.class_names else None


def read_input_settings(adapter: str | None, revision: str | None = None) -> InputSettings:
    """How ``adapter``'s inputs are prepared, from its ``preprocessor_config.json`` ({} for the zero-shot base or
    SAM's defaults). A folder written before the processor carried these settings falls back to its
    ``run_args.json``, with a deprecation warning."""
    if not adapter or str(adapter).lower() == "none":
        return {}
    processor = load_image_processor(adapter, revision)
    if processor is not None:
        return processor.input_settings()
    run_args = _read_json(_adapter_file(adapter, RUN_ARGS_NAME, revision))
    if not run_args:
        return {}
    logger.warning("%s: no input settings in its %s; reading them from %s (deprecated: re-save the adapter with "
                   "this version)", adapter, IMAGE_PROCESSOR_NAME, RUN_ARGS_NAME)
    data = run_args.get("data") or {}
    settings = {key: data.get(key) for key in INPUT_KEYS if key != "dynamic_input_size"}
    settings["preprocessing"] = settings["preprocessing"] or "sam"
    settings["dynamic_input_size"] = bool((run_args.get("model") or {}).get("dynamic_input_size", False))
    return settings


class _InfoSamProcessorKey(PretrainedConfig):
    """The key ``AutoImageProcessor`` files :class:`InfoSamImageProcessor` under (it maps configs to processors;
    the class itself is found by its ``image_processor_type`` name). No model uses it."""

    model_type = "infosam_image_processor"


def register_auto_classes() -> None:
    """Make ``AutoImageProcessor`` / ``SamProcessor.from_pretrained`` resolve ``InfoSamImageProcessor``."""
    AutoImageProcessor.register(_InfoSamProcessorKey, image_processor_classes={
        "pil": InfoSamImageProcessor, "torchvision": InfoSamImageProcessor}, exist_ok=True)


register_auto_classes()
