"""Class names of a multi-class dataset: the recipe's ``class_names``, a ``classes.txt`` beside the data, or a
``ClassLabel`` feature; used in result tables, model cards, overlays and ``predict``'s outputs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["CLASSES_FILE", "BACKGROUND_NAMES", "class_label", "is_background", "parse_classes_file",
           "resolve_class_names"]

CLASSES_FILE = "classes.txt"
BACKGROUND_NAMES = ("background", "bg", "_background_", "void", "unlabelled", "unlabeled")
SYNTHETIC_CLASS_NAMES = ("background", "star", "triangle", "cross", "ring")


def parse_classes_file(path: str | Path) -> list[str]:
    """``classes.txt``: one class a line, in id order, as ``name`` or ``id<TAB or space>name`` (ids 0, 1, 2 ...);
    blank lines and ``#`` comments are skipped."""
    names: list[str] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        head, _, rest = line.replace("\t", " ").partition(" ")
        if head.isdigit() and rest.strip():
            if int(head) != len(names):
                raise ValueError(f"{path}:{number}: class id {head} out of order (expected {len(names)})")
            line = rest.strip()
        names.append(line)
    return names


def _from_features(dataset: Any) -> list[str] | None:
    """The names of a ``ClassLabel`` feature of a ``datasets`` split (a mask column's, or a sequence of one)."""
    features = getattr(dataset, "features", None) or {}
    for feature in features.values():
        feature = getattr(feature, "feature", feature)  # Sequence(ClassLabel)
        names = getattr(feature, "names", None)
        if type(feature).__name__ == "ClassLabel" and names:
            return list(names)
    return None


def resolve_class_names(data_args: Any, dataset: Any = None) -> list[str] | None:
    """The names of classes ``0 .. num_labels - 1`` (None for binary data or when nothing names them).

    From the recipe's ``class_names``, else ``classes.txt`` in the dataset folder, else a ``ClassLabel``
    feature of ``dataset``; extra trailing names (e.g. CamVid's ``Unlabelled/void``, its ignore index) are
    dropped, too few is an error naming the source."""
    num_labels = int(getattr(data_args, "num_labels", 1) or 1)
    if num_labels < 2:
        return None
    source, names = "class_names", getattr(data_args, "class_names", None)
    folder = Path(str(data_args.dataset_name_or_path))
    if not names and (folder / CLASSES_FILE).is_file():
        source, names = str(folder / CLASSES_FILE), parse_classes_file(folder / CLASSES_FILE)
    if not names and data_args.dataset_name_or_path == "synthetic":
        names = list(SYNTHETIC_CLASS_NAMES)
    if not names and dataset is not None:
        names = _from_features(dataset)
    if not names:
        return None
    if len(names) < num_labels:
        raise ValueError(f"{source}: {len(names)} class names for num_labels={num_labels}")
    return [str(name) for name in names[:num_labels]]


def class_label(index: int, names: list[str] | None) -> str:
    """``"3 Road"`` with names, else ``"class 3"``."""
    return f"{index} {names[index]}" if names and index < len(names) else f"class {index}"


def is_background(names: list[str] | None) -> bool:
    """Whether class 0 is background (not tinted) rather than a real class such as CamVid's ``Sky``."""
    return not names or names[0].strip().lower() in BACKGROUND_NAMES
