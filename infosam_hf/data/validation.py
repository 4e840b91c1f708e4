"""Up-front data checks (``validate_data``), run when the splits are opened, before any model loads.

* ``headers`` (default): reads every image and mask header (size, mode, EXIF orientation; no pixel
  decode) and reports unreadable headers, unsupported modes and image/mask size mismatches;
* ``full``: also decodes every file once (with a progress bar), which finds truncated or corrupt
  pixel data that a header cannot show;
* ``none``: no check; problems surface when the transform reads the row.

Every problem of every split is collected and reported at once in a :class:`DataValidationError`
(the first :data:`MAX_REPORTED`, then a count). The rules are the transform's
(:meth:`~infosam_hf.data.transforms.SamSegmentationTransform.load_pair`): a mask matches its image
when it has the image's size after EXIF orientation or as stored, and sizes are full-resolution
sizes (JPEG drafting only changes how an image is decoded, not what it is compared with).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, get_args

from datasets import Dataset
from tqdm.auto import tqdm

from .decoding import (CLASS_ID_MODES, IMAGE_MODES, IN_MEMORY_NAME, DataError, decode_image, decode_mask, header_sizes,
                       open_image, size_mismatch, source_name)

logger = logging.getLogger(__name__)

__all__ = ["VALIDATION_MODES", "MAX_REPORTED", "DataValidationError", "check_pair", "validate_splits"]

ValidationMode = Literal["headers", "full", "none"]
VALIDATION_MODES: tuple[str, ...] = get_args(ValidationMode)
MAX_REPORTED = 20
_ROWS_PER_READ = 256


class DataValidationError(DataError):
    """All problems found by ``validate_data``: a summary line, then one line per problem (a single
    problem is reported as its own one-line message, the one the transform would give)."""

    full_report = True  # errors.error_line prints every line, not only the first

    def __init__(self, problems: list[str], mode: str, checked: int):
        self.problems = list(problems)
        if len(problems) == 1:
            super().__init__(problems[0])
            return
        lines = [f"validate_data={mode} found {len(problems)} problem(s) in {checked} image/mask pair(s), "
                 f"before loading any model (validate_data: none skips this check):"]
        lines += [f"  {problem}" for problem in problems[:MAX_REPORTED]]
        if len(problems) > MAX_REPORTED:
            lines.append(f"  ... and {len(problems) - MAX_REPORTED} more")
        super().__init__("\n".join(lines))


def _read_header(value: Any, kind: str, modes: tuple[str, ...],
                 exact: bool = False) -> tuple[tuple[int, int], tuple[int, int]]:
    """(oriented, stored) (height, width) of an image value, or a DataError naming its file.

    Masks are never EXIF-oriented (as in decode_mask); images are, from their header unless ``exact``.
    """
    image = open_image(value)
    try:
        if image.mode not in modes:
            raise DataError(f"{source_name(value)}: unsupported {kind} mode {image.mode} "
                            f"(supported: {', '.join(modes)})")
        if kind == "mask":
            return (image.height, image.width), (image.height, image.width)
        return header_sizes(image, exact)
    finally:
        if image is not value:
            image.close()


def check_pair(image_value: Any, mask_value: Any, full: bool = False, num_labels: int = 1,
               mask_threshold: float | None = None, invert_mask: bool = False,
               ignore_index: int = 255, value_map: dict[int, int] | None = None) -> list[str]:
    """The problems of one image/mask pair, as one-line messages naming the files (empty when fine)."""
    problems = []
    sizes = {}
    mask_modes = IMAGE_MODES if num_labels == 1 or value_map else CLASS_ID_MODES  # value_map: colour masks mapped
    for kind, value, modes in (("image", image_value, IMAGE_MODES), ("mask", mask_value, mask_modes)):
        try:
            sizes[kind] = _read_header(value, kind, modes)
        except DataError as err:
            problems.append(str(err))
    if problems:
        return problems
    (oriented, stored), (_, mask_size) = sizes["image"], sizes["mask"]
    if mask_size not in (oriented, stored) and mask_size == stored[::-1]:
        oriented, _ = _read_header(image_value, "image", IMAGE_MODES, exact=True)  # EXIF after a PNG's pixels
    if mask_size not in (oriented, stored):
        return [size_mismatch(image_value, oriented, mask_value, mask_size)]
    if full:
        try:
            decode_mask(mask_value, mask_threshold, invert_mask, num_labels, ignore_index, value_map)
        except DataError as err:
            problems.append(str(err))
        try:  # the smallest JPEG draft still reads the whole compressed stream, so truncation shows
            decode_image(image_value, draft_size=(1, 1))
        except DataError as err:
            problems.append(str(err))
    return problems


def _chunks(name: str, dataset: Dataset) -> Iterator[list[tuple[str, int, Any, Any]]]:
    """(split, row, image value, mask value) in chunks, so in-memory bytes are held a chunk at a time."""
    row = 0
    for batch in dataset.select_columns(["image", "label"]).iter(batch_size=_ROWS_PER_READ):
        chunk = [(name, row + i, image, mask) for i, (image, mask) in enumerate(zip(batch["image"], batch["label"]))]
        row += len(chunk)
        yield chunk


def _has_path(value: Any) -> bool:
    return source_name(value) != IN_MEMORY_NAME


def validate_splits(splits: Mapping[str, Dataset | None], mode: str = "headers", *, num_labels: int = 1,
                    mask_threshold: float | None = None, invert_mask: bool = False, ignore_index: int = 255,
                    progress: bool = True, value_map: dict[int, int] | None = None) -> None:
    """Check every image/mask pair of ``splits`` (name -> dataset with ``image`` / ``label`` columns).

    Raises :class:`DataValidationError` listing every problem found; a problem of an in-memory row
    (no file path) is prefixed with its split and row.
    """
    if mode not in VALIDATION_MODES:
        raise DataError(f"validate_data={mode!r} is not one of {', '.join(VALIDATION_MODES)}")
    if mode == "none":
        return
    full = mode == "full"
    present = {name: dataset for name, dataset in splits.items() if dataset is not None}
    total = sum(len(dataset) for dataset in present.values())
    start = time.perf_counter()

    def check(item: tuple[str, int, Any, Any]) -> list[str]:
        split, row, image_value, mask_value = item
        found = check_pair(image_value, mask_value, full, num_labels, mask_threshold, invert_mask, ignore_index,
                           value_map)
        if found and not (_has_path(image_value) or _has_path(mask_value)):
            found = [f"{split} row {row}: {problem}" for problem in found]
        return found

    problems: list[str] = []
    bar = tqdm(total=total, desc=f"validate_data={mode}", unit="pair", disable=not (full and progress))
    # threads: PIL releases the GIL while it reads and decodes
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        for name, dataset in present.items():
            for chunk in _chunks(name, dataset):
                for found in pool.map(check, chunk):
                    problems.extend(found)
                bar.update(len(chunk))
    bar.close()
    problems = list(dict.fromkeys(problems))  # each problem once, in the order found
    logger.info("validate_data=%s: %d image/mask pair(s) checked in %.1f s", mode, total, time.perf_counter() - start)
    if problems:
        raise DataValidationError(problems, mode, total)

