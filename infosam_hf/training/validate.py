"""Every check of a training run, once, before anything is built: :func:`validate_run` reads the four argument
groups and the data, changes none of them, and returns a :class:`RunPlan` of what it decided."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass, replace

import torch

from ..data import DataArguments, SegmentationSplits, augmenter_from_args, select_splits
from ..data.augment import parse_augment_names
from ..data.class_names import resolve_class_names
from ..models import ModelArguments
from ..models.preflight import check_activation_memory, check_block_indices, vision_fields
from ..remote import check_pretrained_name
from ..tuners import PeftArguments, build_peft_config
from ..tuners.variants import VARIANTS
from .config import InfoSAMConfig
from .output_dir import check_output_dir
from .recipe import RecipeError, coerce_value
from .recipe_checks import check_drop_last, check_peft_targets, check_recipe_values
from .resume_check import resolve_resume_checkpoint
from .teacher_cache import pixel_changing_options, resolve_teacher_cache

__all__ = ["RunPlan", "check_input_sizes", "check_model_shape", "check_multiclass_recipe", "check_peft_options",
           "check_protocol", "check_protocol_splits", "resolve_peft_method", "validate_run"]


@dataclass(frozen=True)
class RunPlan:
    """What :func:`validate_run` decided: the argument groups the run builds from (a model variant is its own peft
    method, so ``peft_method`` and ``model_variant`` agree), the checkpoint to resume from, the selected and
    checked raw splits, the class names, and whether a teacher is needed."""

    model_args: ModelArguments
    peft_args: PeftArguments
    resume: str | bool | None
    raw_splits: SegmentationSplits
    class_names: list[str] | None
    need_teacher: bool


def validate_run(model_args: ModelArguments, peft_args: PeftArguments, data_args: DataArguments,
                 args: InfoSAMConfig) -> RunPlan:
    """Each check once, in the order that fails cheapest first: recipe values and keys that contradict each other,
    the output folder, the PEFT options and targets, the resume checkpoint, Hub ids (seconds offline), then the data
    (every used split loaded and validated), and what the model's configuration alone tells. Nothing is mutated."""
    check_multiclass_recipe(model_args, data_args)
    check_protocol(args, data_args)
    check_recipe_values(model_args, peft_args, data_args, args)
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    method = resolve_peft_method(model_args, peft_args)  # a model variant is its own peft method
    peft_args = replace(peft_args, peft_method=method)
    model_args = replace(model_args, model_variant=method if method in VARIANTS else model_args.model_variant)
    check_peft_options(peft_args)
    check_peft_targets(model_args, peft_args)
    peft_config = build_peft_config(method, peft_args.peft_config)
    resume = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir, peft_config.peft_type,
                                       {"r": getattr(peft_config, "r", None)} if hasattr(peft_config, "r") else None,
                                       model_only=args.resume_model_only)
    for key in ("model_name_or_path", "teacher_model_name_or_path"):  # a Hub id offline: seconds, not a minute
        if getattr(model_args, key):
            check_pretrained_name(getattr(model_args, key), key)
    # A validation split is held out of train only when something evaluates during training.
    need_eval = (args.eval_strategy != "no" or args.load_best_model_at_end) and args.protocol != "official"
    raw_splits = select_splits(data_args, seed=args.seed, need_eval=need_eval)
    check_protocol_splits(args, raw_splits)
    check_drop_last(min(len(raw_splits.train), data_args.max_train_samples or len(raw_splits.train)), args)
    class_names = resolve_class_names(data_args, raw_splits.train)
    augmenter_from_args(data_args)  # it checks its own options (rotate_prob, ...): a bad one fails before loading
    check_input_sizes(model_args, data_args)
    check_model_shape(model_args, peft_args, args)
    need_teacher = args.lambda_r > 0 or args.lambda_d > 0
    if args.teacher_cache == "on" and need_teacher:
        resolve_teacher_cache("on", pixel_changing_options(parse_augment_names(data_args.augment),
                                                           data_args.random_crop))
    return RunPlan(model_args=model_args, peft_args=peft_args, resume=resume, raw_splits=raw_splits,
                   class_names=class_names, need_teacher=need_teacher)


