"""Load segmentation splits as ``datasets.Dataset`` objects with lazily decoded ``Image`` columns.

Sources: ``synthetic`` (the generated demo set) and Conv-LoRA CSV folders (``<split>.csv`` files
with columns ``image,label`` holding paths relative to the folder; the split name is the file stem).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image

from .decoding import DataError
from .synthetic import make_synthetic_dataset

__all__ = ["SYNTHETIC", "load_splits", "load_csv_folder"]

SYNTHETIC = "synthetic"
CSV_COLUMNS = ("image", "label")


def _read_csv_split(folder: Path, csv_path: Path) -> Dataset:
    try:
        with open(csv_path, newline="") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [c for c in CSV_COLUMNS if c not in columns]
            if missing:
                raise DataError(f"{csv_path}: missing column(s) {missing}; found columns {columns}")
            rows = list(reader)
    except FileNotFoundError:
        raise DataError(f"{csv_path}: CSV file not found") from None
    images, labels = [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        pair = []
        for column in CSV_COLUMNS:
            path = folder / (row[column] or "").strip()
            if not row[column] or not path.is_file():
                raise DataError(f"{csv_path}:{line}: {column} file not found: {path}")
            pair.append(str(path))
        images.append(pair[0])
        labels.append(pair[1])
    if not images:
        raise DataError(f"{csv_path}: the split has no rows")
    features = Features({"image": Image(decode=False), "label": Image(decode=False)})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def load_csv_folder(folder: str | os.PathLike) -> DatasetDict:
    """Every ``*.csv`` in ``folder`` as one split named by its stem; all files are checked to exist."""
    folder = Path(folder)
    csv_files = sorted(folder.glob("*.csv"))
    if not csv_files:
        raise DataError(f"{folder}: no split CSV files (expected e.g. train.csv, test.csv)")
    return DatasetDict({path.stem: _read_csv_split(folder, path) for path in csv_files})


def load_splits(dataset_name_or_path: str, synthetic_kwargs: dict | None = None) -> DatasetDict:
    """All splits of a source, keyed by split name."""
    if dataset_name_or_path == SYNTHETIC:
        return make_synthetic_dataset(**(synthetic_kwargs or {}))
    path = Path(dataset_name_or_path)
    if path.is_dir():
        return load_csv_folder(path)
    raise DataError(f"dataset_name_or_path={dataset_name_or_path!r}: not a folder and not '{SYNTHETIC}'")
