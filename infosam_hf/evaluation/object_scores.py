"""Scores of an instance set's objects: over objects, over images (each image the mean of its objects) and per
category."""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

import numpy as np

__all__ = ["OBJECT_SCORE_KEYS", "ObjectScores", "category_names_of"]

OBJECT_SCORE_KEYS = ("iou", "dice")  # per-object scores also averaged per image and per category


def category_names_of(batches: Any) -> list[str] | None:
    """The category names of the instance set a dataloader (or a progress bar around one) reads, else None."""
    from ..data.splits import sam_transform_of

    dataset = getattr(getattr(batches, "iterable", batches), "dataset", None)
    return getattr(sam_transform_of(dataset), "category_names", None)


def _key_name(name: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", name).strip("_") or "unnamed"


class ObjectScores:
    """Collects (image id, category index, iou, dice) per object row; :meth:`compute` gives ``image_<score>``
    (mean over images of each image's object mean) and ``<score>_cat_<name>`` (mean over that category's
    objects, when there are several categories). The mean over objects is the ordinary per-row score."""

    def __init__(self, category_names: list[str]):
        self.category_names = list(category_names)
        self.rows: list[np.ndarray] = []

    def add(self, rows: np.ndarray) -> None:
        """rows (N, 2 + len(OBJECT_SCORE_KEYS)): image id, category index, then the scores."""
        self.rows.append(np.asarray(rows, dtype=np.float64).reshape(-1, 2 + len(OBJECT_SCORE_KEYS)))

    def compute(self, keys: tuple[str, ...] = OBJECT_SCORE_KEYS) -> dict[str, float]:
        if not self.rows:
            return {}
        rows = np.concatenate(self.rows)
        out: dict[str, float] = {}
        per_image: dict[int, list[np.ndarray]] = defaultdict(list)
        for row in rows:
            per_image[int(row[0])].append(row[2:])
        image_means = np.stack([np.mean(scores, axis=0) for scores in per_image.values()])
        for i, key in enumerate(OBJECT_SCORE_KEYS):
            if key in keys:
                out[f"image_{key}"] = float(image_means[:, i].mean())
        out["num_objects"] = float(len(rows))
        out["num_object_images"] = float(len(per_image))
        if len(self.category_names) > 1:
            for index, name in enumerate(self.category_names):
                chosen = rows[rows[:, 1] == index]
                for i, key in enumerate(OBJECT_SCORE_KEYS):
                    if key in keys and len(chosen):
                        out[f"{key}_cat_{_key_name(name)}"] = float(chosen[:, 2 + i].mean())
        return out
