"""The on-the-fly transform: decode, (augment), resize the longest side and pad (SAM) or resize to the square
(SAM 2), normalise, sample prompts."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from PIL import Image

from .decoding import DataError, decode_image, decode_mask, source_name
from .prompts import PROMPT_MODES, sample_box, sample_points

__all__ = ["SAM_PIXEL_MEAN", "SAM_PIXEL_STD", "SamSegmentationTransform", "preprocess_image"]

SAM_PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
SAM_PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
INDEX_COLUMN = "__index__"


def _resized_shape(height: int, width: int, image_size: int, keep_aspect_ratio: bool = True) -> tuple[int, int]:
    if not keep_aspect_ratio:  # SAM 2: the whole square, no padding
        return image_size, image_size
    scale = image_size / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def preprocess_image(image: Image.Image, image_size: int, resized_shape: tuple[int, int] | None = None,
                     keep_aspect_ratio: bool = True) -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize the longest side to ``image_size`` (bilinear), normalise, pad bottom/right with zeros (SAM);
    with ``keep_aspect_ratio=False`` resize to the full ``image_size`` square instead (SAM 2).

    ``resized_shape`` (h, w) overrides the size computed from the image (used when the image was
    draft-decoded and the size must follow the full-resolution original instead).
    Returns ``pixel_values`` (3, S, S) float32 and the resized (height, width) before padding.
    """
    new_h, new_w = resized_shape or _resized_shape(image.height, image.width, image_size, keep_aspect_ratio)
    if (image.width, image.height) != (new_w, new_h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    resized = np.asarray(image, dtype=np.float32)
    pixels = np.zeros((image_size, image_size, 3), dtype=np.float32)
    pixels[:new_h, :new_w] = (resized - SAM_PIXEL_MEAN) / SAM_PIXEL_STD
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous(), (new_h, new_w)


def _resize_mask(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """Nearest-neighbour resize of a bool or class-id mask to (height, width)."""
    if mask.shape == (height, width):
        return mask
    if mask.dtype == bool:
        return np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((width, height), Image.NEAREST)) > 0
    resized = Image.fromarray(mask.astype(np.int32)).resize((width, height), Image.NEAREST)
    return np.asarray(resized).astype(mask.dtype)


class SamSegmentationTransform:
    """Batch transform for ``Dataset.with_transform`` producing SAM inputs, labels and prompts.

    Args:
        image_size: square input size S (the longest side is resized to S, then padded).
        keep_aspect_ratio: ``False`` resizes to the S×S square without padding (SAM 2's input frame);
            labels, prompts and ``reshaped_input_sizes`` follow the same frame.
        prompt_mode: one of ``box | point | points | mixed | none``. ``mixed`` produces both a box
            and a point; the collator picks one per batch.
        train: training randomness is keyed by ``(seed, epoch, example index)`` (see :meth:`set_epoch`);
            evaluation prompts by ``(seed, example index)``, so two evaluations give identical numbers.
        augmenter: optional callable ``(image_array, mask_array, rng) -> (image_array, mask_array)``,
            applied before resizing and before prompts are sampled (train only); see
            :func:`infosam_hf.data.augment.build_augmenter`. Must be picklable for DataLoader workers.
        jpeg_draft: decode JPEGs at a reduced DCT scale that still covers ``image_size`` (kept on
            with flips / rotations / colour jitter; off when the augmenter crops).
    """

    def __init__(self, image_size: int, prompt_mode: str = "box", train: bool = False, seed: int = 0,
                 num_fg_points: int = 1, num_bg_points: int = 0, mask_threshold: float | None = None,
                 invert_mask: bool = False, num_labels: int = 1, ignore_index: int = 255,
                 jpeg_draft: bool = True, augmenter=None, image_column: str = "image",
                 mask_column: str = "label", keep_aspect_ratio: bool = True):
        if prompt_mode not in PROMPT_MODES:
            raise ValueError(f"prompt mode {prompt_mode!r} is not one of {PROMPT_MODES}")
        self.image_size = image_size
        self.prompt_mode = prompt_mode
        self.epoch = 0
        self.keyed = True  # training randomness keyed by (seed, epoch, index) instead of torch's RNG
        self.train = train
        self.seed = seed
        self.num_fg_points = num_fg_points
        self.num_bg_points = num_bg_points
        self.mask_threshold = mask_threshold
        self.invert_mask = invert_mask
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.jpeg_draft = jpeg_draft
        self.augmenter = augmenter if train else None
        self.image_column = image_column
        self.mask_column = mask_column
        self.keep_aspect_ratio = keep_aspect_ratio

    def set_epoch(self, epoch: int) -> None:
        """Select the training epoch: training randomness is keyed by (seed, epoch, example index)."""
        self.epoch = int(epoch)

    def _rng(self, index: int | None) -> np.random.Generator:
        if index is None or (self.train and not self.keyed):  # fall back to torch's (seeded) RNG
            return np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
        if self.train:
            # Keyed, not drawn from a global stream: identical with any num_workers, under DDP, and
            # after resuming from a checkpoint (where prefetching would shift a global stream).
            return np.random.default_rng([self.seed, 1 + self.epoch, int(index)])
        return np.random.default_rng([self.seed, int(index)])

    def _draft_allowed(self) -> bool:
        if not self.jpeg_draft:
            return False
        return self.augmenter is None or getattr(self.augmenter, "keeps_resolution_free", False)

    def load_pair(self, image_value: Any, mask_value: Any) -> tuple[Image.Image, np.ndarray]:
        """Decode an image and its mask and check that their sizes agree.

        The mask is decoded at full resolution; with ``jpeg_draft`` a JPEG image may come back
        smaller (a DCT-scaled draft at least as large as the model input), so compare sizes with
        ``mask.shape``, not with the image. When the EXIF-oriented image does not match the mask,
        the image as stored (without EXIF orientation) is tried before failing.
        """
        mask = decode_mask(mask_value, self.mask_threshold, self.invert_mask, self.num_labels, self.ignore_index)
        draft = None
        if self._draft_allowed():
            new_h, new_w = _resized_shape(*mask.shape, self.image_size)
            # SAM 2's square needs both sides at least S, SAM's resize only the longest
            draft = (new_w, new_h) if self.keep_aspect_ratio else (self.image_size, self.image_size)
        image, size = decode_image(image_value, draft)
        if size != mask.shape:
            raw, raw_size = decode_image(image_value, draft, apply_exif=False)
            if raw_size != mask.shape:
                raise DataError(f"size mismatch: image {source_name(image_value)} is {size[1]}x{size[0]} but mask "
                                f"{source_name(mask_value)} is {mask.shape[1]}x{mask.shape[0]} (WxH)")
            image = raw
        return image, mask

    def example(self, image_value: Any, mask_value: Any, index: int | None = None) -> dict[str, Any]:
        """Transform one (image, mask) pair into model inputs, label and prompts."""
        rng = self._rng(index)
        image, mask = self.load_pair(image_value, mask_value)
        original_size = mask.shape  # full resolution, even when the image was draft-decoded
        if self.augmenter is not None:
            decoded = (image.height, image.width)
            mask = _resize_mask(mask, *decoded)  # a no-op unless the image is a draft
            image_array, mask = self.augmenter(np.asarray(image), mask, rng)
            image = Image.fromarray(image_array)
            if mask.shape != decoded:  # rotated by 90°, or cropped (no drafting with crops: full resolution)
                original_size = original_size[::-1] if mask.shape == decoded[::-1] else mask.shape
        new_h, new_w = _resized_shape(*original_size, self.image_size, self.keep_aspect_ratio)
        pixel_values, _ = preprocess_image(image, self.image_size, (new_h, new_w))
        resized_mask = _resize_mask(mask, new_h, new_w)
        if self.num_labels == 1:
            label = np.zeros((self.image_size, self.image_size), dtype=np.float32)
            label[:new_h, :new_w] = resized_mask
            prompt_mask = resized_mask
        else:
            label = np.full((self.image_size, self.image_size), self.ignore_index, dtype=np.int64)
            label[:new_h, :new_w] = resized_mask
            prompt_mask = (resized_mask != self.ignore_index) & (resized_mask != 0)
        out = {
            "pixel_values": pixel_values,
            "labels": torch.from_numpy(label),
            "original_sizes": torch.tensor(tuple(original_size), dtype=torch.long),
            "reshaped_input_sizes": torch.tensor((new_h, new_w), dtype=torch.long),
            "prompt_mode": self.prompt_mode,
        }
        if not self.train:  # evaluation scores at the original resolution (eval never augments)
            out["original_labels"] = torch.from_numpy(np.ascontiguousarray(mask))
        out.update(self._prompts(prompt_mask, rng))
        return out

    def _prompts(self, mask: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
        mode = self.prompt_mode
        has_fg = bool(mask.any())
        prompts: dict[str, Any] = {"has_foreground": has_fg}
        if mode == "none":
            return prompts
        if mode in ("box", "mixed"):
            box = sample_box(mask, rng)
            prompts["prompt_box"] = torch.from_numpy(box if box is not None else np.zeros(4, np.float32))
        if mode in ("point", "mixed", "box"):
            points, labels = sample_points(mask, rng, 1, 0)
        else:  # points
            points, labels = sample_points(mask, rng, self.num_fg_points, self.num_bg_points)
        prompts["prompt_points"] = torch.from_numpy(points)
        prompts["prompt_point_labels"] = torch.from_numpy(labels)
        if mode == "mixed":  # the collator picks box or point per batch from its first example's draw
            prompts["prompt_draw"] = float(rng.random())
        return prompts

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images, masks = batch[self.image_column], batch[self.mask_column]
        indices = batch.get(INDEX_COLUMN, [None] * len(images))
        examples = [self.example(img, msk, idx) for img, msk, idx in zip(images, masks, indices)]
        return {key: [ex[key] for ex in examples] for key in examples[0]} if examples else {}
