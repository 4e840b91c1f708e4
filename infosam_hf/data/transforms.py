"""The on-the-fly transform: decode, resize (longest side + pad for SAM, the full square for SAM 2, or a fixed
H×W), (random crop, augment), normalise, sample prompts."""

from __future__ import annotations

from typing import Any, Literal, get_args

import numpy as np
import torch
from PIL import Image

from ..choices import check_choice
from .augment import random_crop
from .collator import INDEX_KEY, OBJECT_CATEGORY_KEY, OBJECT_IMAGE_KEY
from .decoding import DataError, decode_image, decode_mask, decode_mask_official, size_mismatch
from .prompts import PROMPT_MODES, sample_box, sample_points

__all__ = ["PREPROCESSING_MODES", "SAM_PIXEL_MEAN", "SAM_PIXEL_STD", "SamSegmentationTransform", "normalize_pixels",
           "normalize_official", "preprocess_image"]

# sam: SAM's image-processor convention (RGB, zero padding after normalising, JPEG drafts, masks > threshold);
# official: the official InfoSAM loader (OpenCV BGR, black padding before normalising, masks v // 255).
Preprocessing = Literal["sam", "official"]
ChannelOrder = Literal["rgb", "bgr"]
EvalResolution = Literal["original", "input"]
PREPROCESSING_MODES: tuple[str, ...] = get_args(Preprocessing)
CHANNEL_ORDERS: tuple[str, ...] = get_args(ChannelOrder)
EVAL_RESOLUTIONS: tuple[str, ...] = get_args(EvalResolution)  # where evaluation scores: the original mask, or the resized model input

SAM_PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
SAM_PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)
_SAM_MEAN_01, _SAM_STD_01 = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
INDEX_COLUMN = "__index__"


def _resized_shape(height: int, width: int, image_size: int) -> tuple[int, int]:
    scale = image_size / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def _pixel_stats(mean, std) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std on the 0–255 scale from [0, 1]-scale recipe values (None: SAM's)."""
    mean = SAM_PIXEL_MEAN if mean is None else np.asarray(mean, dtype=np.float32) * 255
    std = SAM_PIXEL_STD if std is None else np.asarray(std, dtype=np.float32) * 255
    return mean.astype(np.float32), std.astype(np.float32)


def normalize_pixels(image: np.ndarray, canvas: tuple[int, int], mean=None, std=None) -> torch.Tensor:
    """uint8 (h, w, 3) → float32 (3, H, W): normalised, placed top-left on a zero ``canvas`` (H, W).
    ``mean`` / ``std`` are per-channel on the [0, 1] scale (default SAM's)."""
    mean, std = _pixel_stats(mean, std)
    height, width = image.shape[:2]
    pixels = np.zeros((*canvas, 3), dtype=np.float32)
    pixels[:height, :width] = (np.asarray(image, dtype=np.float32) - mean) / std
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def normalize_official(image: np.ndarray, canvas: tuple[int, int], mean=None, std=None) -> torch.Tensor:
    """The official loader's normalisation: uint8 (h, w, 3) placed top-left on a black ``canvas`` (H, W), then
    scaled to [0, 1] and normalised per channel (``mean`` / ``std`` on the [0, 1] scale, default SAM's), so the
    padding is (0 - mean) / std, not 0. The channels are normalised in the order given (BGR for the official
    loader: SAM's RGB statistics applied to B, G, R)."""
    mean = np.asarray(_SAM_MEAN_01 if mean is None else mean, dtype=np.float32)
    std = np.asarray(_SAM_STD_01 if std is None else std, dtype=np.float32)
    height, width = image.shape[:2]
    pixels = np.zeros((*canvas, 3), dtype=np.uint8)
    pixels[:height, :width] = image
    pixels = (pixels.astype(np.float32) / np.float32(255) - mean) / std
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def _resize_mask_official(mask: np.ndarray, height: int, width: int) -> np.ndarray:
    """The official mask resize: the uint8 mask resized bilinearly as a gray image, values kept (the official
    training target: 0/1 for 0/255 and 0/1 masks, raw levels for any other mask)."""
    if mask.shape != (height, width):
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8)).resize((width, height), Image.BILINEAR))
    return mask


