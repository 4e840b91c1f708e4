"""Instance data sets (many objects per image), found from ``dataset_name_or_path`` like the other layouts.

* **COCO instance JSON** (read with ``pycocotools``): ``<split>.json`` in the folder, or
  ``annotations/instances_<split>.json``; ``file_name`` is relative to the folder or to ``images/``.
  Polygons, compressed RLE and uncompressed RLE are all read; ``iscrowd`` annotations are skipped.
* **Instance-id masks** (0 = background, 1..K = objects): ``<split>.csv`` with columns ``image,instances``
  (paths relative to the folder), or an ``instances/`` folder beside ``images/`` (matched by file stem,
  optionally with split subfolders ``images/<split>`` + ``instances/<split>``).
* **An HF dataset with an ``objects`` column** (and no mask column): per object a ``mask`` (image) or a
  ``segmentation`` (polygons or RLE), a ``bbox`` (COCO ``x, y, w, h``) and a ``category`` / ``category_id``;
  the column may be a list of dicts or a dict of lists (how ``datasets`` stores a sequence of dicts).

Each source comes back in the common ``image`` / ``label`` form with one row per object: ``label`` holds that
object's binary mask (PNG bytes at the image's size), ``image`` the image's file (shared by its objects),
``image_id`` which image the object belongs to and ``category`` its category name ("" when the source has none).
:func:`group_objects` turns the rows into one row per image (``objects_per_image`` training). The
problems of a split -- missing image file, annotation outside its image, empty object, unknown category -- are
collected while loading and reported at once, one line each, before any model loads.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from datasets import Dataset, Features, Image, Value
from PIL import Image as PILImage

from .collator import OBJECT_CATEGORY_KEY, OBJECT_IMAGE_KEY
from .decoding import DataError, open_image

logger = logging.getLogger(__name__)

__all__ = [
    "CATEGORY_COLUMN", "IMAGE_ID_COLUMN", "INSTANCE_CSV_COLUMNS", "coco_split_files", "instance_csv_files", "instance_folder_layout",
    "load_coco_split", "load_instance_csv_split", "load_instance_folder_split", "expand_objects_column",
    "group_objects", "is_instance_set",
]

INSTANCE_CSV_COLUMNS = ("image", "instances")
IMAGE_ID_COLUMN = OBJECT_IMAGE_KEY  # which image an object row belongs to (groups objects per image)
CATEGORY_COLUMN = OBJECT_CATEGORY_KEY  # an object's category name ("" when the source has none)
_FEATURES = Features({"image": Image(decode=False), "label": Image(decode=False), IMAGE_ID_COLUMN: Value("int64"),
                      CATEGORY_COLUMN: Value("string")})
_EDGE_TOLERANCE = 1.0  # pixels: COCO boxes of objects touching the border may overshoot by rounding


def _problems_error(problems: list[str], checked: int) -> DataError:
    from .validation import DataValidationError  # local: validation imports the decoders, not this module

    return DataValidationError(problems, "headers", checked)


def _png_bytes(mask: np.ndarray) -> dict[str, Any]:
    buffer = io.BytesIO()
    PILImage.fromarray(mask.astype(np.uint8) * 255).save(buffer, format="PNG", compress_level=1)
    return {"bytes": buffer.getvalue(), "path": None}


class _Rows:
    """The object rows of a split being read: image value, mask PNG, image id and category per object."""

    def __init__(self):
        self.images, self.labels, self.image_ids, self.categories = [], [], [], []
        self.problems: list[str] = []

    def add_checked(self, name: str, read_mask: Callable[[], np.ndarray], image: Any, image_id: int,
                    category: Any = None, drawn_as: str = "mask") -> None:
        """:meth:`add` the object whose mask ``read_mask()`` gives, or record why it cannot be used (it raised a
        :class:`DataError`, or the mask is empty)."""
        try:
            mask = read_mask()
        except DataError as err:
            self.problems.append(str(err))
            return
        if not mask.any():
            self.problems.append(f"{name}: empty object (its {drawn_as} covers no pixel)")
            return
        self.add(image, mask, image_id, category)

    def add(self, image: Any, mask: np.ndarray, image_id: int, category: Any = None) -> None:
        self.images.append(image)
        self.labels.append(_png_bytes(mask))
        self.image_ids.append(int(image_id))
        self.categories.append("" if category is None else str(category))

    def dataset(self, where: str, checked: int) -> Dataset:
        if self.problems:
            raise _problems_error(self.problems, checked)
        if not self.images:
            raise DataError(f"{where}: no objects (every image has an empty annotation list)")
        return Dataset.from_dict({"image": self.images, "label": self.labels, IMAGE_ID_COLUMN: self.image_ids,
                                  CATEGORY_COLUMN: self.categories}, features=_FEATURES)


def _outside(bbox: list[float], height: int, width: int) -> bool:
    x, y, w, h = (float(v) for v in bbox[:4])
    tol = _EDGE_TOLERANCE
    return x < -tol or y < -tol or x + w > width + tol or y + h > height + tol


def _polygon_bbox(polygons: list[list[float]]) -> list[float] | None:
    coords = [v for polygon in polygons for v in polygon]
    if len(coords) < 2:
        return None
    xs, ys = coords[0::2], coords[1::2]
    return [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]


def _segmentation_mask(segmentation: Any, height: int, width: int, name: str) -> np.ndarray:
    """A COCO segmentation (polygons, RLE or uncompressed RLE) as a bool (H, W) mask; DataError when outside."""
    from pycocotools import mask as mask_utils

    if isinstance(segmentation, list):
        bbox = _polygon_bbox(segmentation)
        if bbox is not None and _outside(bbox, height, width):
            raise DataError(f"{name}: polygon reaches outside its {width}x{height} image (bbox {bbox})")
        polygons = [[float(v) for v in p] for p in segmentation if len(p) >= 6]  # a polygon needs 3 points
        if not polygons:
            return np.zeros((height, width), bool)
        rle = mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))
    elif isinstance(segmentation, dict) and "counts" in segmentation:
        size = [int(v) for v in segmentation.get("size", (height, width))]
        if size != [height, width]:
            raise DataError(f"{name}: RLE size {size[1]}x{size[0]} differs from its {width}x{height} image")
        if isinstance(segmentation["counts"], list):
            rle = mask_utils.frPyObjects(segmentation, height, width)
        else:
            counts = segmentation["counts"]
            rle = {"size": size, "counts": counts.encode() if isinstance(counts, str) else counts}
    else:
        raise DataError(f"{name}: segmentation is neither polygons nor RLE ({type(segmentation).__name__})")
    return mask_utils.decode(rle).astype(bool)


# ----------------------------------------------------------------------------- COCO

def _is_coco_json(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as handle:
            head = handle.read(4096)
    except OSError:
        return False
    return '"images"' in head or '"annotations"' in head or '"categories"' in head


def coco_split_files(folder: Path) -> dict[str, Path]:
    """Split name -> COCO JSON: ``annotations/instances_<split>.json`` or ``<split>.json`` in ``folder``."""
    found = {p.stem[len("instances_"):]: p for p in sorted((folder / "annotations").glob("instances_*.json"))}
    if not found:
        found = {p.stem: p for p in sorted(folder.glob("*.json")) if _is_coco_json(p)}
    return found


def _coco_image_path(folder: Path, file_name: str) -> Path | None:
    for base in (folder, folder / "images"):
        if (base / file_name).is_file():
            return base / file_name
    return None


def load_coco_split(folder: Path, json_path: Path) -> Dataset:
    """One object per row from a COCO instance JSON; every problem of the split reported at once."""
    from pycocotools.coco import COCO

    try:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
            coco = COCO(str(json_path))
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(f"{json_path}: cannot read the COCO JSON ({type(err).__name__}: {err})") from None
    categories = set(coco.getCatIds())
    category_names = {cat_id: str(cat.get("name", cat_id)) for cat_id, cat in coco.cats.items()}
    rows = _Rows()
    problems = rows.problems
    for image_id in sorted(coco.imgs):
        info = coco.imgs[image_id]
        file_name = str(info.get("file_name", ""))
        path = _coco_image_path(folder, file_name) if file_name else None
        anns = [a for a in coco.imgToAnns.get(image_id, []) if not a.get("iscrowd", 0)]
        if path is None:
            if anns:
                problems.append(f"{json_path}: image {image_id}: image file not found: {folder / file_name} "
                                f"(nor under {folder / 'images'})")
            continue
        height, width = int(info["height"]), int(info["width"])
        for ann in anns:
            name = f"{json_path}: annotation {ann.get('id')} (image {image_id}, {file_name})"
            if ann.get("category_id") not in categories:
                problems.append(f"{name}: unknown category_id {ann.get('category_id')} "
                                f"(categories: {sorted(categories)})")
                continue
            if "bbox" in ann and _outside(ann["bbox"], height, width):
                problems.append(f"{name}: bbox {ann['bbox']} lies outside its {width}x{height} image")
                continue
            rows.add_checked(name, lambda: _segmentation_mask(ann.get("segmentation", []), height, width, name),
                             {"path": str(path), "bytes": None}, image_id, category_names[ann["category_id"]],
                             drawn_as="segmentation")
    return rows.dataset(str(json_path), len(coco.imgs))


# ----------------------------------------------------------------------------- instance-id masks

def _instance_rows(pairs: list[tuple[str, Path, Path]], where: str) -> Dataset:
    """(problem prefix, image path, instance-id mask path) -> one row per object id."""
    rows = _Rows()
    problems = rows.problems
    for image_id, (prefix, image_path, mask_path) in enumerate(pairs):
        missing = [f"{kind} file not found: {p}" for kind, p in (("image", image_path), ("instances", mask_path))
                   if not p.is_file()]
        if missing:
            problems.extend(f"{prefix}{m}" for m in missing)
            continue
        try:
            with open_image(str(mask_path)) as mask_image:
                ids = np.asarray(mask_image if mask_image.mode in ("I", "I;16", "L", "P") else mask_image.convert("L"))
        except DataError as err:
            problems.append(str(err))
            continue
        if ids.ndim != 2:
            problems.append(f"{mask_path}: an instance-id mask must be single-channel (got shape {ids.shape})")
            continue
        for object_id in np.unique(ids):
            if object_id != 0:
                rows.add({"path": str(image_path), "bytes": None}, ids == object_id, image_id)
    return rows.dataset(where, len(pairs))


def instance_csv_files(folder: Path) -> dict[str, Path]:
    """Split name -> ``<split>.csv`` whose header names the ``image`` and ``instances`` columns."""
    found = {}
    for path in sorted(folder.glob("*.csv")):
        try:
            with open(path, newline="", encoding="utf-8-sig") as handle:
                header = [c.strip() for c in next(csv.reader(handle), [])]
        except (OSError, UnicodeDecodeError, csv.Error):
            continue
        if all(c in header for c in INSTANCE_CSV_COLUMNS):
            found[path.stem] = path
    return found


def load_instance_csv_split(folder: Path, csv_path: Path) -> Dataset:
    with open(csv_path, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        reader.fieldnames = [c.strip() for c in (reader.fieldnames or [])]
        rows = list(reader)
    pairs = []
    for line, row in enumerate(rows, start=2):
        image, instances = ((row.get(c) or "").strip().replace("\\", "/") for c in INSTANCE_CSV_COLUMNS)
        pairs.append((f"{csv_path}: row {line - 1} (line {line}): ", folder / image, folder / instances))
    return _instance_rows(pairs, str(csv_path))


def instance_folder_layout(root: Path) -> dict[str, tuple[Path, Path]] | None:
    """Split name -> (images dir, instances dir) for ``images/`` + ``instances/``, or None."""
    images, instances = root / "images", root / "instances"
    if not (images.is_dir() and instances.is_dir()):
        return None
    nested = {d.name: (d, instances / d.name) for d in sorted(images.iterdir())
              if d.is_dir() and (instances / d.name).is_dir()}
    return nested or {"train": (images, instances)}


def load_instance_folder_split(images_dir: Path, instances_dir: Path) -> Dataset:
    from .sources import _index_images  # local: sources imports this module

    masks = _index_images(instances_dir)
    pairs = [("", path, masks.get(stem, instances_dir / f"{stem}.png"))
             for stem, path in _index_images(images_dir).items()]
    if not pairs:
        raise DataError(f"{images_dir}: no images")
    return _instance_rows(pairs, str(images_dir))


# ----------------------------------------------------------------------------- HF ``objects`` column

def _as_object_list(objects: Any) -> list[dict[str, Any]]:
    if isinstance(objects, dict):  # datasets stores a sequence of dicts as a dict of lists
        keys = list(objects)
        return [dict(zip(keys, values)) for values in zip(*(objects[k] for k in keys))]
    return list(objects or [])


def _category_names(feature: Any) -> tuple[str, list[str] | None]:
    """(category key, ClassLabel names or None) of an ``objects`` feature."""
    inner = feature.feature if hasattr(feature, "feature") else feature[0] if isinstance(feature, list) else feature
    if isinstance(inner, dict):
        for key in ("category", "category_id", "label"):
            if key in inner:
                names = getattr(inner[key], "names", None)
                if names is None and hasattr(inner[key], "feature"):
                    names = getattr(inner[key].feature, "names", None)
                return key, names
    return "category", None


def _object_mask(obj: dict[str, Any], height: int, width: int, name: str) -> np.ndarray:
    """The boolean mask of one entry of an ``objects`` column: its ``mask`` image or its COCO ``segmentation``."""
    if obj.get("mask") is not None:
        with open_image(obj["mask"]) as mask_image:
            if mask_image.size != (width, height):
                raise DataError(f"{name}: mask is {mask_image.size[0]}x{mask_image.size[1]}, "
                                f"its image {width}x{height}")
            return np.asarray(mask_image.convert("L")) > 0
    if obj.get("segmentation") is not None:
        segmentation = obj["segmentation"]
        if isinstance(segmentation, str):
            segmentation = json.loads(segmentation)
        return _segmentation_mask(segmentation, height, width, name)
    raise DataError(f"{name}: neither a mask nor a segmentation")


def expand_objects_column(dataset: Dataset, where: str, image_column: str = "image") -> Dataset:
    """One row per object of an ``objects`` column (see the module docstring); problems reported at once."""
    if image_column not in dataset.column_names:
        raise DataError(f"{where}: image_column={image_column!r} not found; columns found: {dataset.column_names}")
    if isinstance(dataset.features[image_column], Image):
        dataset = dataset.cast_column(image_column, Image(decode=False))
    elif not (isinstance(dataset.features[image_column], Value)):
        raise DataError(f"{where}: column {image_column!r} holds {dataset.features[image_column]}, not images")
    category_key, names = _category_names(dataset.features["objects"])
    rows = _Rows()
    problems = rows.problems
    for row, example in enumerate(dataset.select_columns([image_column, "objects"])):
        value = example[image_column]
        value = {"path": value, "bytes": None} if isinstance(value, str) else value
        try:
            with open_image(value) as image:
                width, height = image.size
        except DataError as err:
            problems.append(f"{where}: row {row}: {err}")
            continue
        for index, obj in enumerate(_as_object_list(example["objects"])):
            name = f"{where}: row {row} object {index}"
            category = obj.get(category_key, obj.get("category_id"))
            if names is not None and category is not None and not 0 <= int(category) < len(names):
                problems.append(f"{name}: unknown category {category} ({len(names)} categories)")
                continue
            if obj.get("bbox") is not None and _outside(obj["bbox"], height, width):
                problems.append(f"{name}: bbox {list(obj['bbox'])} lies outside its {width}x{height} image")
                continue
            label = names[int(category)] if names is not None and category is not None else category
            rows.add_checked(name, lambda: _object_mask(obj, height, width, name), value, row, label)
    return rows.dataset(where, len(dataset))


# ----------------------------------------------------------------------------- one row per image

def is_instance_set(dataset: Dataset | None) -> bool:
    """Whether ``dataset`` holds one row per object (an instance source: ``image_id`` and ``category`` columns)."""
    return dataset is not None and IMAGE_ID_COLUMN in dataset.column_names and CATEGORY_COLUMN in dataset.column_names


def group_objects(dataset: Dataset) -> Dataset:
    """One row per image from an instance set's object rows: ``image``, ``label`` (the list of its objects'
    masks), ``category`` (their names) and ``image_id``; images in order of first appearance."""
    from datasets import List

    columns = dataset.select_columns(["image", "label", IMAGE_ID_COLUMN, CATEGORY_COLUMN]).to_dict()
    order: dict[int, int] = {}
    images, labels, categories = [], [], []
    for image, label, image_id, category in zip(columns["image"], columns["label"], columns[IMAGE_ID_COLUMN],
                                                columns[CATEGORY_COLUMN]):
        if image_id not in order:
            order[image_id] = len(images)
            images.append(image)
            labels.append([])
            categories.append([])
        labels[order[image_id]].append(label)
        categories[order[image_id]].append(category)
    features = Features({"image": Image(decode=False), "label": List(Image(decode=False)),
                         IMAGE_ID_COLUMN: Value("int64"), CATEGORY_COLUMN: List(Value("string"))})
    return Dataset.from_dict({"image": images, "label": labels, IMAGE_ID_COLUMN: list(order),
                              CATEGORY_COLUMN: categories}, features=features)
