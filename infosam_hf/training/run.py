"""The end-to-end training run behind ``infosam train``: recipe → data → student/teacher → train → save."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from transformers import SamModel, set_seed
from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

from ..data import DataArguments, augmenter_from_args, build_datasets, select_splits
from ..data.augment import parse_augment_names
from ..evaluation.loop import box_fill_logits, evaluate_segmentation
from ..evaluation.metrics import CLASS_IOU_PREFIX
from ..evaluation.visualization import TrainingCurvesCallback
from ..hub import EVAL_SUMMARY_NAME, push_adapter_dir, training_args_dict, write_model_card
from ..models import ModelArguments
from ..models.inference import BASE_MODEL_DIR
from ..models.multiclass import NEW_HEAD_ATTR
from ..models.sam import attach_relation_module, load_sam
from ..relation import load_relation_state_dict
from ..tuners import PeftArguments, build_peft_config, build_student, parameter_groups
from .config import InfoSAMConfig
from .recipe import RecipeError, parse_recipe
from .teacher_cache import pixel_changing_options, resolve_teacher_cache
from .trainer import InfoSAMTrainer

logger = logging.getLogger(__name__)

__all__ = ["RECIPE_DATACLASSES", "parse_train_args", "check_input_sizes", "check_multiclass_recipe",
           "build_image_processor", "build_models", "score_before_training", "finish_run", "run_training"]

RECIPE_DATACLASSES = (ModelArguments, PeftArguments, DataArguments, InfoSAMConfig)


def parse_train_args(argv: Sequence[str]) -> tuple[ModelArguments, PeftArguments, DataArguments, InfoSAMConfig]:
    """Parse ``RECIPE.yaml [--key value ...]`` into the four argument groups."""
    return parse_recipe(argv, RECIPE_DATACLASSES)


def check_input_sizes(model_args: ModelArguments, data_args: DataArguments) -> None:
    """``resize`` / ``random_crop`` other than the fixed square input need ``dynamic_input_size``."""
    if model_args.dynamic_input_size:
        return
    for key in ("resize", "random_crop"):
        value = getattr(data_args, key)
        if value and (value[0] != value[1] or (model_args.image_size and value[0] != model_args.image_size)
                      or not model_args.image_size):
            raise RecipeError(f"{key}={list(value)} needs dynamic_input_size: true (the model otherwise takes only "
                              "its fixed square input)")


def build_image_processor(image_size: int, image_mean=None, image_std=None) -> SamImageProcessorPil:
    """SAM's image processor configured for ``image_size``² inputs and the run's normalisation (saved
    beside the adapter)."""
    stats = {key: list(value) for key, value in (("image_mean", image_mean), ("image_std", image_std)) if value}
    return SamImageProcessorPil(size={"longest_edge": image_size}, pad_size={"height": image_size, "width": image_size},
                                **stats)


def build_models(model_args: ModelArguments, peft_args: PeftArguments, output_dir: str,
                 seed: int = 42, num_labels: int = 1) -> tuple[torch.nn.Module, SamModel | None, int]:
    """The PEFT student (with its relation module), the optional separate teacher, and the input size.

    ``num_labels > 1`` gives the student a multi-class head (see :mod:`infosam_hf.models.multiclass`).
    A base model that has no loadable name (built from config fields, resized to another input
    size, or given a multi-class head) is saved to ``output_dir/base_model`` so the adapter's
    ``base_model_name_or_path`` points at something ``AutoPeftModel.from_pretrained`` can load.
    """
    build_peft_config(peft_args.peft_method, peft_args.peft_config)  # bad PEFT options fail before any loading
    relation_state = load_relation_state_dict(model_args.relation_from) if model_args.relation_from else None
    sam = load_sam(model_args.model_name_or_path, model_args.sam_config, model_args.image_size, seed=seed,
                   num_labels=num_labels, dynamic_input_size=model_args.dynamic_input_size,
                   attn_implementation=model_args.attn_implementation)
    image_size = sam.config.vision_config.image_size
    if (not model_args.model_name_or_path or getattr(sam, "infosam_resized_from", None)
            or getattr(sam, NEW_HEAD_ATTR, False)):
        base_dir = Path(output_dir) / BASE_MODEL_DIR
        if int(os.environ.get("RANK", "0")) == 0:
            sam.save_pretrained(base_dir)
        sam.name_or_path = str(base_dir.resolve())
        sam.config._name_or_path = sam.name_or_path
    else:
        sam.name_or_path = model_args.model_name_or_path
    attach_relation_module(sam, relation_state)
    student = build_student(sam, peft_args.peft_method, peft_args.peft_config, model_args.freeze_relation)
    teacher = None
    if model_args.teacher_model_name_or_path:
        teacher = load_sam(model_args.teacher_model_name_or_path, image_size=image_size,
                           dynamic_input_size=model_args.dynamic_input_size,
                           attn_implementation=model_args.attn_implementation)
    return student, teacher, image_size


def _print_table(title: str, rows: dict[str, dict[str, float]], keys: Sequence[str]) -> None:
    if len(keys) > 6:  # per-class IoU of a multi-class run: one row per metric, one column per run
        width = max(len(key) for key in keys) + 2
        print(f"\n{title}")
        print(" " * width + "".join(f"{name:>20}" for name in rows))
        for key in keys:
            print(f"{key:<{width}}" + "".join(f"{values.get(key, float('nan')):>20.4f}" for values in rows.values()))
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
    with open(output_dir / "run_args.json", "w") as handle:
        json.dump(run_args, handle, indent=2, default=str)
    if summary:
        with open(output_dir / EVAL_SUMMARY_NAME, "w") as handle:
            json.dump(summary, handle, indent=2)
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
                  f"scripts/push_to_hub.py {args.output_dir} {repo_id}", file=sys.stderr)
            raise
        results["hub_commit"] = str(getattr(info, "commit_url", "") or "")
        print(f"Pushed to {repo_id}")


def run_training(model_args: ModelArguments, peft_args: PeftArguments, data_args: DataArguments,
                 args: InfoSAMConfig) -> dict[str, Any]:
    """Train, save the adapter to ``args.output_dir`` and evaluate on the test split. Returns metrics."""
    check_multiclass_recipe(model_args, data_args)
    set_seed(args.seed)
    # Fail on bad data or options before loading any model. A validation split is held out of train
    # only when something evaluates during training.
    need_eval = args.eval_strategy != "no" or args.load_best_model_at_end
    raw_splits = select_splits(data_args, seed=args.seed, need_eval=need_eval)
    augmenter_from_args(data_args)
    check_input_sizes(model_args, data_args)
    if args.teacher_cache == "on" and (args.lambda_r > 0 or args.lambda_d > 0):  # fail before loading any model
        augment = parse_augment_names(data_args.augment)
        resolve_teacher_cache("on", pixel_changing_options(augment, data_args.random_crop))
    student, teacher, image_size = build_models(model_args, peft_args, args.output_dir, args.seed,
                                                data_args.num_labels)
    splits = build_datasets(data_args, image_size, seed=args.seed, splits=raw_splits)
    image_processor = build_image_processor(image_size, data_args.image_mean, data_args.image_std)
    trainer = InfoSAMTrainer(
        model=student, args=args, teacher_model=teacher, train_dataset=splits.train,
        eval_dataset=splits.eval, processing_class=image_processor, num_labels=data_args.num_labels,
        ignore_index=data_args.ignore_index, callbacks=[TrainingCurvesCallback()],
    )
    if trainer.is_world_process_zero():
        groups = parameter_groups(student)
        print(f"Trainable parameters ({peft_args.peft_method}): {sum(groups.values()):,} = "
              + ", ".join(f"{name} {count:,}" for name, count in groups.items()))
    summary = score_before_training(trainer, splits.test, data_args) if args.eval_before_training else {}
    train_result = trainer.train(resume_from_checkpoint=args.resume_from_checkpoint)
    # Save without Trainer's push: the push comes last, with the model card and the test results.
    trainer.save_model(_internal_call=True)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()
    results: dict[str, Any] = {"train": train_result.metrics}
    if splits.test is not None:
        test_metrics = trainer.evaluate(splits.test, metric_key_prefix="test")
        trainer.log_metrics("test", test_metrics)
        trainer.save_metrics("test", test_metrics)
        results["test"] = test_metrics
        summary["after training"] = {k.removeprefix("test_"): v for k, v in test_metrics.items()}
    if trainer.is_world_process_zero():
        if summary:
            first = next(iter(summary.values()))
            keys = [k for k in ("iou", "iou@0.5", "dice", "miou", "pixel_accuracy") if k in first]
            keys += [k for k in first if k.startswith(CLASS_IOU_PREFIX)]
            _print_table(f"Test split ({len(splits.test)} images, {data_args.eval_prompt} prompts)", summary, keys)
        finish_run(trainer, args, results, summary,
                   {"model": asdict(model_args), "peft": asdict(peft_args), "data": asdict(data_args),
                    "training": training_args_dict(args)})
    results["summary"] = summary
    return results
