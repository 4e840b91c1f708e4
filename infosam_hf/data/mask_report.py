"""The mask report of ``validate_data``: mask statistics over all of a small split (a seeded sample of a large
one), read with the run's own decoding, so that objects the decoding would turn into nothing (or into ignore)
stop the run before any model loads, and borderline sets warn once with counts.

The EXIF rule (the transform's, for every image, square or not): a mask is paired with the image as displayed
(EXIF orientation applied) when their sizes agree, else with the image as stored. A square image with a
rotating EXIF orientation fits both; it is paired as displayed and counted in the report.
"""

from __future__ import annotations

import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .decoding import DataError, decode_mask, exif_orientation, open_image

logger = logging.getLogger(__name__)

__all__ = ["MASK_SAMPLE", "MaskStats", "mask_report", "split_mask_stats"]

MASK_SAMPLE = 128  # masks read per split (all of a smaller split)
_ROTATING = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_MAX_VALUES = 12  # distinct raw values shown


@dataclass
class MaskStats:
    """What the masks of one split hold, raw and as the run decodes them."""

    split: str
    read: int = 0
    total: int = 0
    foreground: float = 0.0  # mean foreground (binary) / labelled-object (multi-class) fraction
    raw_values: Counter = field(default_factory=Counter)  # distinct raw values -> masks holding them
    empty: int = 0  # decoded without any foreground (binary) / any object class (multi-class)
    raw_nonempty_but_empty: int = 0  # had non-zero raw values, decoded empty
    all_void: int = 0  # multi-class: every pixel ignore_index
    objects_to_ignore: int = 0  # multi-class: masks with values outside the classes (and not void) -> ignore
    nonzero_void: int = 0  # multi-class: masks with non-zero raw values read as ignore_index
    nan_images: int = 0  # float images holding NaN / Inf pixels
    square_rotated: int = 0  # square images with a rotating EXIF orientation (paired as displayed)
    swapped: int = 0  # the "mask" looks like a photo and the "image" like a mask


def _raw_mask(value: Any) -> np.ndarray:
    image = open_image(value)
    if image.mode in ("RGB", "RGBA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"):
        return np.asarray(image.convert("RGB")).max(axis=2)
    return np.asarray(image)


def _looks_swapped(image_value: Any, raw_mask: np.ndarray) -> bool:
    """A mask with many grey levels beside an image with at most two: the columns are likely swapped."""
    if len(np.unique(raw_mask[::4, ::4])) <= 32:
        return False
    image = np.asarray(open_image(image_value))
    return len(np.unique(image[::4, ::4])) <= 2


def split_mask_stats(name: str, dataset, data_args, seed: int = 0) -> MaskStats:
    """Read all masks of a small split, or a seeded sample of :data:`MASK_SAMPLE` of a large one."""
    stats = MaskStats(name, total=len(dataset))
    rows = list(range(len(dataset)))
    if len(rows) > MASK_SAMPLE:
        rows = sorted(random.Random(seed).sample(rows, MASK_SAMPLE))
    columns = dataset.select_columns(["image", "label"])
    multiclass = data_args.num_labels > 1
    fractions = []
    for row in rows:
        example = columns[row]
        image_value, mask_value = example["image"], example["label"]
        try:
            raw = _raw_mask(mask_value)
            decoded = decode_mask(mask_value, data_args.mask_threshold, data_args.invert_mask, data_args.num_labels,
                                  data_args.ignore_index, data_args.mask_value_map)
            image = open_image(image_value)
        except DataError:
            continue  # validate_data's pair check names unreadable files
        stats.read += 1
        values = np.unique(raw)
        stats.raw_values.update(values.tolist()[:256])
        if multiclass:
            void = decoded == data_args.ignore_index
            objects = (decoded > 0) & ~void
            stats.all_void += bool(void.all())
            intended = np.isin(raw, [0, data_args.ignore_index, *(data_args.mask_value_map or {})])
            stats.objects_to_ignore += bool((void & ~intended).any())  # values no class id nor void maps to
            stats.nonzero_void += bool((void & (raw != 0)).any())
            fractions.append(float(objects.mean()))
            empty = not objects.any()
        else:
            fractions.append(float(decoded.mean()))
            empty = not decoded.any()
        stats.empty += empty
        stats.raw_nonempty_but_empty += empty and bool((raw != 0).any()) and not data_args.invert_mask
        if image.mode == "F":
            stats.nan_images += not bool(np.isfinite(np.asarray(image)).all())
        if image.width == image.height and exif_orientation(image) in _ROTATING:
            stats.square_rotated += 1
        stats.swapped += _looks_swapped(image_value, raw)
    stats.foreground = float(np.mean(fractions)) if fractions else 0.0
    return stats