def check_peft_options(peft_args: PeftArguments) -> None:
    """Build the method's ``PeftConfig`` and check each ``peft_config`` value against its field type, so
    ``--peft_config.r x`` fails in one line before any loading (peft itself fails deep in model building)."""
    config = build_peft_config(peft_args.peft_method, peft_args.peft_config)
    try:
        hints = typing.get_type_hints(type(config))
    except Exception:  # noqa: BLE001 - unresolvable annotations: nothing to check against
        return
    for key, value in peft_args.peft_config.items():
        annotation = hints.get(key)
        union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
        literal = any(typing.get_origin(a) is typing.Literal for a in (typing.get_args(annotation) if union else
                                                                        (annotation,)))
        if annotation is not None and not literal:
            coerce_value(f"peft_config.{key}", value, annotation)


def check_input_sizes(model_args: ModelArguments, data_args: DataArguments) -> None:
    """``resize`` / ``random_crop`` other than the fixed square input need ``dynamic_input_size``."""
    if model_args.dynamic_input_size or model_args.model_variant:
        return
    for key in ("resize", "random_crop"):
        value = getattr(data_args, key)
        if value and (value[0] != value[1] or (model_args.image_size and value[0] != model_args.image_size)
                      or not model_args.image_size):
            raise RecipeError(f"{key}={list(value)} needs dynamic_input_size: true (the model otherwise takes only "
                              "its fixed square input)")


def check_model_shape(model_args: ModelArguments, peft_args: PeftArguments, args: InfoSAMConfig) -> None:
    """From the model's configuration alone: the tuner's ``block_indices`` exist, and on the CPU the image
    encoder's activations at ``image_size`` fit in memory."""
    vision = vision_fields(model_args.model_name_or_path, model_args.sam_config)
    check_block_indices(peft_args.peft_config, vision, model_args.model_name_or_path or "the sam_config model")
    on_cpu = args.use_cpu or not torch.cuda.is_available()
    check_activation_memory(vision, model_args.image_size, args.per_device_train_batch_size, on_cpu)


def resolve_peft_method(model_args: ModelArguments, peft_args: PeftArguments) -> str:
    """The peft method to build: ``model_variant`` when set (its own tuner), else ``peft_method``."""
    variant = model_args.model_variant
    if variant is None:
        return peft_args.peft_method
    if peft_args.peft_method not in ("lora", variant):  # "lora" is the default, i.e. unset
        raise RecipeError(f"model_variant={variant!r} trains its own modules; drop peft_method="
                          f"{peft_args.peft_method!r} (put the variant's options in peft_config)")
    return variant


def check_multiclass_recipe(model_args: ModelArguments, data_args: DataArguments) -> None:
    """One-line errors for options that a multi-class (``num_labels > 1``) run cannot use."""
    if data_args.num_labels < 2:
        return
    for key in ("train_prompt", "eval_prompt"):
        if getattr(data_args, key) != "none":
            raise RecipeError(f"{key}={getattr(data_args, key)!r}: num_labels={data_args.num_labels} trains a "
                              "semantic head without prompts; set train_prompt: none and eval_prompt: none")
    if model_args.teacher_model_name_or_path:
        raise RecipeError("teacher_model_name_or_path: a separate teacher has no multi-class head; with "
                          "num_labels > 1 the teacher is the student with its adapters disabled")


def check_protocol(args: InfoSAMConfig, data_args: DataArguments, splits=None) -> None:
    """One-line errors for a protocol the run cannot follow: ``official`` is the official single-process run
    (batch 4, ``N // 4 + 1`` steps per epoch); ``gsam`` scores at the resized input (and, with ``splits``, see
    :func:`check_protocol_splits`)."""
    if args.protocol == "official" and args.world_size > 1:
        raise RecipeError(f"protocol=official reproduces the official single-process run; {args.world_size} processes "
                          "would change the batch and the number of steps: launch one process")
    if args.protocol == "gsam" and data_args.eval_resolution != "input":
        raise RecipeError("protocol=gsam scores at the resized input as G-SAM does: set eval_resolution: input")
    if splits is not None:
        check_protocol_splits(args, splits)


def check_protocol_splits(args: InfoSAMConfig, splits) -> None:
    """``protocol: gsam`` drops the last partial evaluation batch, so each evaluated split needs one full batch."""
    if args.protocol != "gsam":
        return
    batch = args.per_device_eval_batch_size * args.world_size
    for name in ("eval", "test"):
        split = getattr(splits, name, None)
        if split is not None and len(split) < batch:
            raise RecipeError(f"protocol=gsam drops the last partial evaluation batch: the {name} split has "
                              f"{len(split)} images, fewer than one batch of {batch} (per_device_eval_batch_size)")
