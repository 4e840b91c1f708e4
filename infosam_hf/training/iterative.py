"""Iterative prompting in training (``iterative_rounds: R``), as SAM, RITM and micro-sam train.

Per step the first prompt is the batch's usual one (``train_prompt``: box, point, or ``mixed`` with
``prompt_point_prob``). Then R rounds each add one corrective click per example -- placed by
:func:`~infosam_hf.evaluation.clicks.next_click` in the larger error region of the previous prediction,
at its interior -- and feed the previous low-resolution logits back as SAM's mask prompt
(``input_masks``). The image encoder runs once per step (student and teacher); each round runs only the
prompt encoder and mask decoder on the stored embeddings. The teacher follows the same prompts (the
student's clicks and mask prompt), so InfoSAM's relation compares like with like. The loss is the mean
over the R + 1 rounds (micro-sam averages over its sub-iterations too).

Gradients: every round's loss reaches the shared image embeddings (as micro-sam, whose encoder also runs
once per batch). The mask prompt is detached between rounds (as SAM-style fine-tuning code such as
``lightning-sam`` does; micro-sam keeps the graph): a round learns to correct the previous mask, not to
change it. Click placement is deterministic (distance-transform maximum), so no random numbers are drawn
and resuming is bit-exact.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ..data.collator import PAD_POINT_LABEL
from ..evaluation.loop import upsample_logits
from ..evaluation.clicks import next_click

if TYPE_CHECKING:
    from .trainer import InfoSAMTrainer

__all__ = ["add_corrective_clicks", "check_iterative_support", "iterative_rounds_loss"]


def check_iterative_support(rounds: int, num_labels: int, sam2: bool) -> None:
    """Raise a one-line error when ``iterative_rounds`` cannot apply to this model."""
    if rounds and num_labels > 1:
        raise ValueError("iterative_rounds: corrective clicks need a binary (prompted) model, not a multi-class one")
    if rounds and sam2:
        raise ValueError("iterative_rounds is SAM-only for now (SAM 2's decoder also reads high-resolution features)")


def add_corrective_clicks(logits: torch.Tensor, labels: torch.Tensor, sizes: torch.Tensor | None,
                          points: torch.Tensor | None, point_labels: torch.Tensor | None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Append one corrective click per row to ``points`` (B, 1, n, 2) / ``point_labels`` (B, 1, n).

    ``logits`` (B, 1, S, S) and ``labels`` (B, S, S) are at the input resolution; ``sizes`` (B, 2) the
    unpadded content (h, w) of each row. A row already perfect (or with nothing to click) gets a padding
    point, which SAM's prompt encoder treats as "not a point"."""
    rows = logits.shape[0]
    new_points = torch.zeros(rows, 1, 1, 2, dtype=torch.float32)
    new_labels = torch.full((rows, 1, 1), PAD_POINT_LABEL, dtype=torch.long)
    preds = (logits[:, 0] > 0).cpu().numpy()
    gts = (labels > 0.5).cpu().numpy()
    for i in range(rows):
        h, w = (int(v) for v in sizes[i].tolist()) if sizes is not None else gts[i].shape
        click = next_click(preds[i, :h, :w], gts[i, :h, :w])
        if click is not None:
            new_points[i, 0, 0] = torch.tensor(click[:2], dtype=torch.float32)
            new_labels[i, 0, 0] = int(click[2])
    new_points, new_labels = new_points.to(logits.device), new_labels.to(logits.device)
    if points is None:
        return new_points, new_labels
    return torch.cat([points, new_points.to(points.dtype)], dim=2), torch.cat([point_labels, new_labels], dim=2)


def _embedding_grid(flat: torch.Tensor) -> torch.Tensor:
    """Captured (B, hw, C) image embeddings back to SAM's (B, C, h, w) square grid."""
    side = math.isqrt(flat.shape[1])
    if side * side != flat.shape[1]:
        raise ValueError("iterative_rounds needs a square image-embedding grid")
    return flat.transpose(1, 2).reshape(flat.shape[0], flat.shape[2], side, side)


def iterative_rounds_loss(trainer: InfoSAMTrainer, model: nn.Module, prompts: dict[str, torch.Tensor],
                          labels: torch.Tensor, sizes: torch.Tensor | None, outputs: Any,
                          student: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor] | None,
                          first_loss: torch.Tensor) -> torch.Tensor:
    """The mean loss over the first pass (``first_loss``, ``outputs``) and ``trainer.args.iterative_rounds``
    corrective rounds; ``student`` / ``teacher`` are the first pass's captured features (teacher None
    without the information losses)."""
    args = trainer.args
    embeddings = _embedding_grid(student["image_embeds"])
    teacher_embeddings = _embedding_grid(teacher["image_embeds"]) if teacher is not None else None
    boxes = {"input_boxes": prompts["input_boxes"]} if "input_boxes" in prompts else {}
    points, point_labels = prompts.get("input_points"), prompts.get("input_labels")
    total = first_loss
    for _ in range(args.iterative_rounds):
        mask_prompt = outputs.pred_masks[:, 0].detach()  # (B, 1, h, w) low-res logits
        points, point_labels = add_corrective_clicks(upsample_logits(mask_prompt, labels.shape[-2:]), labels, sizes,
                                                     points, point_labels)
        kwargs = {**boxes, "input_points": points, "input_labels": point_labels, "input_masks": mask_prompt}
        with trainer.student_capture.record() as student_round:
            outputs = model(image_embeddings=embeddings, multimask_output=False, **kwargs)
        logits = upsample_logits(outputs.pred_masks, labels.shape[-2:])
        total = total + trainer.segmentation_loss(logits, labels)
        if teacher_embeddings is not None:
            with torch.no_grad(), trainer._teacher_mode(model) as frozen, \
                    trainer.teacher_capture.record() as teacher_round:
                frozen(image_embeddings=teacher_embeddings, multimask_output=False, **kwargs)
            teacher_round["image_embeds"] = teacher["image_embeds"]
            student_round["image_embeds"] = student["image_embeds"]
            loss_r, loss_d = trainer.information_losses(teacher_round, student_round)
            info = args.lambda_r * loss_r + args.lambda_d * loss_d
            total = total + torch.where(torch.isfinite(info), info, torch.zeros_like(info))
    return total / (args.iterative_rounds + 1)
