"""``InfoSAMConfig``: ``TrainingArguments`` plus the InfoSAM loss and prompt settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from transformers import TrainingArguments

from ..choices import check_choices
from ..evaluation.gsam_metrics import AbsentClassMode
from ..evaluation.loop import MetricSet
from ..evaluation.metrics import MetricInput
from ..losses import BceForm, SegLoss
from .host import fit_dataloader_to_host
from .protocol import ProtocolName
from .teacher_cache import CacheDtype, TeacherCacheMode

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
    seg_loss: SegLoss = field(
        default="structure",
        metadata={"help": "Binary segmentation loss: 'structure' (InfoSAM's wBCE + wIoU) or 'bce' (G-SAM's "
                          "BCE-with-logits)."})
    lr_scheduler_per_epoch: bool = field(
        default=False,
        metadata={"help": "Step lr_scheduler_type once per epoch over num_train_epochs instead of per optimizer "
                          "step (G-SAM: cosine over 200 epochs, eta_min 0, stepped per epoch)."})
    lambda_object_score: float = field(
        default=0.0, metadata={"help": "SAM 2 only: weight of a BCE loss on the object-score logit (target: the "
                                       "mask is not empty); 0 leaves the object-score head untrained."})
    iterative_rounds: int = field(
        default=0, metadata={"help": "Iterative prompting: after each step's first prompt, R rounds that each add a "
                                     "corrective click from the error region and feed the previous logits back as "
                                     "the mask prompt; the loss averages all rounds (0: off)."})
    structure_loss_bce: BceForm = field(
        default="weighted",
        metadata={"help": "'weighted' (published structure loss) or 'unweighted' (official code's BCE)."})
    prompt_point_prob: float = field(
        default=0.5, metadata={"help": "Probability that a 'mixed' training batch uses a point (else a box)."})
    metric_input: MetricInput = field(
        default="probability",
        metadata={"help": "'probability' or 'official_logits' (the official evaluation's conventions)."})
    metric_set: MetricSet = field(
        default="paper", metadata={"help": "'paper' (IoU, Dice, S, E, wF, MAE, mIoU) or 'iou' (IoU, Dice, mIoU only: fast)."})
    eval_clicks: int = field(
        default=0, metadata={"help": "Also score each evaluation (the eval split during training, the test split at the "
                                     "end) click by click as `infosam evaluate --clicks N` does: IoU/Dice after each "
                                     "of N simulated corrective clicks and NoC@85/90, logged as <split>_click_iou_<k>, "
                                     "<split>_noc@85, ...; the test scores also go to click_results.json and "
                                     "click_curve.png (0: off)."})
    eval_before_training: bool = field(
        default=False,
        metadata={"help": "Score the untrained model and the fill-the-box baseline on the test split first."})
    info_diagnostics: bool = field(
        default=True,
        metadata={"help": "Log relation diagnostics (info/...) beside loss_r and loss_d and warn once if the "
                          "teacher's relations collapse; off costs nothing."})
    protocol: ProtocolName = field(
        default="default",
        metadata={"help": "'default' (the test split never picks a checkpoint), 'official' (the official InfoSAM "
                          "scripts: train on all of train, save the last five epochs to output_dir/epoch_<e>, score each "
                          "on the test split, report every epoch and the best on test, labelled as such; needs "
                          "eval_strategy: no and no load_best_model_at_end) or 'gsam' (G-SAM's train.py / test.py: "
                          "evaluation drops its last partial batch and also reports test.py's soft per-batch IoU; "
                          "needs eval_resolution: input)."})
    gsam_absent_class_iou: AbsentClassMode = field(
        default="skip", metadata={"help": "protocol gsam: 'skip' leaves a class absent from prediction and label out "
                                          "of the mIoU; 'minus_one' also reports G-SAM train.py's mIoU that counts "
                                          "it as -1 (gsam_miou_absent_minus_one)."})
    protocol_epochs: list[int] | None = field(
        default=None, metadata={"help": "protocol official: the epochs to save and score (default: the last five)."})
    report_metrics: list[str] | None = field(
        default=None,
        metadata={"help": "Columns that lead the results tables (the paper table's, e.g. [iou, dice] or [s_measure, "
                          "e_measure, weighted_f_measure]); the first also picks the best-on-test epoch of protocol "
                          "official."})
    teacher_cache: TeacherCacheMode = field(
        default="auto",
        metadata={"help": "Teacher image-embedding cache: 'auto' (on exactly when the encoder input is the same every "
                          "epoch: no pixel-changing augment, no random_crop), 'on' (fail if invalid) or 'off'."})
    teacher_cache_dir: str | None = field(
        default=None, metadata={"help": "Where the cache lives (default $INFOSAM_TEACHER_CACHE_DIR, else "
                                        "$HF_HOME/infosam_hf/teacher_cache)."})
    teacher_cache_dtype: CacheDtype = field(
        default="float32", metadata={"help": "Cache storage: float32 (exact), float16 or bfloat16 (half the disk)."})
    teacher_cache_precompute: bool = field(
        default=False, metadata={"help": "Fill the cache in one pass before training (default: lazily, epoch 1)."})
    share_frozen_prefix: bool = field(
        default=True,
        metadata={"help": "Teacher reuses the student's output of the encoder stages the tuner leaves untouched "
                          "(sam_adapter: patch embedding + blocks 0-1). Same losses, less compute."})
    info_loss_batch: Literal["local", "global"] = field(
        default="local",
        metadata={"help": "Gram matrices over the per-device batch ('local') or over the batch of every process "
                          "('global', gathered with gradient)."})
    info_loss_objects: Literal["all", "one_per_image"] = field(
        default="all",
        metadata={"help": "objects_per_image > 1: relations of every object of the batch in the Gram matrices "
                          "('all', B·K of them), or of the first object of each image ('one_per_image', B)."})
    overwrite_output_dir: bool = field(
        default=False, metadata={"help": "Train into an output_dir that holds an earlier run (its adapter and "
                                         "checkpoints are replaced); without it such a run stops with one line."})
    resume_model_only: bool = field(
        default=False, metadata={"help": "Resume from a checkpoint without optimizer.pt / scheduler.pt: the weights "
                                         "resume, the optimizer and schedule restart (else an error)."})
    remove_unused_columns: bool = field(default=False, metadata={"help": "Keep the transform's columns."})
    ddp_find_unused_parameters: bool | None = field(
        default=False, metadata={"help": "Every trained parameter is used every step."})
    label_names: list[str] | None = field(default_factory=lambda: ["labels"],
                                          metadata={"help": "The batch key holding masks."})
    logging_dir: str | None = field(
        default=None,
        metadata={"help": "TensorBoard folder (default: output_dir/runs/DATE_HOST). Transformers 5 dropped this "
                          "TrainingArguments key (its TENSORBOARD_LOGGING_DIR variable replaced it); here it is kept."})

    def __post_init__(self):
        # non-reentrant: gradients reach adapters even though the frozen patch embedding's output needs none.
        # transformers >= 5.2x names it activation_checkpointing (gradient_checkpointing is its deprecated alias)
        name = "activation_checkpointing" if "activation_checkpointing" in self.__dataclass_fields__ else \
            "gradient_checkpointing"
        if (getattr(self, name) or self.gradient_checkpointing) and getattr(self, f"{name}_kwargs") is None \
                and self.gradient_checkpointing_kwargs is None:
            setattr(self, f"{name}_kwargs", {"use_reentrant": False})
        super().__post_init__()
        fit_dataloader_to_host(self)
        check_choices(self)
        if self.lr_scheduler_per_epoch and self.warmup_steps:
            raise ValueError("lr_scheduler_per_epoch counts in epochs: set warmup_steps to 0")
        if not 0.0 <= self.prompt_point_prob <= 1.0:
            raise ValueError(f"prompt_point_prob must be in [0, 1], got {self.prompt_point_prob}")
        if self.protocol == "official" and (self.eval_strategy != "no" or self.load_best_model_at_end):
            raise ValueError("protocol=official trains on all of train and scores saved epochs on the test split: set "
                             "eval_strategy: no and load_best_model_at_end: false")
        if self.gsam_absent_class_iou != "skip" and self.protocol != "gsam":
            raise ValueError("gsam_absent_class_iou is an option of protocol: gsam")
        if self.protocol_epochs and self.protocol != "official":
            raise ValueError("protocol_epochs is an option of protocol: official")
        if self.lambda_r < 0 or self.lambda_d < 0 or self.lambda_object_score < 0:
            raise ValueError("lambda_r, lambda_d and lambda_object_score must be >= 0")
        if self.eval_clicks < 0:
            raise ValueError(f"eval_clicks must be >= 0, got {self.eval_clicks}")
        if self.iterative_rounds < 0:
            raise ValueError(f"iterative_rounds must be >= 0, got {self.iterative_rounds}")
        for key in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        _check_report_to(self.report_to)


def _check_report_to(report_to: list[str]) -> None:
    """Each ``report_to`` integration must be known and installed (else Trainer fails after the model loads)."""
    from transformers.integrations.integration_utils import (INTEGRATION_TO_CALLBACK,
                                                             get_available_reporting_integrations)

    available = None
    for name in report_to:
        if name not in INTEGRATION_TO_CALLBACK:
            raise ValueError(f"report_to={name!r} is not known; use one of none, all, {', '.join(INTEGRATION_TO_CALLBACK)}")
        available = get_available_reporting_integrations() if available is None else available
        if name not in available:
            raise ValueError(f"report_to={name!r}: {name} is not installed (pip install {name}), "
                             "or set report_to: none / tensorboard")
