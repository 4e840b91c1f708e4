"""The end-to-end training run behind ``infosam train``: recipe → data → student/teacher → train → save."""

from __future__ import annotations

import copy
import logging
import math
import os
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import SamModel, set_seed

from ..data import DataArguments, augmenter_from_args, build_datasets, decode_image, decode_mask, select_splits
from ..data.augment import parse_augment_names
from ..data.class_names import class_label, resolve_class_names
from ..evaluation.gsam_metrics import format_gsam_scores
from ..evaluation.loop import box_fill_logits, evaluate_segmentation
from ..evaluation.metrics import CLASS_IOU_PREFIX
from ..evaluation.visualization import TrainingCurvesCallback
from ..files import SAMPLES_DIR
from ..hub import EVAL_SUMMARY_NAME, push_adapter_dir, training_args_dict, write_model_card
from ..io import atomic_write_json
from ..models import ModelArguments
from ..models.inference import BASE_MODEL_DIR
from ..models.dynamic import is_dynamic_input_size
from ..models.multiclass import NEW_HEAD_ATTR
from ..models.preflight import check_activation_memory, check_block_indices, vision_fields
from ..models.processor import InfoSamImageProcessor, build_sam_image_processor
from ..models.sam import CONFIG_CHANGED_ATTR, attach_relation_module, load_sam, set_decoder_layer_norm_eps
from ..models.sam2 import Sam2ImageProcessorConfig, is_sam2, sam_input_size
from ..relation import load_relation_state_dict
from ..remote import check_pretrained_name
from ..tuners import PeftArguments, build_peft_config, build_student, parameter_groups
from ..tuners.variants import VARIANTS, load_pretrained_parts
from .click_scores import write_click_results
from .config import InfoSAMConfig
from .output_dir import OutputDirLock, check_output_dir
from .protocol import OfficialProtocolCallback, format_protocol_table, leading_columns, official_epochs
from .recipe import RecipeError, coerce_value, parse_recipe
from .recipe_checks import check_drop_last, check_peft_targets, check_recipe_values
from .resume_check import interrupted_message, resolve_resume_checkpoint
from .teacher_cache import pixel_changing_options, resolve_teacher_cache
from .trainer import InfoSAMTrainer

logger = logging.getLogger(__name__)

__all__ = ["RECIPE_DATACLASSES", "parse_train_args", "check_peft_options", "check_input_sizes", "check_protocol",
           "check_multiclass_recipe", "check_model_shape", "resolve_peft_method", "build_image_processor", "build_models",
           "score_before_training", "finish_run", "save_sample_images", "run_training"]

RECIPE_DATACLASSES = (ModelArguments, PeftArguments, DataArguments, InfoSAMConfig)


def parse_train_args(argv: Sequence[str], defaults: dict[str, Any] | None = None,
                     ) -> tuple[ModelArguments, PeftArguments, DataArguments, InfoSAMConfig]:
    """Parse ``RECIPE.yaml [--key value ...]`` into the four argument groups (``defaults``: keys under the recipe)."""
    return parse_recipe(argv, RECIPE_DATACLASSES, defaults)


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


def build_image_processor(image_size: int, image_mean=None, image_std=None, sam2: bool = False,
                          preprocessing: str = "sam", resize=None, dynamic_input_size: bool = False,
                          class_names: list[str] | None = None,
                          channel_order: str = "rgb") -> InfoSamImageProcessor | Sam2ImageProcessorConfig:
    """The image processor saved beside the adapter: how its inputs are prepared (SAM: the run's normalisation,
    channel order, padding rule and input frame, see :mod:`infosam_hf.models.processor`; SAM 2: its square)."""
    if sam2:
        return Sam2ImageProcessorConfig(image_size)
    return build_sam_image_processor(image_size, image_mean, image_std, preprocessing=preprocessing, resize=resize,
                                     dynamic_input_size=dynamic_input_size, class_names=class_names,
                                     channel_order=channel_order)


