"""Batch collation: SAM's ``input_boxes`` / ``input_points``, chosen per batch in training, per example in evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["SamPromptCollator", "PAD_POINT_LABEL", "INDEX_KEY"]

PAD_POINT_LABEL = -10  # SAM's prompt encoder ignores points with this label
INDEX_KEY = "example_index"  # each example's dataset index: a list of ints, keys the teacher-embedding cache


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
        batch: dict[str, Any] = {
            key: torch.stack([ex[key] for ex in examples])
            for key in ("pixel_values", "labels", "original_sizes", "reshaped_input_sizes")
        }
        if INDEX_KEY in examples[0]:
            batch[INDEX_KEY] = [int(ex[INDEX_KEY]) for ex in examples]
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

    @staticmethod
    def _add_boxes(batch: dict[str, Any], examples: list[dict[str, Any]]) -> None:
        batch["input_boxes"] = torch.stack([ex["prompt_box"] for ex in examples]).unsqueeze(1)

    @staticmethod
    def _add_points(batch: dict[str, Any], examples: list[dict[str, Any]]) -> None:
        count = max(len(ex["prompt_point_labels"]) for ex in examples)
        points = torch.zeros(len(examples), 1, count, 2)
        labels = torch.full((len(examples), 1, count), PAD_POINT_LABEL, dtype=torch.long)
        for row, ex in enumerate(examples):
            n = len(ex["prompt_point_labels"])
            points[row, 0, :n] = ex["prompt_points"]
            labels[row, 0, :n] = ex["prompt_point_labels"]
        batch["input_points"], batch["input_labels"] = points, labels