def _values(stats: MaskStats) -> str:
    values = sorted(stats.raw_values)
    shown = ", ".join(str(v) for v in values[:_MAX_VALUES])
    return "{" + shown + (", …" if len(values) > _MAX_VALUES else "") + "}"


def _problems(stats: MaskStats, data_args) -> tuple[list[str], list[str]]:
    """(errors, warnings) of one split."""
    errors, warns = [], []
    where = f"{stats.split} split ({stats.read} of {stats.total} masks read)"
    if not stats.read:
        return errors, warns
    if stats.swapped > stats.read // 2:
        errors.append(f"{where}: the masks look like photos and the images like masks in {stats.swapped} row(s): "
                      "are image_column and mask_column swapped?")
    if data_args.num_labels > 1:
        if stats.empty == stats.read and stats.nonzero_void:
            errors.append(f"{where}: no mask holds a class 1..{data_args.num_labels - 1}, every object becomes "
                          f"ignore_index={data_args.ignore_index}: values "
                          f"seen {_values(stats)}, but num_labels={data_args.num_labels} keeps only 0.."
                          f"{data_args.num_labels - 1}; map them with mask_value_map (e.g. {{255: 1}})")
        elif stats.objects_to_ignore:
            warns.append(f"{where}: {stats.objects_to_ignore} mask(s) hold values outside 0..{data_args.num_labels - 1} "
                         f"(values seen {_values(stats)}) that become ignore_index")
        if stats.all_void == stats.read:
            errors.append(f"{where}: every mask is all ignore_index={data_args.ignore_index}: nothing to train on")
        elif stats.all_void:
            warns.append(f"{where}: {stats.all_void} mask(s) are all ignore_index (void); they add nothing")
    else:
        if stats.raw_nonempty_but_empty == stats.read:
            errors.append(f"{where}: every mask decodes as empty: values seen {_values(stats)}, foreground is "
                          f"value > {data_args.mask_threshold if data_args.mask_threshold is not None else 127}; "
                          "set mask_threshold: 0 (any non-zero value is foreground)")
        elif stats.empty == stats.read:
            errors.append(f"{where}: every mask is empty (values seen {_values(stats)}): no object to train on")
        elif stats.raw_nonempty_but_empty:
            warns.append(f"{where}: {stats.raw_nonempty_but_empty} mask(s) with non-zero values decode as empty "
                         f"(values seen {_values(stats)}); mask_threshold sets the foreground cut")
        elif stats.empty:
            warns.append(f"{where}: {stats.empty} mask(s) are empty (no foreground); box prompts skip them, "
                         "metrics count them as empty targets")
    if stats.nan_images:
        warns.append(f"{where}: {stats.nan_images} float image(s) hold NaN/Inf pixels (read as 0)")
    if stats.square_rotated:
        warns.append(f"{where}: {stats.square_rotated} square image(s) carry a rotating EXIF orientation; their "
                     "masks are paired with the image as displayed (EXIF applied)")
    return errors, warns


def mask_report(splits: dict[str, Any], data_args, seed: int = 0) -> list[MaskStats]:
    """Mask statistics of every split, logged as one report; raises a :class:`DataError` listing every split
    whose objects would vanish (or whose columns look swapped), warns once with counts for borderline ones."""
    all_stats, errors, warns = [], [], []
    for name, dataset in splits.items():
        if dataset is None or "label" not in dataset.column_names:
            continue
        stats = split_mask_stats(name, dataset, data_args, seed)
        all_stats.append(stats)
        split_errors, split_warns = _problems(stats, data_args)
        errors += split_errors
        warns += split_warns
    if errors:
        raise DataError("; ".join(errors) if len(errors) == 1 else "mask report: " + " | ".join(errors))
    summary = ", ".join(f"{s.split}: foreground {s.foreground:.1%}, {s.empty} empty of {s.read}" for s in all_stats)
    if summary:
        logger.info("Mask report (validate_data): %s", summary)
    if warns:
        logger.warning("Mask report (validate_data): %s", "; ".join(warns))
    return all_stats