def build_models(model_args: ModelArguments, peft_args: PeftArguments, output_dir: str,
                 seed: int = 42, num_labels: int = 1,
                 need_teacher: bool = True) -> tuple[torch.nn.Module, SamModel | None, int]:
    """The PEFT student (with its relation module), the optional separate teacher, and the input size.

    ``num_labels > 1`` gives the student a multi-class head (see :mod:`infosam_hf.models.multiclass`).
    A base model that has no loadable name (built from config fields, resized to another input
    size, or given a multi-class head) is saved to ``output_dir/base_model`` so the adapter's
    ``base_model_name_or_path`` points at something ``AutoPeftModel.from_pretrained`` can load.
    A model variant (``gsam``, ``samus``) gets a frozen copy of the base SAM as its teacher when ``need_teacher``
    (the InfoSAM losses are on) and no ``teacher_model_name_or_path`` is given.
    """
    method = resolve_peft_method(model_args, peft_args)
    check_peft_options(replace(peft_args, peft_method=method))  # bad PEFT options fail before loading
    relation_state = load_relation_state_dict(model_args.relation_from) if model_args.relation_from else None
    variant = model_args.model_variant
    sam = load_sam(model_args.model_name_or_path, model_args.sam_config, model_args.image_size, seed=seed,
                   num_labels=num_labels, dynamic_input_size=model_args.dynamic_input_size or bool(variant),
                   attn_implementation=model_args.attn_implementation, multiclass_head=model_args.multiclass_head)
    image_size = sam_input_size(sam)
    if variant and is_sam2(sam):
        raise RecipeError(f"model_variant={variant!r} is built on SAM's ViT; {model_args.model_name_or_path!r} "
                          "is a SAM 2")
    teacher = None
    if model_args.teacher_model_name_or_path:
        teacher = load_sam(model_args.teacher_model_name_or_path, image_size=image_size,
                           dynamic_input_size=model_args.dynamic_input_size or bool(variant),
                           attn_implementation=model_args.attn_implementation)
        if is_sam2(teacher) != is_sam2(sam):  # the two families see different input frames
            raise RecipeError(f"teacher_model_name_or_path={model_args.teacher_model_name_or_path!r}: the teacher "
                              "must be of the student's family (SAM with SAM, SAM 2 with SAM 2)")
    if model_args.decoder_layer_norm_eps is not None and not is_sam2(sam):
        for model in (sam, teacher) if teacher is not None else (sam,):
            set_decoder_layer_norm_eps(model, model_args.decoder_layer_norm_eps)
    if (not model_args.model_name_or_path or getattr(sam, "infosam_resized_from", None)
            or getattr(sam, NEW_HEAD_ATTR, False) or getattr(sam, CONFIG_CHANGED_ATTR, False)):
        base_dir = Path(output_dir) / BASE_MODEL_DIR
        if int(os.environ.get("RANK", "0")) == 0:
            sam.save_pretrained(base_dir)
        sam.name_or_path = str(base_dir.resolve())  # saved adapters record it relative (see record_base_beside)
        sam.config._name_or_path = sam.name_or_path
    else:
        sam.name_or_path = model_args.model_name_or_path
    if variant and need_teacher and teacher is None:  # the variant's encoder is not SAM's: a frozen copy of the base
        teacher = copy.deepcopy(sam)
    attach_relation_module(sam, relation_state)
    student = build_student(sam, method, peft_args.peft_config, model_args.freeze_relation)
    if variant:
        load_pretrained_parts(student)  # GSAM's ImageNet ResNet-101 branch (resnet_weights)
    return student, teacher, image_size


def resolve_peft_method(model_args: ModelArguments, peft_args: PeftArguments) -> str:
    """The peft method to build: ``model_variant`` when set (its own tuner), else ``peft_method``."""
    variant = model_args.model_variant
    if variant is None:
        return peft_args.peft_method
    if variant not in VARIANTS:
        raise RecipeError(f"model_variant={variant!r} is not known; choose one of {sorted(VARIANTS)}")
    if peft_args.peft_method not in ("lora", variant):  # "lora" is the default, i.e. unset
        raise RecipeError(f"model_variant={variant!r} trains its own modules; drop peft_method="
                          f"{peft_args.peft_method!r} (put the variant's options in peft_config)")
    return variant


