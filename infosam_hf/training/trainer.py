"""``InfoSAMTrainer``: a ``Trainer`` whose loss is structure loss + λ1·loss_r + λ2·loss_d."""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Trainer, TrainerCallback
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import EvalLoopOutput

from ..data.collator import SamPromptCollator
from ..evaluation.loop import PROMPT_KEYS, evaluate_segmentation, make_metrics, sam_logits, upsample_logits
from ..evaluation.metrics import SegmentationMetrics
from ..losses import InfoLossError, compression_loss, distillation_loss, structure_loss
from ..models.capture import SamFeatureCapture
from ..models.sam import get_relation_module
from ..models.sam2 import is_sam2
from .config import InfoSAMConfig

logger = logging.getLogger(__name__)

__all__ = ["InfoSAMTrainer", "META_KEYS"]

META_KEYS = ("original_sizes", "reshaped_input_sizes", "original_labels", "prompt_boxes", "has_foreground")
LOSS_COMPONENTS = ("loss_seg", "loss_r", "loss_d", "loss_obj")


class _TransformEpochCallback(TrainerCallback):
    """Tell the train transform which epoch starts, so its keyed per-example randomness changes per epoch."""

    def __init__(self, dataset, args):
        transform = getattr(dataset, "format", {}).get("format_kwargs", {}).get("transform") if dataset else None
        self.transform = transform if hasattr(transform, "set_epoch") else None
        if self.transform is not None and args.dataloader_num_workers > 0 and args.dataloader_persistent_workers:
            # persistent workers keep their own copy of the transform: set_epoch would not reach them
            warnings.warn("dataloader_persistent_workers: per-epoch keyed data randomness falls back to each "
                          "worker's torch RNG, so resuming from a checkpoint is not bit-exact", stacklevel=3)
            self.transform.keyed = False
            self.transform = None

    def on_epoch_begin(self, args, state, control, **kwargs):
        if self.transform is not None:
            self.transform.set_epoch(math.floor((state.epoch or 0.0) + 1e-6))


