"""Batch collation: SAM's ``input_boxes`` / ``input_points``, chosen per batch in training, per example in evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["SamPromptCollator", "PAD_POINT_LABEL", "INDEX_KEY", "OBJECTS_VALID_KEY", "OBJECT_IMAGE_KEY",
           "OBJECT_CATEGORY_KEY"]

PAD_POINT_LABEL = -10  # SAM's prompt encoder ignores points with this label
INDEX_KEY = "example_index"  # each example's dataset index: a list of ints, keys the teacher-embedding cache
OBJECTS_VALID_KEY = "objects_valid"  # (B, K) bool: which of an image's K object slots hold an object (not padding)
OBJECT_IMAGE_KEY = "image_id"  # an instance set's object rows in evaluation: the image of each row (B,)
OBJECT_CATEGORY_KEY = "category"  # ... and its category index (B,)


@dataclass
class SamPromptCollator:
    """Stack transformed examples and turn their prompts into SAM prompt tensors.

    Training batches: ``mixed`` batches use points with probability ``prompt_point_prob`` and boxes
    otherwise (decided by the first example's keyed ``prompt_draw``, so the choice survives resuming). A
    box batch that contains an example with an empty mask falls back to points for the whole batch: the
    empty example gets its background point (label 0).

    Evaluation batches (examples with ``original_labels``) are prompted per example, so scores do not
    depend on the batch size: in a box batch, an example with an empty mask gets its background point
    and the others their boxes. Such a batch carries ``input_boxes`` and ``input_points`` for every row
    plus ``point_prompted`` (B,) saying which one each row uses (see
    :func:`infosam_hf.evaluation.loop.sam_logits`).
    """

    prompt_point_prob: float = 0.5

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        if "objects" in examples[0]:
            return self._collate_objects(examples)
        batch: dict[str, Any] = {
            key: torch.stack([ex[key] for ex in examples])
            for key in ("pixel_values", "labels", "original_sizes", "reshaped_input_sizes")
        }
        if INDEX_KEY in examples[0]:
            batch[INDEX_KEY] = [int(ex[INDEX_KEY]) for ex in examples]
        if OBJECT_IMAGE_KEY in examples[0]:
            for key in (OBJECT_IMAGE_KEY, OBJECT_CATEGORY_KEY):
                batch[key] = torch.tensor([int(ex[key]) for ex in examples])
        if "original_labels" in examples[0]:
            batch["original_labels"] = [ex["original_labels"] for ex in examples]
            if "prompt_box" in examples[0]:  # evaluation: each example's own box, whatever the batch uses
                batch["prompt_boxes"] = torch.stack([ex["prompt_box"] for ex in examples])
                batch["has_foreground"] = torch.tensor([ex["has_foreground"] for ex in examples])
        mode = examples[0]["prompt_mode"]
        point_prompted = [not ex["has_foreground"] for ex in examples]
        if "original_labels" in examples[0] and mode == "box" and any(point_prompted) and not all(point_prompted):
            batch["point_prompted"] = torch.tensor(point_prompted)  # both kinds: rows carry both, this picks
            self._add_boxes(batch, examples)
            self._add_points(batch, examples)
            return batch
        if mode == "mixed":
            draw = examples[0].get("prompt_draw")
            draw = float(torch.rand(())) if draw is None else draw
            mode = "point" if draw < self.prompt_point_prob else "box"
        if mode == "box" and any(point_prompted):
            mode = "point"
        if mode == "box":
            self._add_boxes(batch, examples)
        elif mode in ("point", "points"):
            self._add_points(batch, examples)
        return batch

    def _collate_objects(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        """Training examples with several objects (``objects_per_image``): (B, K, …) prompts and labels, K the
        batch's largest object count, padded slots marked False in ``objects_valid`` (B, K). The prompt kind is
        chosen per batch as for single objects, over every object of the batch."""
        count = max(len(ex["objects"]) for ex in examples)
        blank = {key: torch.zeros_like(value) if torch.is_tensor(value) else value
                 for key, value in examples[0]["objects"][0].items()}
        blank["prompt_point_labels"] = torch.zeros(0, dtype=torch.long)  # a padded slot has no point
        blank["prompt_points"] = torch.zeros(0, 2)
        rows = [ex["objects"] + [blank] * (count - len(ex["objects"])) for ex in examples]
        batch: dict[str, Any] = {key: torch.stack([ex[key] for ex in examples])
                                 for key in ("pixel_values", "original_sizes", "reshaped_input_sizes")}
        batch["labels"] = torch.stack([torch.stack([obj["labels"] for obj in row]) for row in rows])
        batch[OBJECTS_VALID_KEY] = torch.tensor([[k < len(ex["objects"]) for k in range(count)] for ex in examples])
        if INDEX_KEY in examples[0]:
            batch[INDEX_KEY] = [int(ex[INDEX_KEY]) for ex in examples]
        mode = examples[0]["prompt_mode"]
        if mode == "mixed":
            draw = examples[0]["objects"][0].get("prompt_draw")
            draw = float(torch.rand(())) if draw is None else draw
            mode = "point" if draw < self.prompt_point_prob else "box"
        if mode == "box" and not all(obj["has_foreground"] for ex in examples for obj in ex["objects"]):
            mode = "point"
        if mode == "box":
            batch["input_boxes"] = torch.stack([torch.stack([obj["prompt_box"] for obj in row]) for row in rows])
        elif mode in ("point", "points"):
            self._add_points(batch, rows)
        return batch

    @staticmethod
    def _add_boxes(batch: dict[str, Any], examples: list[dict[str, Any]]) -> None:
        batch["input_boxes"] = torch.stack([ex["prompt_box"] for ex in examples]).unsqueeze(1)

    @staticmethod
    def _add_points(batch: dict[str, Any], examples: list[dict[str, Any]] | list[list[dict[str, Any]]]) -> None:
        """(B, 1, N, 2) points of single examples, or (B, K, N, 2) of rows of K objects; padded with
        :data:`PAD_POINT_LABEL`."""
        rows = [row if isinstance(row, list) else [row] for row in examples]
        count = max(len(obj["prompt_point_labels"]) for row in rows for obj in row)
        points = torch.zeros(len(rows), len(rows[0]), count, 2)
        labels = torch.full((len(rows), len(rows[0]), count), PAD_POINT_LABEL, dtype=torch.long)
        for row, objects in enumerate(rows):
            for k, obj in enumerate(objects):
                n = len(obj["prompt_point_labels"])
                points[row, k, :n] = obj["prompt_points"]
                labels[row, k, :n] = obj["prompt_point_labels"]
        batch["input_points"], batch["input_labels"] = points, labels
