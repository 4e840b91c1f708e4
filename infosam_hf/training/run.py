"""The end-to-end training run behind ``infosam train``, read top to bottom as alignment-handbook's ``sft.py``:
parse (the caller) → validate → models → data → trainer → train → evaluate → save and push."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import SamModel, set_seed

from ..data import DataArguments, build_datasets, decode_image, decode_mask
from ..data.class_names import class_label
from ..evaluation.gsam_metrics import format_gsam_scores
from ..evaluation.loop import box_fill_logits, evaluate_segmentation
from ..evaluation.metrics import CLASS_IOU_PREFIX
from ..evaluation.visualization import TrainingCurvesCallback
from ..files import EVAL_SUMMARY_NAME, RUN_ARGS_NAME, SAMPLES_DIR
from ..io import atomic_write_json
from ..models import ModelArguments
from ..models.dynamic import is_dynamic_input_size
from ..models.inference import BASE_MODEL_DIR
from ..models.multiclass import NEW_HEAD_ATTR
from ..models.processor import InfoSamImageProcessor, build_sam_image_processor
from ..models.sam import CONFIG_CHANGED_ATTR, load_sam, set_decoder_layer_norm_eps
from ..relation import attach_relation_module, load_relation_state_dict
from ..models.sam2 import Sam2ImageProcessorConfig, is_sam2, sam_input_size
from ..tuners import PeftArguments, build_student, parameter_groups
from ..tuners.variants import load_pretrained_parts
from .click_scores import write_click_results
from .config import InfoSAMConfig
from .output_dir import OutputDirLock
from .protocol import OfficialProtocolCallback, format_protocol_table, leading_columns, official_epochs
from .recipe import RecipeError, parse_recipe
from .resume_check import interrupted_message
from .trainer import InfoSAMTrainer
from .validate import RunPlan, check_protocol, resolve_peft_method, validate_run

logger = logging.getLogger(__name__)

__all__ = ["RECIPE_DATACLASSES", "parse_train_args", "check_protocol", "build_image_processor", "build_models",
           "build_trainer", "score_before_training", "evaluate_test_split", "print_results", "finish_run",
           "run_record", "save_sample_images", "run_training"]

RECIPE_DATACLASSES = (ModelArguments, PeftArguments, DataArguments, InfoSAMConfig)


def parse_train_args(argv: Sequence[str], defaults: dict[str, Any] | None = None,
                     ) -> tuple[ModelArguments, PeftArguments, DataArguments, InfoSAMConfig]:
    """Parse ``RECIPE.yaml [--key value ...]`` into the four argument groups (``defaults``: keys under the recipe)."""
    return parse_recipe(argv, RECIPE_DATACLASSES, defaults)


def run_training(model_args: ModelArguments, peft_args: PeftArguments, data_args: DataArguments,
                 args: InfoSAMConfig) -> dict[str, Any]:
    """Train, save the adapter to ``args.output_dir``, evaluate on the test split, write the model card (and push
    with Trainer's own push). Returns the metrics."""
    set_seed(args.seed)
    plan = validate_run(model_args, peft_args, data_args, args)  # every check once, before anything is built
    lock = OutputDirLock(args.output_dir).acquire() if int(os.environ.get("RANK", "0")) == 0 else None
    try:  # a run that fails or is interrupted leaves no lock (nor a folder the lock created and nothing filled)
        student, teacher, image_size = build_models(plan.model_args, plan.peft_args, args.output_dir, args.seed,
                                                    data_args.num_labels, need_teacher=plan.need_teacher)
        splits = build_datasets(data_args, image_size, seed=args.seed, splits=plan.raw_splits,
                                keep_aspect_ratio=not is_sam2(student))
        trainer, protocol = build_trainer(student, teacher, splits, plan, data_args, args, image_size)
        summary = score_before_training(trainer, splits.test, data_args) if args.eval_before_training else {}
        train_result = _train(trainer, plan.resume, args.output_dir)
        trainer.save_model()
        trainer.log_metrics("train", train_result.metrics)
        trainer.save_metrics("train", train_result.metrics)
        trainer.save_state()
        results: dict[str, Any] = {"train": train_result.metrics}
        if splits.test is not None:
            results["test"] = evaluate_test_split(trainer, splits.test, protocol, train_result.metrics)
            summary["after training"] = {k.removeprefix("test_"): v for k, v in results["test"].items()}
        if trainer.is_world_process_zero():
            print_results(results, summary, protocol, len(splits.test) if splits.test is not None else 0,
                          plan.class_names, data_args, args)
            write_click_results(trainer, args.output_dir)  # eval_clicks: click_results.json, click_curve.png
            finish_run(trainer, args, results, summary, run_record(plan, data_args, args))
            if data_args.dataset_name_or_path == "synthetic" and plan.raw_splits.test is not None:
                _point_to_samples(plan.raw_splits.test, args.output_dir)
    finally:
        if lock is not None:
            lock.release()
    results["summary"] = summary
    return results


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
    method = resolve_peft_method(model_args, peft_args)  # validate_run has checked the options
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


def build_trainer(student: torch.nn.Module, teacher: SamModel | None, splits, plan: RunPlan, data_args: DataArguments,
                  args: InfoSAMConfig, image_size: int) -> tuple[InfoSAMTrainer, OfficialProtocolCallback | None]:
    """The trainer, given what it needs: the teacher, the splits and the train split's transform (its epoch hook and
    the teacher cache's key), the image processor saved beside the adapter, and the callbacks (training curves;
    ``protocol: official``'s per-epoch test scores)."""
    image_processor = build_image_processor(image_size, data_args.image_mean, data_args.image_std, is_sam2(student),
                                            data_args.preprocessing, data_args.resize,
                                            is_dynamic_input_size(student.get_base_model()), plan.class_names,
                                            data_args.channel_order)
    protocol = None
    if args.protocol == "official":  # save and score the last epochs on the test split, as the official scripts
        if splits.test is None:
            raise RecipeError("protocol=official scores saved epochs on the test split: set test_split")
        protocol = OfficialProtocolCallback(splits.test, official_epochs(math.ceil(args.num_train_epochs),
                                                                         args.protocol_epochs),
                                            (args.report_metrics or [args.metric_for_best_model or "iou"])[0])
    trainer = InfoSAMTrainer(
        model=student, args=args, teacher_model=teacher, train_dataset=splits.train, eval_dataset=splits.eval,
        train_transform=splits.train_transform, processing_class=image_processor, num_labels=data_args.num_labels,
        ignore_index=data_args.ignore_index, callbacks=[TrainingCurvesCallback()] + ([protocol] if protocol else []),
    )
    if protocol is not None:
        protocol.trainer = trainer
    if trainer.is_world_process_zero():
        groups = parameter_groups(student)
        print(f"Trainable parameters ({plan.peft_args.peft_method}): {sum(groups.values()):,} = "
              + ", ".join(f"{name} {count:,}" for name, count in groups.items()))
    return trainer, protocol


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


def _train(trainer: InfoSAMTrainer, resume, output_dir: str):
    """``trainer.train``; Ctrl-C ends with one line naming the resume command and exit status 130 (the shell's)."""
    try:
        return trainer.train(resume_from_checkpoint=resume)
    except KeyboardInterrupt:
        print(interrupted_message(trainer.state.global_step, output_dir), file=sys.stderr)
        raise SystemExit(130) from None


def evaluate_test_split(trainer: InfoSAMTrainer, test_set, protocol: OfficialProtocolCallback | None,
                        train_metrics: dict[str, float]) -> dict[str, float]:
    """The final model's ``test_*`` metrics (``protocol: official`` already scored the last epoch), logged and saved
    as ``test_results.json``."""
    last_epoch = math.ceil(train_metrics.get("epoch", 0) - 1e-6)
    if protocol is not None and last_epoch in protocol.per_epoch:  # the saved last epoch is the final model
        test_metrics = {f"test_{k}": v for k, v in protocol.per_epoch[last_epoch].items()}
    else:
        test_metrics = trainer.evaluate(test_set, metric_key_prefix="test")
    trainer.log_metrics("test", test_metrics)
    trainer.save_metrics("test", test_metrics)
    return test_metrics


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


def print_results(results: dict[str, Any], summary: dict[str, dict[str, float]],
                  protocol: OfficialProtocolCallback | None, test_size: int, class_names: list[str] | None,
                  data_args: DataArguments, args: InfoSAMConfig) -> None:
    """The test-split table (before training, the box-fill baseline, after training), G-SAM's scores and the
    official protocol's per-epoch table; writes the protocol's results file."""
    if summary:
        first = next(iter(summary.values()))
        keys = leading_columns(list(first), args.report_metrics, ("iou", "iou@0.5", "dice", "miou", "pixel_accuracy"))
        keys += [k for k in first if k.startswith(CLASS_IOU_PREFIX)]
        prompts = "no prompts" if data_args.eval_prompt == "none" else f"{data_args.eval_prompt} prompts"
        labels = {key: f"iou {class_label(int(key.removeprefix(CLASS_IOU_PREFIX)), class_names)}"
                  for key in keys if key.startswith(CLASS_IOU_PREFIX) and class_names}
        test = results.get("test", {})
        rows = (f"{int(test['test_num_objects'])} objects in {int(test['test_num_object_images'])} images"
                if "test_num_objects" in test else f"{test_size} images")
        _print_table(f"Test split ({rows}, {prompts})", summary, keys, labels)
    if args.protocol == "gsam" and "test" in results:
        print(f"\nG-SAM protocol, test split at the resized input (last partial batch of "
              f"{args.per_device_eval_batch_size} dropped):\n" + format_gsam_scores(results["test"]))
    if protocol is not None and protocol.per_epoch:
        protocol_summary = protocol.write(args.output_dir)
        results["protocol"] = protocol_summary
        columns = leading_columns(list(next(iter(protocol.per_epoch.values()))), args.report_metrics)
        print(f"\nOfficial protocol: test split scored after epochs {sorted(protocol.per_epoch)} "
              f"(adapters in {args.output_dir}/epoch_<e>)\n" + format_protocol_table(protocol_summary, columns))


def run_record(plan: RunPlan, data_args: DataArguments, args: InfoSAMConfig) -> dict[str, Any]:
    """The run's arguments for ``run_args.json`` (a record, not an input to inference), without any token."""
    training = json.loads(json.dumps(args.to_dict(), default=str))
    return {"model": asdict(plan.model_args), "peft": asdict(plan.peft_args), "data": asdict(data_args),
            "training": {key: value for key, value in training.items() if not key.endswith("_token")}}


def finish_run(trainer: InfoSAMTrainer, args: InfoSAMConfig, results: dict[str, Any],
               summary: dict[str, dict[str, float]], record: dict[str, Any]) -> None:
    """Main process: write the run's record and summary, then the model card; with ``push_to_hub``, Trainer's own
    push (which saves, writes the card through :meth:`InfoSAMTrainer.create_model_card` and uploads)."""
    output_dir = Path(args.output_dir)
    atomic_write_json(output_dir / RUN_ARGS_NAME, record, default=str)
    if summary:
        atomic_write_json(output_dir / EVAL_SUMMARY_NAME, summary)
    if not args.push_to_hub:
        trainer.create_model_card()
        print(f"\nAdapter saved to {args.output_dir}")
        return
    try:
        info = trainer.push_to_hub(commit_message="End of training")
    except OSError:
        print(f"error: the push to {trainer.hub_model_id} failed; the run is saved in {args.output_dir}, push it "
              f"later with infosam push {args.output_dir} {trainer.hub_model_id}", file=sys.stderr)
        raise
    results["hub_commit"] = str(getattr(info, "commit_url", "") or "")
    print(f"\nAdapter saved to {args.output_dir} and pushed to {trainer.hub_model_id}")


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


def _point_to_samples(test_split, output_dir: str) -> None:
    """Write a few demo test images and print the ``infosam predict`` line to try on the first."""
    samples = save_sample_images(test_split, Path(output_dir) / SAMPLES_DIR)
    if samples:
        path, box = samples[0]
        print(f"Test images to try predict on are in {path.parent}, e.g.\n  infosam predict --adapter "
              f"{output_dir} --images {path} --box {','.join(map(str, box))} "
              f"--out {Path(output_dir) / 'predictions'}")
