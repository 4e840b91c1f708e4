"""The splits of a run: opened by name, validated, a validation split carved when needed, and the SAM transform
attached (train: augmentation and sampled prompts; eval/test: fixed per-example prompts)."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass

import datasets.utils as datasets_utils
from datasets import Dataset

from .arguments import DataArguments
from .augment import SegmentationAugmenter, build_augmenter
from .instances import CATEGORY_COLUMN, IMAGE_ID_COLUMN, group_objects, is_instance_set
from .mask_report import mask_report
from .sources import SourceSplits, load_splits
from .transforms import INDEX_COLUMN, SamSegmentationTransform
from .validation import validate_splits

__all__ = ["SegmentationSplits", "augmenter_from_args", "build_datasets", "open_source", "sam_transform_of", "select_splits",
           "take_first", "validate_data", "with_sam_transform"]

logger = logging.getLogger(__name__)


@dataclass
class SegmentationSplits:
    """The train / eval / test datasets of a run (eval and test may be None) and, once :func:`build_datasets` has
    attached them, the train split's transform (what the trainer's epoch hook and teacher cache need)."""

    train: Dataset | None
    eval: Dataset | None
    test: Dataset | None
    train_transform: SamSegmentationTransform | None = None


def sam_transform_of(dataset: Dataset | None) -> SamSegmentationTransform | None:
    """The transform :func:`with_sam_transform` attached to ``dataset`` (None when it has another or none)."""
    transform = getattr(dataset, "format", {}).get("format_kwargs", {}).get("transform") if dataset is not None else None
    return transform if isinstance(transform, SamSegmentationTransform) else None


def take_first(dataset: Dataset | None, limit: int | None) -> Dataset | None:
    """The first ``limit`` rows of ``dataset`` (all of them when ``limit`` is None)."""
    if dataset is None or limit is None:
        return dataset
    return dataset.select(range(min(limit, len(dataset))))


def _carve_validation(train: Dataset, percentage: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """Hold out ``percentage`` % of train (at least one row, seeded) as the validation split."""
    if percentage <= 0 or len(train) < 2:
        return train, None
    if is_instance_set(train):  # whole images: no image's objects on both sides
        return _carve_images(train, percentage, seed)
    count = min(len(train) - 1, max(1, int(round(len(train) * percentage / 100))))
    parts = train.train_test_split(test_size=count, seed=seed, shuffle=True)
    return parts["train"], parts["test"]


def _carve_images(train: Dataset, percentage: float, seed: int) -> tuple[Dataset, Dataset | None]:
    """:func:`_carve_validation` of an instance set: ``percentage`` % of its images (seeded), with all their objects."""
    import numpy as np

    image_ids = np.asarray(train[IMAGE_ID_COLUMN])
    unique = np.unique(image_ids)
    if len(unique) < 2:
        return train, None
    count = min(len(unique) - 1, max(1, int(round(len(unique) * percentage / 100))))
    held = np.isin(image_ids, np.random.default_rng(seed).choice(unique, size=count, replace=False))
    return train.select(np.flatnonzero(~held)), train.select(np.flatnonzero(held))


def open_source(data_args: DataArguments) -> SourceSplits:
    """The splits of ``data_args.dataset_name_or_path`` by name (loaded on access)."""
    return load_splits(
        data_args.dataset_name_or_path,
        {"num_train": data_args.synthetic_num_train, "num_validation": data_args.synthetic_num_eval,
         "num_test": data_args.synthetic_num_test, "image_size": data_args.synthetic_image_size,
         "seed": data_args.synthetic_seed, "num_labels": data_args.num_labels},
        image_column=data_args.image_column, mask_column=data_args.mask_column,
        config_name=data_args.dataset_config_name,
    )


def validate_data(data_args: DataArguments, splits: dict[str, Dataset | None], progress: bool = True) -> None:
    """Check the splits' image/mask pairs as ``data_args.validate_data`` says (headers, full or none);
    every problem is reported at once in a :class:`DataValidationError`."""
    validate_splits(splits, data_args.validate_data, num_labels=data_args.num_labels,
                    mask_threshold=data_args.mask_threshold, invert_mask=data_args.invert_mask,
                    ignore_index=data_args.ignore_index, progress=progress, value_map=data_args.mask_value_map)
    if data_args.validate_data != "none" and data_args.preprocessing != "official":
        mask_report(splits, data_args)  # objects the decoding would drop stop here; borderline sets warn once


def select_splits(data_args: DataArguments, seed: int = 42, need_eval: bool = True) -> SegmentationSplits:
    """Resolve ``train_split`` / ``eval_split`` / ``test_split``; when ``need_eval`` and no validation
    split exists, carve a seeded one from train (test data is never used to pick checkpoints).

    Every split that is used is loaded and checked (``validate_data``) here, so missing files, unknown
    splits and bad image/mask pairs fail before training.
    ``train_split`` / ``test_split`` set to None (or an empty string) skip that split.
    """
    splits = open_source(data_args)
    train = splits.get_split(data_args.train_split) if data_args.train_split else None
    eval_name = data_args.eval_split
    if eval_name is None:
        eval_name = next((n for n in ("validation", "val", "valid") if n in splits), None)
    if eval_name:
        eval_ds = splits.get_split(eval_name)
    elif train is not None and need_eval:
        train, eval_ds = _carve_validation(train, data_args.validation_split_percentage, seed)
    else:
        eval_ds = None
    test = splits.get_split(data_args.test_split) if data_args.test_split else None
    selected = SegmentationSplits(
        train=take_first(train, data_args.max_train_samples),
        eval=take_first(eval_ds, data_args.max_eval_samples),
        test=take_first(test, data_args.max_eval_samples),
    )
    validate_data(data_args, {data_args.train_split or "train": selected.train,
                              eval_name or "validation": selected.eval, data_args.test_split or "test": selected.test})
    return selected


def augmenter_from_args(data_args: DataArguments) -> SegmentationAugmenter | None:
    """The train-time augmenter named by ``data_args.augment`` (None when the list is empty)."""
    return build_augmenter(
        data_args.augment, rotate_degrees=data_args.rotate_degrees, rotate_prob=data_args.rotate_prob,
        rotate_interpolation=data_args.rotate_interpolation, color_jitter=data_args.color_jitter,
        num_labels=data_args.num_labels, ignore_index=data_args.ignore_index, fill_label=data_args.rotate_fill_label,
    )


@contextlib.contextmanager
def _no_datasets_bars():
    was_disabled = datasets_utils.are_progress_bars_disabled()
    datasets_utils.disable_progress_bars()
    try:
        yield
    finally:
        if not was_disabled:
            datasets_utils.enable_progress_bars()


def with_sam_transform(dataset: Dataset | None, data_args: DataArguments, image_size: int, train: bool,
                       seed: int = 42, keep_aspect_ratio: bool = True) -> Dataset | None:
    """Attach the on-the-fly SAM transform (train or eval prompts) to a split (``keep_aspect_ratio=False``:
    SAM 2's square resize).

    Train splits augment as ``data_args.augment`` names; eval splits never augment. Every split gets an
    ``__index__`` column that keys its per-example randomness, so evaluation prompts repeat exactly. An instance
    set's train split is grouped per image when ``objects_per_image`` > 1; its evaluation splits stay one row per
    object (each object its own seeded prompt), scored per object, per image and per category.
    """
    if dataset is None:
        return None
    grouped = train and data_args.objects_per_image > 1 and is_instance_set(dataset)
    if train and data_args.objects_per_image > 1 and not grouped:
        logger.warning("objects_per_image=%d: the data has one mask per image (not an instance set): one object per "
                       "example", data_args.objects_per_image)
    if grouped:
        dataset = group_objects(dataset)
    augmenter = augmenter_from_args(data_args) if train else None
    transform = SamSegmentationTransform(
        image_size=image_size,
        prompt_mode=data_args.train_prompt if train else data_args.eval_prompt,
        train=train, seed=seed, num_fg_points=data_args.prompt_fg_points,
        num_bg_points=data_args.prompt_bg_points, mask_threshold=data_args.mask_threshold,
        invert_mask=data_args.invert_mask, num_labels=data_args.num_labels,
        ignore_index=data_args.ignore_index, jpeg_draft=data_args.jpeg_draft, augmenter=augmenter,
        resize=data_args.resize, random_crop=data_args.random_crop, image_mean=data_args.image_mean,
        image_std=data_args.image_std, mask_value_map=data_args.mask_value_map,
        keep_aspect_ratio=keep_aspect_ratio,
        preprocessing=data_args.preprocessing, channel_order=data_args.channel_order,
        eval_resolution=data_args.eval_resolution,
        objects_per_image=data_args.objects_per_image if grouped else 1,
        category_names=(sorted(set(dataset[CATEGORY_COLUMN])) if not train and is_instance_set(dataset) else None),
    )
    if INDEX_COLUMN not in dataset.column_names:
        with _no_datasets_bars():  # on a carved split this rewrites the rows: a bar that tells nothing
            dataset = dataset.add_column(INDEX_COLUMN, list(range(len(dataset))))
    return dataset.with_transform(transform)


def build_datasets(data_args: DataArguments, image_size: int, seed: int = 42,
                   splits: SegmentationSplits | None = None, need_eval: bool = True,
                   keep_aspect_ratio: bool = True) -> SegmentationSplits:
    """Load the splits (or take already ``select_splits``-ed ones) and attach train / eval transforms
    (train augmentation from ``data_args.augment``; ``keep_aspect_ratio=False`` for SAM 2)."""
    if splits is None:
        splits = select_splits(data_args, seed, need_eval)
    frame = {"seed": seed, "keep_aspect_ratio": keep_aspect_ratio}
    train = with_sam_transform(splits.train, data_args, image_size, train=True, **frame)
    return SegmentationSplits(
        train=train,
        eval=with_sam_transform(splits.eval, data_args, image_size, train=False, **frame),
        test=with_sam_transform(splits.test, data_args, image_size, train=False, **frame),
        train_transform=sam_transform_of(train),
    )
