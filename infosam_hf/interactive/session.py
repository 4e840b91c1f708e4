"""One image, many clicks: the state behind ``infosam demo``, usable from Python too.

The image encoder runs once per image (its embeddings are cached, for the fine-tuned model and for the base
model, i.e. the same weights with the adapter disabled); each prompt runs only the prompt encoder and decoder.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image

from ..data import preprocess_image
from ..evaluation.loop import upsample_logits
from ..evaluation.metrics import logits_to_original
from ..evaluation.predict import scale_to_input
from ..models.inference import model_image_size, run_input_settings

__all__ = ["Clicks", "InteractiveSession"]


@dataclass
class Clicks:
    """The prompt so far, in original-image pixels: points with labels (1 foreground, 0 background), an optional box."""

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: tuple[float, float, float, float] | None = None

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None


class InteractiveSession:
    """Masks for the clicks on one image, from the fine-tuned model and (``base=True``) the base model.

    ``model`` is a PEFT-wrapped SAM (``load_for_inference``); the base model is the same model under
    ``disable_adapter()``, so no second copy is held. ``adapter`` (a local run folder) gives the run's
    preprocessing settings.
    """

    def __init__(self, model: torch.nn.Module, adapter: str | None = None, threshold: float = 0.5):
        self.model = model.eval()
        self.image_size = model_image_size(model)
        self.settings = run_input_settings(adapter)
        self.logit_threshold = math.log(threshold / (1.0 - threshold))
        self.device = next(model.parameters()).device
        self._key: str | None = None
        self._embeddings: dict[str, torch.Tensor] = {}
        self.encoder_runs = 0

    def _base_context(self):
        return self.model.disable_adapter()

    @torch.no_grad()
    def set_image(self, image: Image.Image | np.ndarray) -> None:
        """Encode ``image`` (skipped when it is the image already set)."""
        image = Image.fromarray(np.asarray(image)) if not isinstance(image, Image.Image) else image
        image = image.convert("RGB")
        key = hashlib.sha1(image.tobytes() + repr(image.size).encode()).hexdigest()
        if key == self._key:
            return
        settings = self.settings
        pixels, self.reshaped = preprocess_image(
            image, self.image_size, mean=settings.get("image_mean"), std=settings.get("image_std"),
            resize=settings.get("resize"), preprocessing=settings.get("preprocessing", "sam"),
            channel_order=settings.get("channel_order", "rgb"))
        pixels = pixels.unsqueeze(0).to(self.device)
        self.original_size = (image.height, image.width)
        self._embeddings = {"adapter": self.model.get_image_embeddings(pixels)}
        if hasattr(self.model, "disable_adapter"):
            with self._base_context():
                self._embeddings["base"] = self.model.get_image_embeddings(pixels)
        self.encoder_runs += 1
        self._key = key

    def _prompt_tensors(self, clicks: Clicks) -> dict[str, torch.Tensor]:
        resize = self.settings.get("resize")
        prompts: dict[str, torch.Tensor] = {}
        if clicks.box is not None:
            box = scale_to_input(np.reshape(clicks.box, (2, 2)), self.original_size, self.image_size, resize)
            prompts["input_boxes"] = torch.from_numpy(box.reshape(1, 1, 4)).to(self.device)
        if clicks.points:
            points = scale_to_input(clicks.points, self.original_size, self.image_size, resize)
            prompts["input_points"] = torch.from_numpy(points.reshape(1, 1, -1, 2)).to(self.device)
            prompts["input_labels"] = torch.tensor(clicks.labels, dtype=torch.long, device=self.device).view(1, 1, -1)
        return prompts

    @torch.no_grad()
    def predict(self, clicks: Clicks, which: str = "adapter") -> np.ndarray:
        """The (H, W) bool mask of ``which`` model (``adapter`` or ``base``) for ``clicks`` on the current image."""
        if self._key is None:
            raise ValueError("no image: call set_image first")
        if clicks.empty:
            return np.zeros(self.original_size, dtype=bool)
        embeddings = self._embeddings[which]
        kwargs = {"image_embeddings": embeddings, "multimask_output": False, **self._prompt_tensors(clicks)}
        if which == "base":
            with self._base_context():
                outputs = self.model(**kwargs)
        else:
            outputs = self.model(**kwargs)
        size = (self.image_size, self.image_size)
        logits = upsample_logits(outputs.pred_masks, size)[0, 0]
        full = logits_to_original(logits, size, self.reshaped, self.original_size)
        return (full > self.logit_threshold).cpu().numpy()

    def predict_both(self, clicks: Clicks) -> tuple[np.ndarray, np.ndarray | None]:
        """Masks of the fine-tuned model and of the base model (None when the model has no adapter)."""
        base = self.predict(clicks, "base") if "base" in self._embeddings else None
        return self.predict(clicks, "adapter"), base

    @staticmethod
    def points_from(seq: Sequence[tuple[float, float, int]]) -> Clicks:
        """Clicks from ``(x, y, label)`` triples."""
        return Clicks([(x, y) for x, y, _ in seq], [int(label) for *_, label in seq])
