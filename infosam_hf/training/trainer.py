"""``InfoSAMTrainer``: a ``Trainer`` whose loss is structure loss + λ1·loss_r + λ2·loss_d."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import shutil
import warnings
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.lr_scheduler import LambdaLR
from transformers import Trainer, TrainerCallback, get_scheduler
from transformers.integrations import TensorBoardCallback
from transformers.integrations.integration_utils import default_logdir
from transformers.trainer_pt_utils import nested_gather
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, EvalLoopOutput

from ..data.collator import INDEX_KEY, OBJECTS_VALID_KEY, SamPromptCollator
from ..data.splits import sam_transform_of
from ..evaluation.gsam_metrics import GsamScores
from ..evaluation.loop import PROMPT_KEYS, evaluate_segmentation, make_metrics, sam_logits, upsample_logits
from ..evaluation.metrics import SegmentationMetrics
from ..hub import write_model_card
from ..io import disk_full_error, is_disk_full, replace_files_from
from ..losses import compression_loss, distillation_loss, segmentation_loss
from ..models.capture import SamFeatureCapture, match_teacher_grid
from ..models.inference import record_base_beside
from ..models.multiclass import freeze_unused_head, sam_num_classes
from ..relation import get_relation_module
from ..models.sam2 import is_sam2
from ..tuners import pop_auxiliary_loss
from .click_scores import check_click_eval_support, click_eval_metrics
from .config import InfoSAMConfig
from .diagnostics import RelationDiagnostics
from .divergence import check_logged_losses, check_trainable_weights
from .global_batch import gather_batch
from .iterative import check_iterative_support, iterative_rounds_loss
from .protocol import official_schedule_steps
from .teacher_cache import (TeacherEmbeddingCache, dataset_cache_key, pixel_changing_options, resolve_teacher_cache,
                            teacher_fingerprint)
from .teacher_pass import PrefixCapture, TeacherSwitch, shared_prefix_length, teacher_image_embeddings

logger = logging.getLogger(__name__)

__all__ = ["InfoSAMTrainer", "META_KEYS"]

META_KEYS = ("original_sizes", "reshaped_input_sizes", "original_labels", "prompt_boxes", "has_foreground", INDEX_KEY)
LOSS_COMPONENTS = ("loss_seg", "loss_r", "loss_d", "loss_aux", "loss_obj")


def _sanitize_grad(grad: torch.Tensor) -> torch.Tensor:
    """Gradient hook: NaN/Inf -> 0, so a masked non-finite information loss (0·NaN in backward) reaches no weight."""
    return torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)


class _TransformEpochCallback(TrainerCallback):
    """Tell the train transform which epoch starts, so its keyed per-example randomness changes per epoch."""

    def __init__(self, transform, args):
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


class _EpochStep:
    """LambdaLR factor at optimizer step ``s``: a per-epoch schedule's factor at epoch ``s // steps_per_epoch``."""

    def __init__(self, epoch_factor, steps_per_epoch: int):
        self.epoch_factor = epoch_factor
        self.steps_per_epoch = steps_per_epoch

    def __call__(self, step: int) -> float:
        return self.epoch_factor(step // self.steps_per_epoch)


def _pin_tensorboard_dir(trainer: Trainer, args: InfoSAMConfig) -> None:
    """TensorBoard logs go to ``args.logging_dir`` or ``output_dir/runs/DATE_HOST`` from the first log on.

    Transformers' callback picks its folder at ``on_train_begin``; a log before training (an evaluation
    before training) would otherwise open a writer in ``./runs/`` of the current folder.
    """
    for callback in trainer.callback_handler.callbacks:
        if isinstance(callback, TensorBoardCallback):
            if args.logging_dir:
                callback.logging_dir = os.path.expanduser(args.logging_dir)
            elif callback.logging_dir is None:  # TENSORBOARD_LOGGING_DIR unset
                callback.logging_dir = os.path.join(args.output_dir, default_logdir())


def _same(tensor: torch.Tensor) -> torch.Tensor:
    return tensor


def _base_sam(model: nn.Module) -> nn.Module:
    """The ``SamModel`` under a ``PeftModel`` (or the model itself: a separate teacher)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


class InfoSAMTrainer(Trainer):
    """Fine-tunes a PEFT-wrapped ``SamModel`` (the student) with InfoSAM's relation distillation.

    The teacher is the same model with its adapters disabled (no weight copy) unless a separate frozen
    ``teacher_model`` is given. The relation module (``model.relation_module``) is shared by both passes.
    The teacher's image embedding comes from the embedding cache (``teacher_cache``), or reuses the
    student's output of the encoder stages the tuner leaves untouched (``share_frozen_prefix``); the
    teacher's mask decoder runs every step with that step's prompts.

    Args:
        model: a ``PeftModel`` around a ``SamModel`` that carries a relation module.
        args: an :class:`InfoSAMConfig`.
        teacher_model: optional separate frozen ``SamModel``; moved to the accelerator's device, set to
            ``eval()`` and frozen, never passed through ``accelerator.prepare``.
        train_transform: the train split's :class:`~infosam_hf.data.SamSegmentationTransform` (its epoch hook, and
            what the teacher cache is keyed by); default: the one ``with_sam_transform`` attached to
            ``train_dataset``.
        **kwargs: passed to ``Trainer`` (datasets, callbacks, ``processing_class`` …). Pass the image
            processor as ``processing_class``, not ``SamProcessor``.
    """

    # compute_loss returns a per-batch mean, not a sum over num_items_in_batch: Trainer divides by GA.
    loss_is_scaled_for_ga = False

    def __init__(self, model: nn.Module, args: InfoSAMConfig, teacher_model: nn.Module | None = None,
                 data_collator=None, num_labels: int | None = None, ignore_index: int = 255, train_transform=None,
                 **kwargs):
        if not isinstance(args, InfoSAMConfig):
            raise TypeError(f"args must be an InfoSAMConfig, got {type(args).__name__}")
        if data_collator is None:
            data_collator = SamPromptCollator(prompt_point_prob=args.prompt_point_prob)
        self.use_info_losses = args.lambda_r > 0 or args.lambda_d > 0
        if not self.use_info_losses:
            # Plain PEFT: the relation module is unused, so keep it out of the optimizer and of DDP.
            get_relation_module(model).requires_grad_(False)
        # Classes: the model's (a multi-class head records them); a different num_labels is a mistake.
        model_classes = sam_num_classes(model)
        if num_labels is not None and num_labels != model_classes:
            raise ValueError(f"num_labels={num_labels} but the model has {model_classes} class channel(s)")
        self.num_labels = model_classes
        self.ignore_index = ignore_index
        if teacher_model is not None and sam_num_classes(teacher_model) != model_classes:
            raise ValueError("a separate teacher_model must have the student's mask head "
                             f"({model_classes} class channel(s))")
        # No loss reaches SAM's IoU-prediction head (nor, with a multi-class head, the unused token 0's
        # MLP): freeze them, as the official training leaves the IoU head unchanged too, so DDP needs
        # no find_unused_parameters.
        if args.lambda_object_score > 0 and not is_sam2(model):
            raise ValueError("lambda_object_score: only SAM 2 has an object-score head")
        check_iterative_support(args.iterative_rounds, model_classes, is_sam2(model))
        check_click_eval_support(args.eval_clicks, model_classes, is_sam2(model))
        freeze_unused_head(model)
        if args.lambda_object_score == 0:  # SAM 2's object-score head gets no loss then
            for name, param in model.named_parameters():
                if "pred_obj_score_head" in name:
                    param.requires_grad_(False)
        super().__init__(model=model, args=args, data_collator=data_collator, **kwargs)
        self.train_transform = train_transform if train_transform is not None else sam_transform_of(self.train_dataset)
        self.add_callback(_TransformEpochCallback(self.train_transform, args))
        _pin_tensorboard_dir(self, args)
        self.relation_module = get_relation_module(self.model)  # shared by the teacher and student passes
        # Leaving disable_adapter() sets requires_grad on every modules_to_save copy; these must stay frozen.
        self._frozen_copies = [p for n, p in self.model.named_parameters()
                               if "modules_to_save" in n and not p.requires_grad]
        self.student_capture = SamFeatureCapture(self.model, self.num_labels)
        self.teacher_model = teacher_model
        if teacher_model is not None:
            teacher_model.to(self.accelerator.device).eval().requires_grad_(False)
            self.teacher_capture = SamFeatureCapture(teacher_model, self.num_labels)
        else:
            self.teacher_capture = self.student_capture
        self._component_sums: dict[str, torch.Tensor] = {}
        self._component_steps = 0
        # non-finite information losses, counted on the device and read at logging time
        self._skipped_info_steps: torch.Tensor | None = None
        self._first_skipped_step: torch.Tensor | None = None
        student_sam = self.accelerator.unwrap_model(self.model).get_base_model()
        # SAM 2: the teacher runs whole (its decoder also takes the encoder's high-resolution features)
        self.full_teacher_pass = is_sam2(student_sam)
        if getattr(self.train_transform, "objects_per_image", 1) > 1:
            self._check_objects_batch()
        self.prefix_length = (shared_prefix_length(student_sam) if self.use_info_losses and teacher_model is None
                              and args.share_frozen_prefix else 0)
        self.prefix_capture = PrefixCapture(student_sam, self.prefix_length) if self.prefix_length else None
        self._teacher_switch = TeacherSwitch(self.accelerator.unwrap_model(self.model)) if teacher_model is None else None
        self.teacher_cache = self._build_teacher_cache() if self.use_info_losses else None
        if self.use_info_losses:
            for param in self.relation_module.parameters():
                if param.requires_grad:
                    param.register_hook(_sanitize_grad)
        self.info_diagnostics = (RelationDiagnostics(args.lambda_r, args.lambda_d)
                                 if args.info_diagnostics and self.use_info_losses else None)

    # ------------------------------------------------------------ schedule
    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """With ``lr_scheduler_per_epoch``, ``lr_scheduler_type`` runs over ``num_train_epochs`` epochs and
        changes only at epoch boundaries (G-SAM's ``CosineAnnealingLR`` stepped once per epoch)."""
        if self.args.protocol == "official" and self.lr_scheduler is None:  # the official scripts' horizon
            num_training_steps = official_schedule_steps(num_training_steps, self.args.num_train_epochs)
        if not self.args.lr_scheduler_per_epoch or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        optimizer = optimizer if optimizer is not None else self.optimizer
        args = self.args
        if args.max_steps > 0:
            samples = len(self.train_dataset) // args.world_size
            batches = samples // args.train_batch_size if args.dataloader_drop_last else -(-samples // args.train_batch_size)
            steps_per_epoch = max(1, batches // args.gradient_accumulation_steps)
        else:
            steps_per_epoch = max(1, round(num_training_steps / args.num_train_epochs))
        epochs = max(1, math.ceil(args.num_train_epochs))
        per_epoch = get_scheduler(args.lr_scheduler_type, optimizer=optimizer, num_warmup_steps=0,
                                  num_training_steps=epochs, scheduler_specific_kwargs=args.lr_scheduler_kwargs)
        if not isinstance(per_epoch, LambdaLR):
            raise ValueError(f"lr_scheduler_per_epoch: lr_scheduler_type={args.lr_scheduler_type!r} is not a "
                             "factor schedule (use cosine, linear, constant, polynomial …)")
        self.lr_scheduler = LambdaLR(optimizer, [_EpochStep(f, steps_per_epoch) for f in per_epoch.lr_lambdas])
        self._created_lr_scheduler = True
        return self.lr_scheduler

    # ----------------------------------------------------------------- loss
    @staticmethod
    def _prompt_kwargs(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
        return {key: inputs[key] for key in PROMPT_KEYS if key in inputs}

    # ------------------------------------------------------------ teacher
    def _build_teacher_cache(self) -> TeacherEmbeddingCache | None:
        """The teacher-embedding cache when ``teacher_cache`` resolves to on (one log line either way)."""
        args = self.args
        if args.teacher_cache == "off":
            return None
        if self.full_teacher_pass:
            if args.teacher_cache == "on":
                raise ValueError("teacher_cache: on is SAM-only: SAM 2's decoder also reads the encoder's "
                                 "high-resolution features, which are not cached")
            return None
        transform = self.train_transform
        if transform is None:
            if args.teacher_cache == "on":
                raise ValueError("teacher_cache: on needs a train_dataset with a SamSegmentationTransform "
                                 "(with_sam_transform) that passes each example's index")
            return None
        augment = getattr(transform.augmenter, "names", []) if transform.augmenter else []
        if not resolve_teacher_cache(args.teacher_cache, pixel_changing_options(augment, transform.random_crop)):
            return None
        teacher = self.teacher_model if self.teacher_model is not None else \
            self.accelerator.unwrap_model(self.model).get_base_model()
        key = {**dataset_cache_key(self.train_dataset, transform),
               "teacher": teacher_fingerprint(teacher.vision_encoder)}
        cache = TeacherEmbeddingCache(key, root=args.teacher_cache_dir, dtype=args.teacher_cache_dtype)
        if self.is_world_process_zero():
            logger.info("Teacher-embedding cache on (teacher_cache=%s): the encoder input is the same every epoch; "
                           "%s", args.teacher_cache, cache)
        return cache

    @contextlib.contextmanager
    def _teacher_mode(self, model: nn.Module):
        """The teacher as a callable ``SamModel``: the separate one, or the student with its adapters disabled."""
        if self.teacher_model is not None:
            yield self.teacher_model
            return
        try:
            with self._teacher_switch.teacher() as student:  # the pre-trained SAM, in eval mode: no dropout
                yield student
        finally:
            for param in self._frozen_copies:
                param.requires_grad_(False)

    def _teacher_embeddings(self, teacher: nn.Module, pixel_values: torch.Tensor, indices: list[int] | None,
                            shared_hidden: torch.Tensor | None) -> torch.Tensor:
        """The teacher's image embedding: from the cache, else computed (from the student's shared prefix
        when there is one) and, with a cache, stored for the next epochs."""
        sam = _base_sam(teacher)
        dtype = sam.vision_encoder.neck.conv1.weight.dtype
        cache = self.teacher_cache if indices is not None else None
        if cache is not None:
            cached = cache.get(indices, device=pixel_values.device, dtype=dtype)
            if cached is not None:
                return cached
        embeddings = teacher_image_embeddings(sam, pixel_values, shared_hidden, self.prefix_length)
        if cache is not None:
            cache.put(indices, embeddings)
        return embeddings

    @torch.no_grad()
    def teacher_features(self, model: nn.Module, inputs: dict[str, Any], indices: list[int] | None = None,
                         shared_hidden: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Neck output and mask token(s) (one per class) of the frozen teacher for this batch.

        ``indices`` (the examples' dataset indices) key the embedding cache; ``shared_hidden`` is the
        student's output of the last shared encoder stage. The mask decoder runs with this batch's prompts.
        """
        if self.full_teacher_pass:
            with self._teacher_mode(model) as teacher, self.teacher_capture.record() as features:
                teacher(pixel_values=inputs["pixel_values"], multimask_output=self.num_labels > 1,
                        **self._prompt_kwargs(inputs))
            return features
        with self._teacher_mode(model) as teacher:
            embeddings = self._teacher_embeddings(teacher, inputs["pixel_values"], indices, shared_hidden)
            with self.teacher_capture.record() as features:
                teacher(image_embeddings=embeddings, multimask_output=self.num_labels > 1,
                        **self._prompt_kwargs(inputs))
        features["image_embeds"] = embeddings.flatten(2).transpose(1, 2)  # the neck hook does not fire here
        return features

    def precompute_teacher_cache(self) -> None:
        """Fill the teacher-embedding cache in one pass over this process's share of the train set."""
        from tqdm.auto import tqdm

        cache = self.teacher_cache
        dataloader = self.get_train_dataloader()
        show = not self.args.disable_tqdm and self.is_world_process_zero()
        with self._teacher_mode(self.model) as teacher:
            sam = _base_sam(teacher)
            for batch in tqdm(dataloader, desc="Teacher-embedding cache", disable=not show):
                indices = batch.get(INDEX_KEY)
                if indices is None or all(index in cache for index in indices):
                    continue
                cache.put(indices, teacher_image_embeddings(sam, batch["pixel_values"]))

    def train(self, *args, **kwargs):
        """``Trainer.train``; first fills the teacher-embedding cache when ``teacher_cache_precompute``."""
        if self.teacher_cache is not None and self.args.teacher_cache_precompute:
            self.precompute_teacher_cache()
        return super().train(*args, **kwargs)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: torch.Tensor | int | None = None):
        """loss = segmentation loss + extra losses + λ1·loss_r + λ2·loss_d, then (``iterative_rounds``) the rounds'.

        The segmentation loss is :meth:`segmentation_loss` (structure loss, or cross-entropy with ``ignore_index``
        for a multi-class head; with several objects per image, averaged over the valid objects); the extra losses
        are :meth:`extra_losses`; the information losses (:meth:`weighted_information_loss`) need the teacher pass,
        which runs in training only. With C classes loss_r and loss_d are averaged over the C class tokens.
        """
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        valid = inputs.pop(OBJECTS_VALID_KEY, None)  # (B, K): several objects per image (objects_per_image)
        if valid is not None:
            self._check_objects_batch()
        indices, sizes = inputs.get(INDEX_KEY), inputs.get("reshaped_input_sizes")
        for key in META_KEYS:
            inputs.pop(key, None)
        train_info = model.training and self.use_info_losses
        outputs, student, prefix = self.student_pass(model, inputs, share_prefix=train_info)
        loss_seg = (self.objects_segmentation_loss(outputs.pred_masks, labels, valid) if valid is not None else
                    self.segmentation_loss(upsample_logits(outputs.pred_masks, labels.shape[-2:]), labels))
        extra = self.extra_losses(model, outputs, labels)
        loss = loss_seg
        for value, weight in extra.values():
            loss = loss + weight * value
        components = {"loss_seg": loss_seg, **{name: value for name, (value, _) in extra.items()}}
        teacher = None
        if train_info:
            teacher = self.teacher_features(model, inputs, indices, prefix.get("hidden"))
            info, parts = self.weighted_information_loss(teacher, student, valid)
            loss = loss + info
            components.update(parts)
        if model.training:
            self._accumulate(components)
        if model.training and self.args.iterative_rounds:
            loss = iterative_rounds_loss(self, model, self._prompt_kwargs(inputs), labels, sizes, outputs, student,
                                         teacher, loss)
        return loss  # return_outputs is never asked for: evaluation_loop below replaces Trainer's prediction_step

    def student_pass(self, model: nn.Module, inputs: dict[str, Any], share_prefix: bool = False):
        """The student's forward: ``(outputs, its relation features, the frozen prefix's output)``; the prefix is
        recorded (``share_prefix``) for the teacher pass to start from."""
        share = self.prefix_capture.record() if share_prefix and self.prefix_capture else contextlib.nullcontext({})
        with self.student_capture.record() as student, share as prefix:
            outputs = model(pixel_values=inputs["pixel_values"], multimask_output=self.num_labels > 1,
                            **self._prompt_kwargs(inputs))
        return outputs, student, prefix

    def segmentation_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The run's segmentation loss of upsampled logits, the function evaluation uses too
        (:func:`~infosam_hf.losses.segmentation_loss`)."""
        return segmentation_loss(logits, labels, self.num_labels, kind=self.args.seg_loss,
                                 bce=self.args.structure_loss_bce, ignore_index=self.ignore_index)

    def extra_losses(self, model: nn.Module, outputs, labels: torch.Tensor) -> dict[str, tuple[torch.Tensor, float]]:
        """``{name: (loss, weight)}`` beside the segmentation loss: the auxiliary loss a tuner reports for this forward
        (Conv-LoRA's gate balancing; training only, weight 1) and SAM 2's object-score loss (``lambda_object_score``)."""
        extra = {}
        loss_aux = pop_auxiliary_loss(self.accelerator.unwrap_model(model))  # popped every forward
        if loss_aux is not None and model.training:
            extra["loss_aux"] = (loss_aux, 1.0)
        if self.args.lambda_object_score > 0:  # SAM 2: is there an object at all?
            present = (labels.flatten(1) > 0).any(1).to(outputs.object_score_logits.dtype)
            loss_obj = F.binary_cross_entropy_with_logits(outputs.object_score_logits[:, 0, 0], present)
            extra["loss_obj"] = (loss_obj, self.args.lambda_object_score)
        return extra

    def weighted_information_loss(self, teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor],
                                  valid: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """λ1·loss_r + λ2·loss_d over the micro-batch (one relation per image, or per (image, object) pair with
        ``valid``), and the two losses for the logs.

        A device-side guard, no host read: a non-finite value is replaced by 0, and the gradient hooks (relation
        parameters, student features) clear the NaN that 0·NaN leaves in backward; the step is counted.
        """
        loss_r, loss_d = (self.information_losses(teacher, student) if valid is None else
                          self.information_losses(*self.object_relation_features(teacher, student, valid)))
        info = self.args.lambda_r * loss_r + self.args.lambda_d * loss_d
        finite = torch.isfinite(info)
        zero = torch.zeros_like(info)
        self._count_skipped(finite)
        return torch.where(finite, info, zero), {"loss_r": torch.where(finite, loss_r, zero),
                                                  "loss_d": torch.where(finite, loss_d, zero)}

    def _check_objects_batch(self) -> None:
        """A batch of several objects per image: what that path does not cover fails here, in one line."""
        if self.num_labels > 1 or self.full_teacher_pass or self.args.iterative_rounds:
            raise ValueError("objects_per_image > 1 trains SAM's single-mask head (binary objects) without "
                             "iterative_rounds; not a multi-class head, SAM 2 or iterative_rounds")

    def objects_segmentation_loss(self, pred_masks: torch.Tensor, labels: torch.Tensor,
                                  valid: torch.Tensor) -> torch.Tensor:
        """The binary segmentation loss averaged over the valid objects: ``pred_masks`` (B, K, 1, h, w),
        ``labels`` (B, K, H, W), ``valid`` (B, K)."""
        rows = valid.flatten()
        logits = upsample_logits(pred_masks.flatten(0, 1)[rows], labels.shape[-2:])
        return self.segmentation_loss(logits, labels.flatten(0, 1)[rows])

    def object_relation_features(self, teacher: dict[str, torch.Tensor], student: dict[str, torch.Tensor],
                                 valid: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Teacher and student features with one row per (image, object) pair: that object's mask token and its
        image's embedding, for every valid object (``info_loss_objects: all``) or the first valid object of each
        image (``one_per_image``); :meth:`information_losses` then spans those rows."""
        if self.args.info_loss_objects == "one_per_image":
            images = valid.any(1).nonzero().flatten()
            objects = valid.int().argmax(1)[images]  # the first valid slot
        else:
            images, objects = valid.nonzero().unbind(1)

        def pairs(features: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
            rows = {"image_embeds": features["image_embeds"][images],
                    "mask_token": features["object_tokens"][images, objects]}
            if "image_grid" in features:
                rows["image_grid"] = features["image_grid"]
            return rows

        return pairs(teacher), pairs(student)

    def information_losses(self, teacher: dict[str, torch.Tensor],
                           student: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """loss_r and loss_d from captured features; with K mask tokens (one per class) one relation per
        token for the teacher and the student, and both losses averaged over the K tokens. A student whose
        embedding grid is finer than the teacher's (the gsam / samus variants: H/8 against H/16) is
        average-pooled to the teacher's grid first."""
        relation = self.relation_module
        student = match_teacher_grid(student, teacher)
        tokens = teacher["mask_token"].shape[1]
        student_embeds, student_tokens = student["image_embeds"], student["mask_token"]
        for feature in (student_embeds, student_tokens):  # see compute_loss: no NaN gradient into the student
            if feature.requires_grad:
                feature.register_hook(_sanitize_grad)
        # info_loss_batch=global: Gram matrices over every process's batch (relations gathered with gradient)
        # (gather_batch returns its input unchanged with one process)
        gather = gather_batch if self.args.info_loss_batch == "global" else _same
        image_embeds_t = gather(teacher["image_embeds"])
        loss_r = loss_d = 0.0
        for k in range(tokens):
            token_t = teacher["mask_token"][:, k:k + 1]
            relation_t = relation(teacher["image_embeds"], token_t)
            relation_s = relation(student_embeds, student_tokens[:, k:k + 1])
            token_t, relation_t, relation_s = gather(token_t), gather(relation_t), gather(relation_s)
            loss_r = loss_r + compression_loss(image_embeds_t, token_t, relation_t)
            loss_d = loss_d + distillation_loss(relation_t, relation_s)
            if k == 0 and self.info_diagnostics is not None:  # diagnostics follow the first mask token
                self.info_diagnostics.update(image_embeds_t, token_t, relation_t, relation_s)
        return loss_r / tokens, loss_d / tokens

    # -------------------------------------------------------------- logging
    def _count_skipped(self, finite: torch.Tensor) -> None:
        """Count a step whose information loss is non-finite, and remember the first such step (on the device)."""
        skipped = (~finite).long()
        if self._skipped_info_steps is None:
            self._skipped_info_steps = torch.zeros_like(skipped)
            self._first_skipped_step = torch.full_like(skipped, -1)
        step = torch.full_like(skipped, self.state.global_step + 1)
        self._first_skipped_step = torch.where((skipped > 0) & (self._first_skipped_step < 0), step,
                                               self._first_skipped_step)
        self._skipped_info_steps = self._skipped_info_steps + skipped

    def _warn_skipped(self) -> None:
        """At logging time: warn when an information loss was non-finite since the last log (one host read)."""
        if self._skipped_info_steps is None:
            return
        count, first = int(self._skipped_info_steps), int(self._first_skipped_step)
        self._skipped_info_steps = self._first_skipped_step = None
        if count:
            warnings.warn(f"The information losses were non-finite on {count} micro-batch(es) since the last log, "
                          f"first at step {first}: they were left out of those steps, whose update came from the "
                          "(finite) segmentation loss alone", stacklevel=2)

    def _accumulate(self, values: dict[str, torch.Tensor]) -> None:
        for name, value in values.items():
            self._component_sums[name] = self._component_sums.get(name, 0.0) + value.detach().float()
        self._component_steps += 1

    def floating_point_ops(self, inputs: dict[str, Any]) -> int:
        """0: Trainer's estimate (6 × pixels × parameters, as if every pixel were a token) means nothing for SAM."""
        return 0

    def _mean_over_processes(self, values: torch.Tensor) -> torch.Tensor:
        return nested_gather(values[None], self.args.parallel_mode).mean(0)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add ``loss_seg``, ``loss_r`` and ``loss_d`` (averaged over the logging interval) to train logs;
        leave out ``total_flos`` (not counted for SAM)."""
        logs.pop("total_flos", None)
        mean_over_processes = self._mean_over_processes if self.args.world_size > 1 else _same
        if "loss" in logs and self._component_steps:
            names = [name for name in LOSS_COMPONENTS if name in self._component_sums]
            totals = mean_over_processes(torch.stack([self._component_sums[name] for name in names]))  # one gather
            logs.update({name: round(total / self._component_steps, 6) for name, total in zip(names, totals.tolist())})
            self._component_sums.clear()
            self._component_steps = 0
        if "loss" in logs and self.info_diagnostics is not None:
            logs.update(self.info_diagnostics.pop(mean_over_processes if self.args.world_size > 1 else None))
        if "loss" in logs:  # a train log: divergence stops the run here (one host read per log, not per step)
            check_logged_losses(self.state.global_step, logs, self.args)
            check_trainable_weights(self.model, self.state.global_step, self.args)
        self._warn_skipped()  # after the check: the segmentation loss was finite
        super().log(logs, start_time)

    # ----------------------------------------------------------------- saving
    def create_model_card(self, model_name: str | None = None, **kwargs) -> None:
        """The InfoSAM model card (``README.md``, see :func:`~infosam_hf.hub.build_model_card`) of the run in
        ``output_dir``, read from its files; ``Trainer.push_to_hub`` calls it before uploading."""
        if self.is_world_process_zero():
            write_model_card(self.args.output_dir, self.hub_model_id if self.args.push_to_hub else None)

    def _trainable_bytes(self) -> int:
        return sum(p.numel() * p.element_size() for p in self.model.parameters() if p.requires_grad)

    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        """Trainer's save, written into a staging folder and renamed file by file into ``output_dir``: never a
        non-finite adapter, and a failed save (disk full) leaves the files already there unchanged."""
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        check_trainable_weights(self.model, self.state.global_step, self.args)
        if not self.args.should_save:
            return super()._save(output_dir, state_dict)
        def save_into(staging) -> None:
            super(InfoSAMTrainer, self)._save(str(staging), state_dict)
            record_base_beside(staging, self.args.output_dir)  # the run's own base_model/ relative: the folder can move

        replace_files_from(output_dir, save_into, needed_bytes=self._trainable_bytes())

    def _save_checkpoint(self, model: nn.Module, trial) -> None:
        """Trainer's checkpoint; one that fails to save (disk full) is removed whole, earlier ones are kept."""
        folder = os.path.join(self._get_output_dir(trial=trial), f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}")
        existed = os.path.isdir(folder)
        try:
            super()._save_checkpoint(model, trial)
        except Exception as err:
            if not existed:
                shutil.rmtree(folder, ignore_errors=True)
            if is_disk_full(err):  # weights + two Adam moments
                raise disk_full_error(os.path.dirname(folder), 3 * self._trainable_bytes()) from err
            raise

    # ----------------------------------------------------------- evaluation
    def _get_dataloader(self, dataset, description, batch_size, sampler_fn=None, is_training=False,
                        dataloader_key=None):
        """As Trainer's, except that ``dataloader_drop_last`` applies to training only: Trainer would also drop
        the last partial batch of every evaluation (and of the test split). ``protocol: gsam`` drops it, as G-SAM."""
        drop_last = self.args.dataloader_drop_last
        # protocol gsam: G-SAM's evaluation loaders drop their last partial batch
        self.args.dataloader_drop_last = drop_last if is_training else self.args.protocol == "gsam"
        try:
            return super()._get_dataloader(dataset, description, batch_size, sampler_fn, is_training, dataloader_key)
        finally:
            self.args.dataloader_drop_last = drop_last

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

        gsam = GsamScores(self.ignore_index) if self.args.protocol == "gsam" else None

        def predict(batch):
            batch = self._prepare_inputs(batch)
            logits = sam_logits(model, batch)
            if gsam is not None:
                gsam.add_batch(logits, batch["labels"])
            return logits

        results = evaluate_segmentation(predict, dataloader, metrics, self.args.structure_loss_bce,
                                        seg_loss=self.args.seg_loss,
                                        progress=not self.args.disable_tqdm and self.is_world_process_zero(),
                                        description=description, gather=self.gather_for_metrics)
        if gsam is not None:
            gather = self.accelerator.gather if self.accelerator.num_processes > 1 else None  # one value per batch
            results.update(gsam.compute(metrics.confusion, self.args.gsam_absent_class_iou == "minus_one", gather))
        model.train(was_training)
        prefixed = {f"{metric_key_prefix}_{key}": float(value) for key, value in results.items()}
        prefixed.update(click_eval_metrics(self, dataloader, metric_key_prefix))  # eval_clicks: N
        return EvalLoopOutput(predictions=None, label_ids=None, metrics=prefixed, num_samples=metrics.num_images)