class InfoSAMTrainer(Trainer):
    """Fine-tunes a PEFT-wrapped ``SamModel`` (the student) with InfoSAM's relation distillation.

    The teacher is the same model with its adapters disabled (no weight copy) unless a separate frozen
    ``teacher_model`` is given. The relation module (``model.relation_module``) is shared by both passes.

    Args:
        model: a ``PeftModel`` around a ``SamModel`` that carries a relation module.
        args: an :class:`InfoSAMConfig`.
        teacher_model: optional separate frozen ``SamModel``; moved to the accelerator's device, set to
            ``eval()`` and frozen, never passed through ``accelerator.prepare``.
        **kwargs: passed to ``Trainer`` (datasets, callbacks, ``processing_class`` …). Pass the image
            processor as ``processing_class``, not ``SamProcessor``.
    """

    # compute_loss returns a per-batch mean, not a sum over num_items_in_batch: Trainer divides by GA.
    loss_is_scaled_for_ga = False

    def __init__(self, model: nn.Module, args: InfoSAMConfig, teacher_model: nn.Module | None = None,
                 data_collator=None, num_labels: int = 1, ignore_index: int = 255, **kwargs):
        if not isinstance(args, InfoSAMConfig):
            raise TypeError(f"args must be an InfoSAMConfig, got {type(args).__name__}")
        if data_collator is None:
            data_collator = SamPromptCollator(prompt_point_prob=args.prompt_point_prob)
        self.use_info_losses = args.lambda_r > 0 or args.lambda_d > 0
        if not self.use_info_losses:
            # Plain PEFT: the relation module is unused, so keep it out of the optimizer and of DDP.
            get_relation_module(model).requires_grad_(False)
        if args.lambda_object_score > 0 and not is_sam2(model):
            raise ValueError("lambda_object_score: only SAM 2 has an object-score head")
        # No loss reaches SAM's IoU-prediction head (one mask, multimask_output=False) nor, unless
        # lambda_object_score > 0, SAM 2's object-score head: freeze them, as the IoU head stays unchanged in
        # the official training too, so DDP needs no find_unused_parameters.
        frozen_heads = ("iou_prediction_head",) + (("pred_obj_score_head",) if args.lambda_object_score == 0 else ())
        for name, param in model.named_parameters():
            if any(head in name for head in frozen_heads):
                param.requires_grad_(False)
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)
        self.add_callback(_TransformEpochCallback(self.train_dataset, args))
        self.relation_module = get_relation_module(self.model)  # shared by the teacher and student passes
        # Leaving disable_adapter() sets requires_grad on every modules_to_save copy; these must stay frozen.
        self._frozen_copies = [p for n, p in self.model.named_parameters()
                               if "modules_to_save" in n and not p.requires_grad]
        self.student_capture = SamFeatureCapture(self.model)
        self.teacher_model = teacher_model
        if teacher_model is not None:
            teacher_model.to(self.accelerator.device).eval().requires_grad_(False)
            self.teacher_capture = SamFeatureCapture(teacher_model)
        else:
            self.teacher_capture = self.student_capture
        self._component_sums: dict[str, torch.Tensor] = {}
        self._component_steps = 0
        self._warned_info_skip = False
        self.num_labels = num_labels
        self.ignore_index = ignore_index

    # ----------------------------------------------------------------- loss
    @staticmethod
    def _prompt_kwargs(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {key: inputs[key] for key in PROMPT_KEYS if key in inputs}

    @torch.no_grad()
    def teacher_features(self, model: nn.Module, inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        """Neck output and first mask token of the frozen teacher for this batch."""
        prompts = self._prompt_kwargs(inputs)
        if self.teacher_model is not None:
            with self.teacher_capture.record() as features:
                self.teacher_model(pixel_values=inputs["pixel_values"], multimask_output=False, **prompts)
            return features
        student = self.accelerator.unwrap_model(model)
        was_training = student.training
        with student.disable_adapter(), self.teacher_capture.record() as features:
            student.eval()  # the pre-trained SAM: no dropout
            student(pixel_values=inputs["pixel_values"], multimask_output=False, **prompts)
        for param in self._frozen_copies:
            param.requires_grad_(False)
        student.train(was_training)
        return features

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None):
        """loss = structure_loss + λ1·loss_r + λ2·loss_d (the teacher pass is skipped in evaluation)."""
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        for key in META_KEYS:
            inputs.pop(key, None)
        with self.student_capture.record() as student:
            outputs = model(pixel_values=inputs["pixel_values"], multimask_output=False,
                            **self._prompt_kwargs(inputs))
        logits = upsample_logits(outputs.pred_masks, labels.shape[-2:])
        loss_seg = structure_loss(logits, labels.unsqueeze(1).to(logits.dtype), bce=self.args.structure_loss_bce)
        extra: dict[str, torch.Tensor] = {}
        if self.args.lambda_object_score > 0:  # SAM 2: is there an object at all?
            present = (labels.flatten(1) > 0).any(1).to(outputs.object_score_logits.dtype)
            extra["loss_obj"] = F.binary_cross_entropy_with_logits(outputs.object_score_logits[:, 0, 0], present)
        base = loss_seg + self.args.lambda_object_score * extra["loss_obj"] if extra else loss_seg
        loss = base
        if model.training and self.use_info_losses:
            teacher = self.teacher_features(model, inputs)
            relation = self.relation_module
            relation_t = relation(teacher["image_embeds"], teacher["mask_token"])
            relation_s = relation(student["image_embeds"], student["mask_token"])
            try:
                loss_r = compression_loss(teacher["image_embeds"], teacher["mask_token"], relation_t)
                loss_d = distillation_loss(relation_t, relation_s)
                loss = base + self.args.lambda_r * loss_r + self.args.lambda_d * loss_d
            except InfoLossError as err:
                if not self._warned_info_skip:
                    warnings.warn(f"Skipping the information losses for this step: {err}", stacklevel=2)
                    self._warned_info_skip = True
                loss_r = loss_d = torch.zeros((), device=loss_seg.device)
                # keep the relation module in the graph (zero gradient, finite even if the relations are
                # not) so DDP's reducer stays in step
                anchor = sum(p.sum() for p in relation.parameters() if p.requires_grad)
                loss = base + 0.0 * anchor
            self._accumulate({"loss_seg": loss_seg, "loss_r": loss_r, "loss_d": loss_d, **extra})
        elif model.training:
            self._accumulate({"loss_seg": loss_seg, **extra})
        if return_outputs:
            return loss, {"pred_masks": logits}
        return loss

    # -------------------------------------------------------------- logging
    def _accumulate(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            self._component_sums[name] = self._component_sums.get(name, 0.0) + value.detach().float()
        self._component_steps += 1

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``loss_seg``, ``loss_r`` and ``loss_d`` (averaged over the logging interval) to train logs."""
        if "loss" in logs and self._component_steps:
            for name in LOSS_COMPONENTS:
                if name in self._component_sums:
                    total = self._component_sums[name]
                    if self.args.world_size > 1:
                        total = nested_gather(total.reshape(1), self.args.parallel_mode).mean()
                    logs[name] = round(float(total) / self._component_steps, 6)
            self._component_sums.clear()
            self._component_steps = 0
        super().log(logs, start_time)

    # ----------------------------------------------------------- evaluation
    def new_metrics(self) -> SegmentationMetrics:
        """A fresh streamed metrics accumulator configured from ``args``."""
        return make_metrics(self.num_labels, self.ignore_index, self.args.metric_input, self.args.metric_set)

    def gather_for_metrics(self, rows: torch.Tensor) -> torch.Tensor:
        """Per-image rows from every process, without the samples repeated to even out batches."""
        return self.accelerator.gather_for_metrics(rows) if self.accelerator.num_processes > 1 else rows

    def evaluation_loop(self, dataloader, description: str, prediction_loss_only: bool | None = None,
                        ignore_keys: list[str] | None = None, metric_key_prefix: str = "eval") -> EvalLoopOutput:
        """Streamed evaluation: metrics at the original resolution, without the teacher or held masks."""
        model = self.model
        was_training = model.training
        model.eval()
        metrics = self.new_metrics()

        def predict(batch):
            batch = self._prepare_inputs(batch)
            return sam_logits(model, batch)

        results = evaluate_segmentation(predict, dataloader, metrics, self.args.structure_loss_bce,
                                        progress=not self.args.disable_tqdm and self.is_world_process_zero(),
                                        description=description, gather=self.gather_for_metrics)
        model.train(was_training)
        prefixed = {f"{metric_key_prefix}_{key}": float(value) for key, value in results.items()}
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=prefixed, num_samples=metrics.num_images)