def preprocess_image(image: Image.Image, image_size: int, mean=None, std=None, resize: tuple[int, int] | None = None,
                     preprocessing: str = "sam", channel_order: str = "rgb") -> tuple[torch.Tensor, tuple[int, int]]:
    """Resize (bilinear) and normalise an image for SAM or SAM 2.

    By default the longest side goes to ``image_size`` and the result is padded bottom/right to
    ``image_size``² (SAM); ``resize`` (H, W) resizes to exactly that size instead (no padding; SAM 2's frame
    is ``resize = (image_size, image_size)``). ``preprocessing="official"`` normalises as the official InfoSAM
    loader (BGR channels, black padding before normalising; see :class:`SamSegmentationTransform`);
    ``channel_order="bgr"`` feeds the channels reversed, as a run trained with that key.
    Returns ``pixel_values`` (3, H, W) float32 and the resized (height, width) before padding.
    """
    new_h, new_w = tuple(resize) if resize else _resized_shape(image.height, image.width, image_size)
    if (image.width, image.height) != (new_w, new_h):
        image = image.resize((new_w, new_h), Image.BILINEAR)
    canvas = (new_h, new_w) if resize else (image_size, image_size)
    if preprocessing == "official":
        return normalize_official(np.ascontiguousarray(np.asarray(image)[..., ::-1]), canvas, mean, std), (new_h, new_w)
    array = np.asarray(image)[..., ::-1] if channel_order == "bgr" else np.asarray(image)
    return normalize_pixels(np.ascontiguousarray(array), canvas, mean, std), (new_h, new_w)


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
        image_size: square input size S (the longest side is resized to S, then padded) unless
            ``resize`` fixes the size.
        keep_aspect_ratio: ``False`` resizes to the S×S square without padding (SAM 2's input frame), i.e.
            ``resize = (S, S)``; labels, prompts and ``reshaped_input_sizes`` follow the same frame.
        prompt_mode: one of ``box | point | points | mixed | none``. ``mixed`` produces both a box
            and a point; the collator picks one per batch.
        train: training randomness is keyed by ``(seed, epoch, example index)`` (see :meth:`set_epoch`);
            evaluation prompts by ``(seed, example index)``, so two evaluations give identical numbers.
        augmenter: optional callable ``(image_array, mask_array, rng) -> (image_array, mask_array)``,
            applied after resizing and cropping and before prompts are sampled (train only); see
            :func:`infosam_hf.data.augment.build_augmenter`. Must be picklable for DataLoader workers.
        jpeg_draft: decode JPEGs at a reduced DCT scale that still covers the resized size.
        resize: (H, W): resize every image to exactly this size (G-SAM) instead of longest side + pad.
        random_crop: (h, w): train on a random window of the resized image (train only; evaluation sees the
            whole resized image). Prompts come from the cropped mask.
        image_mean, image_std: per-channel normalisation on the [0, 1] scale (default SAM's).
        mask_value_map: raw mask values replaced before thresholding / class mapping.
        channel_order: ``bgr`` feeds the channels reversed (a loader that reads with OpenCV, never converted).
        eval_resolution: ``original`` (default) scores evaluation against the mask at its original size; ``input``
            against the mask resized (NEAREST) to the model input, as G-SAM scores.
        preprocessing: ``sam`` (default) or ``official``: the official InfoSAM loader's conventions: images
            read as OpenCV does (BGR, never converted; no JPEG drafts), normalised with ``image_mean`` /
            ``image_std`` (SAM's RGB statistics by default) after padding with black pixels; masks ``v // 255``
            when their maximum is 255 (else raw values), resized bilinearly as uint8, foreground = > 0 (also
            the evaluation ground truth, as the official metrics threshold it).
        objects_per_image: a row whose mask value is a list (an instance set grouped per image,
            :func:`~infosam_hf.data.instances.group_objects`) becomes one image with up to this many of its
            objects (see :meth:`objects_example`).
        category_names: the categories of an instance set's object rows: each example then carries its
            ``image_id`` and category index, for per-image and per-category scores.
    """

    def __init__(self, image_size: int, prompt_mode: str = "box", train: bool = False, seed: int = 0,
                 num_fg_points: int = 1, num_bg_points: int = 0, mask_threshold: float | None = None,
                 invert_mask: bool = False, num_labels: int = 1, ignore_index: int = 255,
                 jpeg_draft: bool = True, augmenter=None, image_column: str = "image",
                 mask_column: str = "label", resize: tuple[int, int] | None = None,
                 random_crop: tuple[int, int] | None = None, image_mean=None, image_std=None,
                 mask_value_map: dict[int, int] | None = None, keep_aspect_ratio: bool = True,
                 preprocessing: str = "sam", channel_order: str = "rgb", eval_resolution: str = "original",
                 objects_per_image: int = 1, category_names: list[str] | None = None):
        check_choice("prompt_mode", prompt_mode, PROMPT_MODES)
        check_choice("preprocessing", preprocessing, PREPROCESSING_MODES)
        self.official = preprocessing == "official"
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
        self.jpeg_draft = jpeg_draft and not self.official
        self.augmenter = augmenter if train else None
        self.image_column = image_column
        self.mask_column = mask_column
        if not keep_aspect_ratio and not resize:
            resize = (image_size, image_size)
        self.resize = tuple(int(v) for v in resize) if resize else None
        self.random_crop = tuple(int(v) for v in random_crop) if (random_crop and train) else None
        self.image_mean = image_mean
        self.image_std = image_std
        self.mask_value_map = mask_value_map
        self.bgr = channel_order == "bgr"
        self.eval_at_input = eval_resolution == "input"
        self.objects_per_image = int(objects_per_image)
        self.category_names = list(category_names) if category_names is not None else None

    @property
    def canvas_size(self) -> tuple[int, int]:
        """The (H, W) of every ``pixel_values`` this transform produces."""
        return self.random_crop or self.resize or (self.image_size, self.image_size)

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

    def _target_size(self, height: int, width: int) -> tuple[int, int]:
        return self.resize or _resized_shape(height, width, self.image_size)

    def load_pair(self, image_value: Any, mask_value: Any) -> tuple[Image.Image, np.ndarray]:
        """Decode an image and its mask and check that their sizes agree.

        The mask is decoded at full resolution; with ``jpeg_draft`` a JPEG image may come back
        smaller (a DCT-scaled draft at least as large as the model input), so compare sizes with
        ``mask.shape``, not with the image. When the EXIF-oriented image does not match the mask,
        the image as stored (without EXIF orientation) is tried before failing.
        """
        if self.official:  # uint8 levels; thresholded after resizing
            mask = decode_mask_official(mask_value)
        else:
            mask = decode_mask(mask_value, self.mask_threshold, self.invert_mask, self.num_labels, self.ignore_index,
                               self.mask_value_map)
        draft = None
        if self.jpeg_draft:
            new_h, new_w = self._target_size(*mask.shape)
            draft = (new_w, new_h)
        image, size = decode_image(image_value, draft)
        if size != mask.shape:
            raw, raw_size = decode_image(image_value, draft, apply_exif=False)
            if raw_size != mask.shape:
                raise DataError(size_mismatch(image_value, size, mask_value, mask.shape))
            image = raw
        return image, mask

    def example(self, image_value: Any, mask_value: Any, index: int | None = None) -> dict[str, Any]:
        """Transform one (image, mask) pair into model inputs, label and prompts."""
        rng = self._rng(index)
        image, original_mask = self.load_pair(image_value, mask_value)
        return self._example_from(image, original_mask, rng, index)

    def _example_from(self, image: Image.Image, original_mask: np.ndarray, rng: np.random.Generator,
                      index: int | None, prompt_rng: np.random.Generator | None = None,
                      pixels: bool = True) -> dict[str, Any]:
        """:meth:`example` after decoding; ``prompt_rng`` (default ``rng``) draws the prompts; ``pixels=False``
        leaves ``pixel_values`` out (None: another object of an image already normalised)."""
        original_size = original_mask.shape  # full resolution, even when the image was draft-decoded
        new_h, new_w = self._target_size(*original_size)
        if (image.width, image.height) != (new_w, new_h):
            image = image.resize((new_w, new_h), Image.BILINEAR)
        image_array = np.asarray(image)
        if self.official:
            image_array = image_array[..., ::-1]  # OpenCV's BGR, normalised with the RGB statistics as it is
            mask = _resize_mask_official(original_mask, new_h, new_w)
            original_mask = original_mask > 0
        else:
            mask = _resize_mask(original_mask, new_h, new_w)
            if self.bgr:  # OpenCV's channel order, never converted
                image_array = image_array[..., ::-1]
        if self.eval_at_input and not self.train:  # score at the resized input (labels resized NEAREST)
            original_mask, original_size = (mask > 0 if self.official else mask), mask.shape
        if self.random_crop:
            image_array, mask = random_crop(image_array, mask, self.random_crop, rng)
        if self.augmenter is not None:
            image_array, mask = self.augmenter(image_array, mask, rng)
        canvas = self.canvas_size
        content_h, content_w = mask.shape
        if content_h > canvas[0] or content_w > canvas[1]:  # rot90 of a non-square resize
            raise DataError(f"augmented input {content_h}x{content_w} does not fit the {canvas[0]}x{canvas[1]} input")
        normalize = normalize_official if self.official else normalize_pixels
        pixel_values = (normalize(np.ascontiguousarray(image_array), canvas, self.image_mean, self.image_std)
                        if pixels else None)
        points_mask = None
        if self.official:  # official: box around > 0, foreground points only where the value is exactly 1
            prompt_mask, points_mask = mask > 0, mask == 1
            label = np.zeros(canvas, dtype=np.float32)
        elif self.num_labels == 1:
            label = np.zeros(canvas, dtype=np.float32)
            prompt_mask = mask
        else:
            label = np.full(canvas, self.ignore_index, dtype=np.int64)
            prompt_mask = (mask != self.ignore_index) & (mask != 0)
        label[:content_h, :content_w] = mask
        out = {
            "pixel_values": pixel_values,
            "labels": torch.from_numpy(label),
            "original_sizes": torch.tensor(tuple(original_size) if not self.train else (content_h, content_w),
                                           dtype=torch.long),
            "reshaped_input_sizes": torch.tensor((content_h, content_w), dtype=torch.long),
            "prompt_mode": self.prompt_mode,
        }
        if index is not None:
            out[INDEX_KEY] = int(index)  # keys the teacher-embedding cache (the trainer pops it)
        if not self.train:  # evaluation scores at the original resolution (eval never augments)
            out["original_labels"] = torch.from_numpy(np.ascontiguousarray(original_mask))
        out.update(self._prompts(prompt_mask, rng if prompt_rng is None else prompt_rng, points_mask))
        return out

    def objects_example(self, image_value: Any, mask_values: list[Any], index: int | None = None) -> dict[str, Any]:
        """One image and up to ``objects_per_image`` of its objects (drawn without replacement, keyed like the
        other training randomness; all of them when fewer), each with its own mask and prompt.

        Every object sees the same resize, crop and augmentation (the geometric draws repeat per object); the
        prompts are drawn one after the other. Returns the single-object keys for the image (``pixel_values``,
        sizes, ``prompt_mode``) plus ``objects``: one dict per object with its ``labels`` and prompt keys.
        """
        rng = self._rng(index)
        count = len(mask_values)
        picks = (rng.choice(count, size=self.objects_per_image, replace=False).tolist()
                 if count > self.objects_per_image else list(range(count)))
        image, first = self.load_pair(image_value, mask_values[picks[0]])
        masks = [first] + [self._object_mask(mask_values[p], first.shape, image_value) for p in picks[1:]]
        new_h, new_w = self._target_size(*first.shape)
        if (image.width, image.height) != (new_w, new_h):  # resized once for all the objects
            image = image.resize((new_w, new_h), Image.BILINEAR)
        prompt_rng = np.random.default_rng(rng.integers(0, 2**63))
        geometry = rng.bit_generator.state
        objects = []
        for k, mask in enumerate(masks):
            rng.bit_generator.state = geometry  # the same crop and augmentation for every object
            objects.append(self._example_from(image, mask, rng, index, prompt_rng, pixels=k == 0))
        out = {key: objects[0][key] for key in ("pixel_values", "original_sizes", "reshaped_input_sizes",
                                                "prompt_mode", INDEX_KEY) if key in objects[0]}
        shared = set(out) | {"pixel_values"}
        out["objects"] = [{key: value for key, value in obj.items() if key not in shared} for obj in objects]
        return out

    def _object_mask(self, mask_value: Any, shape: tuple[int, int], image_value: Any) -> np.ndarray:
        """Another object's mask of an image already decoded: decoded as :meth:`load_pair` does, same size."""
        if self.official:
            mask = decode_mask_official(mask_value)
        else:
            mask = decode_mask(mask_value, self.mask_threshold, self.invert_mask, self.num_labels, self.ignore_index,
                               self.mask_value_map)
        if mask.shape != shape:
            raise DataError(size_mismatch(image_value, shape, mask_value, mask.shape))
        return mask

    def _prompts(self, mask: np.ndarray, rng: np.random.Generator,
                 points_mask: np.ndarray | None = None) -> dict[str, Any]:
        mode = self.prompt_mode
        has_fg = bool(mask.any())
        prompts: dict[str, Any] = {"has_foreground": has_fg}
        if mode == "none":
            return prompts
        if mode in ("box", "mixed"):  # official: the jitter may run into the padding (clipped at 0 only)
            box = sample_box(mask, rng, clip_upper=not self.official)
            prompts["prompt_box"] = torch.from_numpy(box if box is not None else np.zeros(4, np.float32))
        background = None if points_mask is None else ~mask  # official: background points where the value is 0
        points_mask = mask if points_mask is None else points_mask
        if mode in ("point", "mixed", "box"):
            points, labels = sample_points(points_mask, rng, 1, 0, background)
        else:  # points
            points, labels = sample_points(points_mask, rng, self.num_fg_points, self.num_bg_points, background)
        prompts["prompt_points"] = torch.from_numpy(points)
        prompts["prompt_point_labels"] = torch.from_numpy(labels)
        if mode == "mixed":  # the collator picks box or point per batch from its first example's draw
            prompts["prompt_draw"] = float(rng.random())
        return prompts

    def __call__(self, batch: dict[str, list]) -> dict[str, list]:
        images, masks = batch[self.image_column], batch[self.mask_column]
        indices = batch.get(INDEX_COLUMN, [None] * len(images))
        examples = [self.objects_example(img, msk, idx) if isinstance(msk, list) else self.example(img, msk, idx)
                    for img, msk, idx in zip(images, masks, indices)]
        if OBJECT_IMAGE_KEY in batch and self.category_names is not None:  # instance rows: scored per image, category
            for example, image_id, category in zip(examples, batch[OBJECT_IMAGE_KEY], batch[OBJECT_CATEGORY_KEY]):
                if not isinstance(category, list):
                    example[OBJECT_IMAGE_KEY] = int(image_id)
                    example[OBJECT_CATEGORY_KEY] = self.category_names.index(category)
        return {key: [ex[key] for ex in examples] for key in examples[0]} if examples else {}
