"""``InfoSAMConfig``: ``TrainingArguments`` plus the InfoSAM loss and prompt settings."""

from __future__ import annotations

from dataclasses import dataclass, field

from transformers import TrainingArguments

__all__ = ["InfoSAMConfig"]


@dataclass
class InfoSAMConfig(TrainingArguments):
    """Training configuration of :class:`~infosam_hf.InfoSAMTrainer`.

    Adds the loss weights ``lambda_r`` (relation compression) and ``lambda_d`` (relation
    distillation), the structure-loss BCE form, the prompt mix and the evaluation metric input. The
    defaults that DDP needs are set: ``remove_unused_columns=False``,
    ``ddp_find_unused_parameters=False`` and ``label_names=["labels"]``.
    """

    lambda_r: float = field(default=1.0, metadata={"help": "Weight λ1 of loss_r (relation compression)."})
    lambda_d: float = field(default=0.5, metadata={"help": "Weight λ2 of loss_d (relation distillation)."})
    lambda_object_score: float = field(
        default=0.0, metadata={"help": "SAM 2 only: weight of a BCE loss on the object-score logit (target: the "
                                       "mask is not empty); 0 leaves the object-score head untrained."})
    structure_loss_bce: str = field(
        default="weighted",
        metadata={"help": "'weighted' (published structure loss) or 'unweighted' (official code's BCE)."})
    prompt_point_prob: float = field(
        default=0.5, metadata={"help": "Probability that a 'mixed' training batch uses a point (else a box)."})
    metric_input: str = field(
        default="probability",
        metadata={"help": "'probability' or 'official_logits' (the official evaluation's conventions)."})
    metric_set: str = field(
        default="paper", metadata={"help": "'paper' (IoU, Dice, S, E, wF, MAE, mIoU) or 'iou' (IoU, Dice, mIoU only: fast)."})
    eval_before_training: bool = field(
        default=False,
        metadata={"help": "Score the untrained model and the fill-the-box baseline on the test split first."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the transform's columns."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Every trained parameter is used every step."})
    label_names: list[str] | None = field(default_factory=lambda: ["labels"],
                                          metadata={"help": "The batch key holding masks."})

    def __post_init__(self):
        super().__post_init__()
        if self.structure_loss_bce not in ("weighted", "unweighted"):
            raise ValueError(f"structure_loss_bce must be 'weighted' or 'unweighted', got {self.structure_loss_bce!r}")
        if self.metric_input not in ("probability", "official_logits"):
            raise ValueError(f"metric_input must be 'probability' or 'official_logits', got {self.metric_input!r}")
        if self.metric_set not in ("paper", "iou"):
            raise ValueError(f"metric_set must be 'paper' or 'iou', got {self.metric_set!r}")
        if not 0.0 <= self.prompt_point_prob <= 1.0:
            raise ValueError(f"prompt_point_prob must be in [0, 1], got {self.prompt_point_prob}")
        if self.lambda_r < 0 or self.lambda_d < 0 or self.lambda_object_score < 0:
            raise ValueError("lambda_r, lambda_d and lambda_object_score must be >= 0")