def _print_table(title: str, rows: dict[str, dict[str, float]], keys: Sequence[str],
                 labels: dict[str, str] | None = None) -> None:
    if len(keys) > 6:  # per-class IoU of a multi-class run: one row per metric, one column per run
        labels = labels or {}
        width = max(len(labels.get(key, key)) for key in keys) + 2
        print(f"\n{title}")
        print(" " * width + "".join(f"{name:>20}" for name in rows))
        for key in keys:
            print(f"{labels.get(key, key):<{width}}" + "".join(f"{values.get(key, float('nan')):>20.4f}" for values in rows.values()))
        return
    width = max(len(name) for name in rows) + 2
    print(f"\n{title}")
    print(" " * width + "".join(f"{key:>12}" for key in keys))
    for name, values in rows.items():
        print(f"{name:<{width}}" + "".join(f"{values.get(key, float('nan')):>12.4f}" for key in keys))


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
    (batch 4, ``N // 4 + 1`` steps per epoch); ``gsam`` scores at the resized input and drops the last partial
    evaluation batch, so each evaluated split (of ``splits``, when given) needs one full batch."""
    if args.protocol == "official" and args.world_size > 1:
        raise RecipeError(f"protocol=official reproduces the official single-process run; {args.world_size} processes "
                          "would change the batch and the number of steps: launch one process")
    if args.protocol != "gsam":
        return
    if data_args.eval_resolution != "input":
        raise RecipeError("protocol=gsam scores at the resized input as G-SAM does: set eval_resolution: input")
    batch = args.per_device_eval_batch_size * args.world_size
    for name in ("eval", "test"):
        split = getattr(splits, name, None)
        if split is not None and len(split) < batch:
            raise RecipeError(f"protocol=gsam drops the last partial evaluation batch: the {name} split has "
                              f"{len(split)} images, fewer than one batch of {batch} (per_device_eval_batch_size)")


def score_before_training(trainer: InfoSAMTrainer, test_set, data_args: DataArguments) -> dict[str, dict[str, float]]:
    """Test-split metrics of the untrained model and, with box prompts, of the fill-the-box baseline."""
    if test_set is None:
        return {}
    before = trainer.evaluate(test_set, metric_key_prefix="test")
    summary = {"before training": {k.removeprefix("test_"): v for k, v in before.items()}}
    if data_args.eval_prompt == "box":
        summary["box-fill baseline"] = evaluate_segmentation(
            box_fill_logits, trainer.get_eval_dataloader(test_set), trainer.new_metrics(), structure_loss_bce=None,
            gather=trainer.gather_for_metrics)
    return summary


def finish_run(trainer: InfoSAMTrainer, args: InfoSAMConfig, results: dict[str, Any],
               summary: dict[str, dict[str, float]], run_args: dict[str, Any]) -> None:
    """Main process: write the run's arguments, summary and model card, then push if asked."""
    output_dir = Path(args.output_dir)
    atomic_write_json(output_dir / "run_args.json", run_args, default=str)
    if summary:
        atomic_write_json(output_dir / EVAL_SUMMARY_NAME, summary)
    repo_id = (getattr(trainer, "hub_model_id", None) or args.hub_model_id) if args.push_to_hub else None
    write_model_card(args.output_dir, repo_id, run_args=run_args, test_metrics=results.get("test", {}),
                     summary=summary)
    print(f"\nAdapter saved to {args.output_dir}")
    if args.push_to_hub:
        trainer._finish_current_push()  # checkpoint pushes of hub_strategy still in flight
        try:
            info = push_adapter_dir(args.output_dir, repo_id, token=args.hub_token, revision=args.hub_revision,
                                    create_repo=False, commit_message="End of training")
        except OSError:
            print(f"error: the push to {repo_id} failed; the run is saved, push it later with "
                  f"infosam push {args.output_dir} {repo_id}", file=sys.stderr)
            raise
        results["hub_commit"] = str(getattr(info, "commit_url", "") or "")
        print(f"Pushed to {repo_id}")




def save_sample_images(dataset, folder: str | Path, count: int = 4) -> list[tuple[Path, tuple[int, int, int, int]]]:
    """Write the first ``count`` images of a raw split as PNGs with the tight box of their mask, to try
    ``infosam predict`` on (the synthetic demo data exists nowhere else). Returns ``(path, box)`` pairs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written, lines = [], []
    for index in range(min(count, len(dataset))):
        example = dataset[index]
        mask = decode_mask(example["label"])
        if not mask.any():
            continue
        rows, cols = np.nonzero(mask)
        box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
        path = folder / f"test_{index}.png"
        decode_image(example["image"])[0].save(path)
        written.append((path, box))
        lines.append(f"{path.name} --box {','.join(map(str, box))}")
    (folder / "boxes.txt").write_text("# image and the box prompt of its target\n" + "\n".join(lines) + "\n")
    return written


def run_training(model_args: ModelArguments, peft_args: PeftArguments, data_args: DataArguments,
                 args: InfoSAMConfig) -> dict[str, Any]:
    """Train, save the adapter to ``args.output_dir`` and evaluate on the test split. Returns metrics."""
    check_multiclass_recipe(model_args, data_args)
    check_protocol(args, data_args)
    check_recipe_values(model_args, peft_args, data_args, args)
    check_output_dir(args.output_dir, args.resume_from_checkpoint, args.overwrite_output_dir)
    peft_args.peft_method = resolve_peft_method(model_args, peft_args)  # a model variant is its own peft method
    if peft_args.peft_method in VARIANTS:  # peft_method: gsam is model_variant: gsam
        model_args.model_variant = peft_args.peft_method
    check_peft_options(peft_args)
    check_peft_targets(model_args, peft_args)
    peft_config = build_peft_config(peft_args.peft_method, peft_args.peft_config)
    resume = resolve_resume_checkpoint(args.resume_from_checkpoint, args.output_dir, peft_config.peft_type,
                                       {"r": getattr(peft_config, "r", None)} if hasattr(peft_config, "r") else None,
                                       model_only=args.resume_model_only)
    for key in ("model_name_or_path", "teacher_model_name_or_path"):  # a Hub id offline: seconds, not a minute
        if getattr(model_args, key):
            check_pretrained_name(getattr(model_args, key), key)
    set_seed(args.seed)
    # Fail on bad data or options before loading any model. A validation split is held out of train
    # only when something evaluates during training.
    need_eval = (args.eval_strategy != "no" or args.load_best_model_at_end) and args.protocol != "official"
    raw_splits = select_splits(data_args, seed=args.seed, need_eval=need_eval)
    check_protocol(args, data_args, raw_splits)
    check_drop_last(min(len(raw_splits.train), data_args.max_train_samples or len(raw_splits.train)), args)
    class_names = resolve_class_names(data_args, raw_splits.train)
    augmenter_from_args(data_args)
    check_input_sizes(model_args, data_args)
    check_model_shape(model_args, peft_args, args)
    if args.teacher_cache == "on" and (args.lambda_r > 0 or args.lambda_d > 0):  # fail before loading any model
        augment = parse_augment_names(data_args.augment)
        resolve_teacher_cache("on", pixel_changing_options(augment, data_args.random_crop))
    lock = OutputDirLock(args.output_dir).acquire() if int(os.environ.get("RANK", "0")) == 0 else None
    try:  # a model that fails to build leaves no lock (nor a folder the lock created)
        student, teacher, image_size = build_models(model_args, peft_args, args.output_dir, args.seed,
                                                    data_args.num_labels,
                                                    need_teacher=args.lambda_r > 0 or args.lambda_d > 0)
    except BaseException:
        if lock is not None:
            lock.release()
        raise
    sam2 = is_sam2(student)
    splits = build_datasets(data_args, image_size, seed=args.seed, splits=raw_splits, keep_aspect_ratio=not sam2)
    image_processor = build_image_processor(image_size, data_args.image_mean, data_args.image_std, sam2,
                                            data_args.preprocessing, data_args.resize,
                                            is_dynamic_input_size(student.get_base_model()), class_names,
                                            data_args.channel_order)
    protocol = None
    if args.protocol == "official":  # save and score the last epochs on the test split, as the official scripts
        if splits.test is None:
            raise RecipeError("protocol=official scores saved epochs on the test split: set test_split")
        protocol = OfficialProtocolCallback(splits.test, official_epochs(math.ceil(args.num_train_epochs),
                                                                         args.protocol_epochs),
                                            (args.report_metrics or [args.metric_for_best_model or "iou"])[0])
    trainer = InfoSAMTrainer(
        model=student, args=args, teacher_model=teacher, train_dataset=splits.train,
        eval_dataset=splits.eval, processing_class=image_processor, num_labels=data_args.num_labels,
        ignore_index=data_args.ignore_index, callbacks=[TrainingCurvesCallback()] + ([protocol] if protocol else []),
    )
    if protocol is not None:
        protocol.trainer = trainer
    if trainer.is_world_process_zero():
        groups = parameter_groups(student)
        print(f"Trainable parameters ({peft_args.peft_method}): {sum(groups.values()):,} = "
              + ", ".join(f"{name} {count:,}" for name, count in groups.items()))
    summary = score_before_training(trainer, splits.test, data_args) if args.eval_before_training else {}
    try:
        train_result = trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:  # one line, exit status 130 (the shell's for Ctrl-C)
        if lock is not None:
            lock.release()
        print(interrupted_message(trainer.state.global_step, args.output_dir), file=sys.stderr)
        raise SystemExit(130) from None
    # Save without Trainer's push: the push comes last, with the model card and the test results.
    trainer.save_model(_internal_call=True)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    results: dict[str, Any] = {"train": train_result.metrics}
    if splits.test is not None:
        last_epoch = math.ceil(train_result.metrics.get("epoch", 0) - 1e-6)
        if protocol is not None and last_epoch in protocol.per_epoch:  # the saved last epoch is the final model
            test_metrics = {f"test_{k}": v for k, v in protocol.per_epoch[last_epoch].items()}
        else:
            test_metrics = trainer.evaluate(splits.test, metric_key_prefix="test")
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)
        results["test"] = test_metrics
        summary["after training"] = {k.removeprefix("test_"): v for k, v in test_metrics.items()}
    if trainer.is_world_process_zero():
        if summary:
            first = next(iter(summary.values()))
            keys = leading_columns(list(first), args.report_metrics, ("iou", "iou@0.5", "dice", "miou", "pixel_accuracy"))
            keys += [k for k in first if k.startswith(CLASS_IOU_PREFIX)]
            prompts = "no prompts" if data_args.eval_prompt == "none" else f"{data_args.eval_prompt} prompts"
            labels = {key: f"iou {class_label(int(key.removeprefix(CLASS_IOU_PREFIX)), class_names)}"
                      for key in keys if key.startswith(CLASS_IOU_PREFIX) and class_names}
            _print_table(f"Test split ({len(splits.test)} images, {prompts})", summary, keys, labels)
        if args.protocol == "gsam" and "test" in results:
            print(f"\nG-SAM protocol, test split at the resized input (last partial batch of "
                  f"{args.per_device_eval_batch_size} dropped):\n" + format_gsam_scores(results["test"]))
        if protocol is not None and protocol.per_epoch:
            protocol_summary = protocol.write(args.output_dir)
            results["protocol"] = protocol_summary
            columns = leading_columns(list(next(iter(protocol.per_epoch.values()))), args.report_metrics)
            print(f"\nOfficial protocol: test split scored after epochs {sorted(protocol.per_epoch)} "
                  f"(adapters in {args.output_dir}/epoch_<e>)\n" + format_protocol_table(protocol_summary, columns))
        write_click_results(trainer, args.output_dir)  # eval_clicks: click_results.json, click_curve.png
        finish_run(trainer, args, results, summary,
                   {"model": asdict(model_args), "peft": asdict(peft_args), "data": asdict(data_args),
                    "training": training_args_dict(args)})
        if data_args.dataset_name_or_path == "synthetic" and raw_splits.test is not None:
            samples = save_sample_images(raw_splits.test, Path(args.output_dir) / SAMPLES_DIR)
            if samples:
                path, box = samples[0]
                print(f"Test images to try predict on are in {path.parent}, e.g.\n  infosam predict --adapter "
                      f"{args.output_dir} --images {path} --box {','.join(map(str, box))} "
                      f"--out {Path(args.output_dir) / 'predictions'}")
    results["summary"] = summary
    if lock is not None:
        lock.release()
    return results
