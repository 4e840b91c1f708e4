"""Load segmentation splits as ``datasets.Dataset`` objects with lazily decoded ``Image`` columns.

One entry point, :func:`load_splits`, takes a recipe's ``dataset_name_or_path``:

* ``synthetic`` -- the generated demo set;
* a folder saved with ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``;
* an HF ``imagefolder`` (a ``metadata.jsonl`` / ``.csv`` / ``.parquet`` whose ``file_name`` column
  names the image and ``label_file_name`` the mask; datasets turns every ``*_file_name`` column
  into an ``Image`` column named without the suffix);
* a Conv-LoRA benchmark folder: ``<split>.csv`` files with columns ``image,label`` holding paths
  relative to the folder; the split name is the file stem (``train``, ``test_Kvasir``, ...);
* a plain image folder: ``images/`` and ``masks/`` matched by file stem (png, jpg, jpeg, tif, tiff,
  bmp), with optional split subfolders (``root/train/images`` or ``root/images/train``);
* anything else ``datasets.load_dataset(name, split=...)`` can read: a Hub id or a local
  Hub-style folder of parquet files. ``image_column`` / ``mask_column`` pick the columns.
* an instance set (many objects per image; :mod:`infosam_hf.data.instances`): a COCO instance JSON, instance-id
  masks (``image,instances`` CSV or ``images/`` + ``instances/``), or a dataset with an ``objects`` column; it
  comes back with one row per object.

Every split comes back with exactly two columns, ``image`` and ``label``, both
``Image(decode=False)``: rows hold a path (or the encoded bytes) and pixels are decoded only when
the transform reads a row. Files referenced by local sources are checked to exist at load time.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from datasets import Dataset, DatasetDict, Features, Image, Value, load_dataset, load_from_disk
from datasets import get_dataset_split_names

from .decoding import IMAGE_EXTENSIONS, DataError
from . import instances
from .synthetic import make_synthetic_dataset

__all__ = [
    "SYNTHETIC", "IMAGE_EXTENSIONS", "SourceSplits", "load_splits", "load_csv_folder", "load_image_folder",
    "standardize_columns",
]

SYNTHETIC = "synthetic"
CSV_COLUMNS = ("image", "label")
MASK_SUFFIXES = ("", "_mask", "_segmentation", "_label", "_gt")  # tried in order after the image stem
METADATA_FILES = ("metadata.jsonl", "metadata.csv", "metadata.parquet")
_DATA_FILE_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json")
_PAIR_FEATURES = Features({"image": Image(decode=False), "label": Image(decode=False)})


class SourceSplits(Mapping):
    """The splits of one source by name, each loaded (and checked) on first access.

    ``names`` may be None for a Hub source whose split list could not be listed up front; then a
    split is looked up by trying to load it.
    """

    def __init__(self, source: str, names: list[str] | None, loader: Callable[[str], Dataset]):
        self.source = source
        self._names = list(names) if names is not None else None
        self._loader = loader
        self._cache: dict[str, Dataset] = {}
        self._missing: dict[str, DataError] = {}

    @property
    def names(self) -> list[str]:
        return list(self._names) if self._names is not None else list(self._cache)

    def __iter__(self) -> Iterator[str]:
        return iter(self.names)

    def __len__(self) -> int:
        return len(self.names)

    def __contains__(self, name: object) -> bool:
        if self._names is not None:
            return name in self._names
        try:
            self.get_split(str(name))
        except DataError:
            return False
        return True

    def __getitem__(self, name: str) -> Dataset:
        if self._names is not None and name not in self._names:
            raise KeyError(name)
        return self.get_split(name)

    def get_split(self, name: str) -> Dataset:
        """The split ``name``, or a DataError listing the available splits."""
        if name in self._cache:
            return self._cache[name]
        if self._names is not None and name not in self._names:
            raise DataError(f"{self.source}: split {name!r} not found; available splits: {sorted(self._names)}")
        if name in self._missing:
            raise self._missing[name]
        try:
            dataset = self._loader(name)
        except DataError as err:
            if self._names is None:
                self._missing[name] = err
            raise
        if len(dataset) == 0:
            raise DataError(f"{self.source}: split {name!r} is empty")
        self._cache[name] = dataset
        return dataset

    def __repr__(self) -> str:
        return f"SourceSplits({self.source!r}, splits={self.names})"


# ----------------------------------------------------------------------------- helpers

def _pairs_dataset(images: list[str], labels: list[str]) -> Dataset:
    return Dataset.from_dict({"image": images, "label": labels}, features=_PAIR_FEATURES)


def standardize_columns(dataset: Dataset, where: str, image_column: str = "image",
                        mask_column: str = "label") -> Dataset:
    """Keep the chosen image and mask columns, renamed to ``image`` / ``label``, as lazy Image columns."""
    columns = dataset.column_names
    if mask_column not in columns and "objects" in columns:  # an instance set: one row per object
        return instances.expand_objects_column(dataset, where, image_column)
    for option, column in (("image_column", image_column), ("mask_column", mask_column)):
        if column not in columns:
            raise DataError(f"{where}: {option}={column!r} not found; columns found: {columns}")
    if image_column == mask_column:
        raise DataError(f"{where}: image_column and mask_column are both {image_column!r}")
    dataset = dataset.select_columns([image_column, mask_column])
    renames = {old: new for old, new in ((image_column, "image"), (mask_column, "label")) if old != new}
    if renames:
        dataset = dataset.rename_columns(renames)
    for column, original in (("image", image_column), ("label", mask_column)):
        feature = dataset.features[column]
        is_path = isinstance(feature, Value) and feature.dtype in ("string", "large_string")
        if isinstance(feature, Image):
            if feature.decode:
                dataset = dataset.cast_column(column, Image(decode=False))
        elif is_path:
            dataset = dataset.cast_column(column, Image(decode=False))
        else:
            raise DataError(f"{where}: column {original!r} holds {feature}, not images or image paths")
    if len(dataset) == 0:
        raise DataError(f"{where}: the dataset is empty")
    return dataset


def check_files_exist(dataset: Dataset, where: str) -> None:
    """Fail (one line: row and file) when a path-only Image value points at a missing file.

    Reads the path field through Arrow without touching embedded bytes.
    """
    if getattr(dataset, "_indices", None) is not None:  # only right after loading, before any select
        return
    for column in ("image", "label"):
        row = 0
        for chunk in dataset.data.column(column).chunks:
            no_bytes = chunk.field("bytes").is_null().to_pylist()
            paths = chunk.field("path").to_pylist()
            for offset, (missing_bytes, path) in enumerate(zip(no_bytes, paths)):
                if missing_bytes and (not path or ("://" not in path and not os.path.isfile(path))):
                    raise DataError(f"{where}: row {row + offset}: {column} file not found: {path}")
            row += len(chunk)


def _looks_local(name: str) -> bool:
    """Hub ids are ``name`` or ``owner/name``; anything else is meant as a local path."""
    if name.startswith((".", "/", "~")) or "\\" in name or name.count("/") > 1:
        return True
    from .download import BENCHMARKS

    parent = Path(name).parent
    if str(parent) != "." and (parent.is_dir() or (parent.name == "data" and Path(name).name in BENCHMARKS)):
        return True  # e.g. data/polyp before the download: a missing folder, not a Hub id
    return Path(name).suffix.lower() in (".csv", ".zip", ".json", ".jsonl", ".parquet") + IMAGE_EXTENSIONS


def _download_hint(name: str) -> str:
    from .download import BENCHMARKS  # local import: download pulls nothing heavy, but keep it lazy

    stem = Path(name.rstrip("/")).name
    if stem in BENCHMARKS:
        return f" (fetch it with: python scripts/download_data.py {stem} --root {Path(name).parent})"
    return ""


# ----------------------------------------------------------------------------- Conv-LoRA CSV folders

def _read_csv_split(folder: Path, csv_path: Path) -> Dataset:
    if not csv_path.is_file():
        raise DataError(f"{csv_path}: CSV file not found")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            missing = [c for c in CSV_COLUMNS if c not in columns]
            if missing:
                raise DataError(f"{csv_path}: missing column(s) {missing}; found columns {columns}")
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise DataError(f"{csv_path}: cannot read CSV ({type(err).__name__}: {err})") from None
    images, labels = [], []
    for line, row in enumerate(rows, start=2):  # line 1 is the header
        pair = []
        for column in CSV_COLUMNS:
            value = (row.get(column) or "").strip().replace("\\", "/")
            path = folder / value
            if not value or not path.is_file():
                raise DataError(f"{csv_path}: row {line - 1} (line {line}): {column} file not found: "
                                f"{path if value else '<empty cell>'}")
            pair.append(str(path))
        images.append(pair[0])
        labels.append(pair[1])
    if not images:
        raise DataError(f"{csv_path}: the split has no rows")
    return _pairs_dataset(images, labels)


def _csv_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.csv") if p.name not in METADATA_FILES)


def load_csv_folder(folder: str | os.PathLike) -> SourceSplits:
    """Every ``*.csv`` in ``folder`` as one split named by its stem; a split's files are checked to
    exist when it is first accessed (at load time, before training)."""
    folder = Path(folder)
    csv_files = _csv_files(folder)
    if not csv_files:
        raise DataError(f"{folder / 'train.csv'}: CSV file not found (no split CSV files in {folder})")
    by_name = {path.stem: path for path in csv_files}
    return SourceSplits(str(folder), list(by_name), lambda name: _read_csv_split(folder, by_name[name]))


# ----------------------------------------------------------------------------- image folders

def _index_images(directory: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_EXTENSIONS and not path.name.startswith("."):
            if path.stem in found:
                raise DataError(f"{path}: two files share the stem {path.stem!r} ({found[path.stem].name})")
            found[path.stem] = path
    return found


def _pair_folder(images_dir: Path, masks_dir: Path) -> Dataset:
    images, masks = _index_images(images_dir), _index_images(masks_dir)
    if not images:
        raise DataError(f"{images_dir}: no images ({', '.join(IMAGE_EXTENSIONS)})")
    image_paths, mask_paths = [], []
    for stem, image_path in images.items():
        mask_path = next((masks[stem + s] for s in MASK_SUFFIXES if stem + s in masks), None)
        if mask_path is None:
            raise DataError(f"{image_path}: mask file not found: no {masks_dir}/{stem}.<png|jpg|jpeg|tif|tiff|bmp>")
        image_paths.append(str(image_path))
        mask_paths.append(str(mask_path))
    return _pairs_dataset(image_paths, mask_paths)


def _has_images(directory: Path) -> bool:
    return any(p.suffix.lower() in IMAGE_EXTENSIONS for p in directory.iterdir() if p.is_file())


def _folder_layout(root: Path) -> dict[str, tuple[Path, Path]] | None:
    """Split name -> (images dir, masks dir), or None when ``root`` has no images/masks layout."""
    images, masks = root / "images", root / "masks"
    if images.is_dir() and masks.is_dir():
        nested = {d.name: (d, masks / d.name) for d in sorted(images.iterdir())
                  if d.is_dir() and (masks / d.name).is_dir()}
        if nested and not _has_images(images):
            return nested
        return {"train": (images, masks)}
    layout = {d.name: (d / "images", d / "masks") for d in sorted(root.iterdir())
              if d.is_dir() and (d / "images").is_dir() and (d / "masks").is_dir()}
    return layout or None


def load_image_folder(root: str | os.PathLike) -> SourceSplits:
    """``images/`` + ``masks/`` matched by stem; split subfolders when present, else one ``train`` split."""
    root = Path(root)
    layout = _folder_layout(root)
    if not layout:
        raise DataError(f"{root}: no images/ and masks/ folders")
    return SourceSplits(str(root), list(layout), lambda name: _pair_folder(*layout[name]))


# ----------------------------------------------------------------------------- datasets-native sources

def _has_metadata(root: Path) -> bool:
    candidates = [root] + [d for d in root.iterdir() if d.is_dir()]
    return any((d / m).is_file() for d in candidates for m in METADATA_FILES)


def _checked_splits(root: Path, splits: DatasetDict, image_column: str, mask_column: str) -> SourceSplits:
    """Splits of an already loaded local dataset, standardised and file-checked on first access."""

    def loader(name: str) -> Dataset:
        dataset = standardize_columns(splits[name], f"{root} [{name}]", image_column, mask_column)
        check_files_exist(dataset, f"{root} [{name}]")
        return dataset

    return SourceSplits(str(root), list(splits), loader)


def _load_from_disk_splits(root: Path, image_column: str, mask_column: str) -> SourceSplits:
    try:
        loaded = load_from_disk(str(root))
    except (OSError, ValueError) as err:
        raise DataError(f"{root}: cannot load the saved dataset ({type(err).__name__}: {err})") from None
    splits = loaded if isinstance(loaded, DatasetDict) else DatasetDict({"train": loaded})
    return _checked_splits(root, splits, image_column, mask_column)


def _imagefolder_splits(root: Path, image_column: str, mask_column: str) -> SourceSplits:
    try:
        loaded = load_dataset("imagefolder", data_dir=str(root))
    except (OSError, ValueError) as err:
        raise DataError(f"{root}: cannot read the imagefolder metadata ({type(err).__name__}: "
                        f"{_first_line(err)})") from None
    return _checked_splits(root, loaded, image_column, mask_column)


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _hub_splits(name: str, image_column: str, mask_column: str, config_name: str | None,
                local: bool = False) -> SourceSplits:
    """``load_dataset(name, split=...)`` per split (a Hub id or a local Hub-style folder)."""
    try:
        names = get_dataset_split_names(name, config_name)
    except Exception:  # offline, gated, or a builder that cannot list splits: find out when loading
        names = None

    def loader(split: str) -> Dataset:
        try:
            dataset = load_dataset(name, config_name, split=split)
        except ValueError as err:
            if "Unknown split" in str(err):
                raise DataError(f"{name}: split {split!r} not found ({_first_line(err)})") from None
            raise DataError(f"{name}: cannot load split {split!r} ({_first_line(err)})") from None
        except Exception as err:  # DatasetNotFoundError, connection errors, ...
            where = "no such local folder, and loading it with datasets.load_dataset failed"
            if local:
                where = "loading it with datasets.load_dataset failed"
            raise DataError(f"{name}: {where} ({type(err).__name__}: {_first_line(err)})"
                            f"{_download_hint(name)}") from None
        if isinstance(dataset, DatasetDict):  # a loader that ignores split=
            dataset = dataset[split]
        dataset = standardize_columns(dataset, f"{name} [{split}]", image_column, mask_column)
        if local:
            check_files_exist(dataset, f"{name} [{split}]")
        return dataset

    return SourceSplits(name, names, loader)


def _has_data_files(root: Path) -> bool:
    for count, path in enumerate(root.rglob("*")):
        if path.suffix.lower() in _DATA_FILE_SUFFIXES:
            return True
        if count > 10_000:
            break
    return False


# ----------------------------------------------------------------------------- instance sets

def _instance_splits(path: Path) -> SourceSplits | None:
    """A COCO JSON, an ``image,instances`` CSV or an ``images/`` + ``instances/`` folder (see data/instances.py)."""
    coco = instances.coco_split_files(path)
    if coco:
        return SourceSplits(str(path), list(coco), lambda name: instances.load_coco_split(path, coco[name]))
    csv_splits = instances.instance_csv_files(path)
    if csv_splits:
        return SourceSplits(str(path), list(csv_splits),
                            lambda name: instances.load_instance_csv_split(path, csv_splits[name]))
    layout = instances.instance_folder_layout(path)
    if layout:
        return SourceSplits(str(path), list(layout), lambda name: instances.load_instance_folder_split(*layout[name]))
    return None


# ----------------------------------------------------------------------------- entry point

def load_splits(dataset_name_or_path: str, synthetic_kwargs: dict | None = None, *, image_column: str = "image",
                mask_column: str = "label", config_name: str | None = None) -> SourceSplits:
    """All splits of a source by name (a read-only mapping of ``datasets.Dataset``, loaded on access).

    See the module docstring for the source kinds and the order in which a folder is recognised.
    """
    name = str(dataset_name_or_path)
    if name == SYNTHETIC:
        splits = make_synthetic_dataset(**(synthetic_kwargs or {}))
        return SourceSplits(SYNTHETIC, list(splits), splits.__getitem__)
    path = Path(name).expanduser()
    if path.is_file():
        raise DataError(f"{path}: dataset_name_or_path must be a folder (or a Hub id), not a file")
    if not path.is_dir():
        if _looks_local(name):
            raise DataError(f"{path}: folder not found{_download_hint(name)}")
        return _hub_splits(name, image_column, mask_column, config_name)
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        return _load_from_disk_splits(path, image_column, mask_column)
    if _has_metadata(path):
        return _imagefolder_splits(path, image_column, mask_column)
    instance_splits = _instance_splits(path)
    if instance_splits is not None:
        return instance_splits
    if _csv_files(path):
        return load_csv_folder(path)
    if _folder_layout(path):
        return load_image_folder(path)
    if _has_data_files(path):
        return _hub_splits(str(path), image_column, mask_column, config_name, local=True)
    raise DataError(f"{path / 'train.csv'}: CSV file not found; {path} has no split CSV files, no images/ + "
                    f"masks/ folders, no metadata.jsonl and no saved dataset")
