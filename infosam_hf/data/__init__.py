"""Data: sources as ``datasets.Dataset`` splits, SAM transforms, prompts and collation."""

from __future__ import annotations

from dataclasses import dataclass

from datasets import Dataset, DatasetDict

from ..arguments import DataArguments
from .collator import SamPromptCollator
from .decoding import DataError, decode_image, decode_mask
from .prompts import sample_box, sample_points
from .sources import SYNTHETIC, load_splits
from .synthetic import make_synthetic_dataset
from .transforms import INDEX_COLUMN, SamSegmentationTransform, preprocess_image

__all__ = [
    "DataError",
    "SegmentationSplits",
    "SamPromptCollator",
    "SamSegmentationTransform",
    "build_datasets",
    "select_splits",
    "decode_image",
    "decode_mask",
    "make_synthetic_dataset",
    "preprocess_image",
    "sample_box",
    "sample_points",
]


@dataclass
class SegmentationSplits:
    """The train / eval / test datasets of a run (eval and test may be None)."""

    train: Dataset | None
    eval: Dataset | None
    test: Dataset | None


def _split(splits: DatasetDict, name: str, source: str) -> Dataset:
    if name not in splits:
        raise DataError(f"{source}: split {name!r} not found; available splits: {sorted(splits)}")
    return splits[name]


def _truncate(dataset: Dataset | None, limit: int | None) -> Dataset | None:
    if dataset is None or limit is None:
        return dataset
    return dataset.select(range(min(limit, len(dataset))))


def select_splits(data_args: DataArguments, seed: int = 42) -> SegmentationSplits:
    """Resolve ``train_split`` / ``eval_split`` / ``test_split``; carve a seeded validation split from
    train when no validation split exists (test data is never used to pick checkpoints)."""
    source = data_args.dataset_name_or_path
    splits = load_splits(source, {
        "num_train": data_args.synthetic_num_train, "num_validation": data_args.synthetic_num_eval,
        "num_test": data_args.synthetic_num_test, "image_size": data_args.synthetic_image_size,
        "seed": data_args.synthetic_seed,
    })
    train = _split(splits, data_args.train_split, source)
    eval_name = data_args.eval_split
    if eval_name is None:
        eval_name = next((n for n in ("validation", "val", "valid") if n in splits), None)
    if eval_name is not None:
        eval_ds = _split(splits, eval_name, source)
    elif data_args.validation_split_percentage > 0:
        parts = train.train_test_split(test_size=data_args.validation_split_percentage / 100, seed=seed)
        train, eval_ds = parts["train"], parts["test"]
    else:
        eval_ds = None
    test = _split(splits, data_args.test_split, source) if data_args.test_split else None
    return SegmentationSplits(
        train=_truncate(train, data_args.max_train_samples),
        eval=_truncate(eval_ds, data_args.max_eval_samples),
        test=_truncate(test, data_args.max_eval_samples),
    )


def with_sam_transform(dataset: Dataset | None, data_args: DataArguments, image_size: int, train: bool,
                       seed: int = 42, augmenter=None) -> Dataset | None:
    """Attach the on-the-fly SAM transform (train or eval prompts) to a split."""
    if dataset is None:
        return None
    transform = SamSegmentationTransform(
        image_size=image_size,
        prompt_mode=data_args.train_prompt if train else data_args.eval_prompt,
        train=train, seed=seed, num_fg_points=data_args.prompt_fg_points,
        num_bg_points=data_args.prompt_bg_points, mask_threshold=data_args.mask_threshold,
        invert_mask=data_args.invert_mask, num_labels=data_args.num_labels,
        ignore_index=data_args.ignore_index, jpeg_draft=data_args.jpeg_draft, augmenter=augmenter,
    )
    if not train and INDEX_COLUMN not in dataset.column_names:
        dataset = dataset.add_column(INDEX_COLUMN, list(range(len(dataset))))
    return dataset.with_transform(transform)


def build_datasets(data_args: DataArguments, image_size: int, seed: int = 42) -> SegmentationSplits:
    """Load the splits and attach train / eval transforms."""
    splits = select_splits(data_args, seed)
    return SegmentationSplits(
        train=with_sam_transform(splits.train, data_args, image_size, train=True, seed=seed),
        eval=with_sam_transform(splits.eval, data_args, image_size, train=False, seed=seed),
        test=with_sam_transform(splits.test, data_args, image_size, train=False, seed=seed),
    )
