"""The model card of a finished run: facts read from the run's files, rendered through ``model_card.md`` (a Jinja
template beside this module) with ``huggingface_hub.ModelCard.from_template``."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ..data.class_names import class_label
from ..evaluation.clicks import is_click_metric
from ..evaluation.metrics import CLASS_IOU_PREFIX
from ..files import (
    ADAPTER_CONFIG_NAME,
    BASE_MODEL_DIR,
    CLICK_RESULTS_NAME,
    EVAL_SUMMARY_NAME,
    PREPROCESSOR_NAME,
    RUN_ARGS_NAME,
    TEST_RESULTS_NAME,
    TRAINER_STATE_NAME,
)
from ..files import read_json as _read_json
from ..io import atomic_write_with

logger = logging.getLogger(__name__)

__all__ = ["CARD_TAGS", "INFOSAM_BIBTEX", "build_model_card", "eval_results_from_metrics", "hub_base_model",
           "write_model_card"]

CARD_TAGS = ("infosam", "segment-anything", "peft", "image-segmentation")
PIPELINE_TAG = "mask-generation"
TEMPLATE = Path(__file__).with_name("model_card.md")
# Trainer bookkeeping in *_results.json that is not a segmentation metric.
NON_METRIC_KEYS = ("loss", "runtime", "samples_per_second", "steps_per_second", "epoch")

INFOSAM_BIBTEX = """\
@inproceedings{zhang2025infosam,
  title     = {{InfoSAM}: Fine-Tuning the Segment Anything Model from An Information-Theoretic Perspective},
  author    = {Zhang, Yuanhong and Yuan, Muyao and Zhang, Weizhan and Gong, Tieliang and Wen, Wen and
               Ying, Jiangyong and Shi, Weijie},
  booktitle = {Proceedings of the 42nd International Conference on Machine Learning (ICML)},
  year      = {2025},
  eprint    = {2505.21920},
  archivePrefix = {arXiv},
}"""

# Training hyperparameters shown in the card, in this order (InfoSAMConfig / TrainingArguments fields).
CARD_TRAINING_KEYS = (
    "lambda_r", "lambda_d", "structure_loss_bce", "prompt_point_prob", "learning_rate", "lr_scheduler_type",
    "warmup_steps", "weight_decay", "num_train_epochs", "max_steps", "per_device_train_batch_size",
    "gradient_accumulation_steps", "seed", "metric_input", "metric_set",
)


# peft_method (or the adapter's lower-cased peft_type, the same name) -> the name the card shows
PEFT_DISPLAY_NAMES = {"lora": "LoRA", "adaptformer": "AdaptFormer", "conv_lora": "ConvLoRA", "sam_adapter": "Adapter",
                      "gsam_lora": "G-SAM LoRA", "gsam_conv_lora": "G-SAM ConvLoRA", "bitfit": "BitFit",
                      "decoder_only": "decoder-only", "gsam": "GSAM (G-SAM's model)", "samus": "SAMUS"}


def _is_hub_id(name: str | None) -> bool:
    """A string usable as a Hub repo id that is not also an existing local path."""
    if not name or Path(name).name == BASE_MODEL_DIR or Path(name).exists():  # a run's own base_model/ folder
        return False
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def hub_base_model(adapter_base: str | None, model_name_or_path: str | None = None) -> str | None:
    """The Hub id to record as the card's ``base_model``, or ``None`` when there is none.

    The adapter's own ``base_model_name_or_path`` when it is a Hub id; else the checkpoint the local
    base was derived from (a SAM resized to another input size). Local paths are never written into
    the metadata: the Hub rejects them.
    """
    for name in (adapter_base, model_name_or_path):
        if _is_hub_id(name):
            return name
    return None


def eval_results_from_metrics(metrics: Mapping[str, Any], prefix: str = "test_") -> dict[str, float]:
    """The segmentation metrics of a ``*_results.json`` mapping, prefix removed (``test_iou`` -> ``iou``)."""
    results = {}
    for key, value in metrics.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix):]
        if name in NON_METRIC_KEYS or isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if math.isfinite(float(value)):
            results[name] = float(value)
    return results


def _dataset_ids(dataset: str | None) -> tuple[str, str]:
    """(metadata id, readable name) of the training dataset: a Hub id as is, a local folder by its name."""
    if not dataset:
        return "unknown", "unknown"
    if _is_hub_id(dataset) and "/" in dataset:
        return dataset, dataset
    name = Path(dataset).name or dataset
    return name, name


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (dict, list)):
        return f"`{json.dumps(value, default=str)}`"
    return f"`{value}`" if isinstance(value, str) else str(value)


def _metric_table(rows: Mapping[str, Mapping[str, float]], keys: Sequence[str]) -> str:
    lines = ["| | " + " | ".join(keys) + " |", "|---|" + "---:|" * len(keys)]
    for name, values in rows.items():
        cells = [f"{values[key]:.4f}" if key in values else "–" for key in keys]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _image_size(processor: Mapping[str, Any]) -> int | None:
    """The square input size recorded in ``preprocessor_config.json`` (SAM's longest edge, SAM 2's height)."""
    size = processor.get("size") or {}
    value = (size.get("longest_edge") or size.get("height")) if isinstance(size, dict) else None
    if value is None:
        pad = processor.get("pad_size") or {}
        value = pad.get("height") if isinstance(pad, dict) else None
    return int(value) if value else None


def _card_facts(output_dir: Path, repo_id: str | None, run_args: Mapping[str, Any]) -> dict[str, Any]:
    """What the card says about the adapter, its base, data and input, from its files and ``run_args``."""
    adapter_config = _read_json(output_dir / ADAPTER_CONFIG_NAME) or {}
    processor = _read_json(output_dir / PREPROCESSOR_NAME) or {}
    model_args, peft_args, data_args = (dict(run_args.get(key) or {}) for key in ("model", "peft", "data"))
    adapter_base = adapter_config.get("base_model_name_or_path")
    base_model = hub_base_model(adapter_base, model_args.get("model_name_or_path"))
    local_base = bool(adapter_base) and not _is_hub_id(adapter_base)
    peft_method = peft_args.get("peft_method") or str(adapter_config.get("peft_type", "lora")).lower()
    sam2 = str(processor.get("image_processor_type", "")).startswith("Sam2")
    targets, modules = adapter_config.get("target_modules"), adapter_config.get("modules_to_save") or []
    num_classes, class_names = int(data_args.get("num_labels") or 1), processor.get("class_names") or None
    eval_prompt = data_args.get("eval_prompt", "box")
    return {
        "model_name": (repo_id or output_dir.resolve().name).split("/")[-1],
        "peft_method": peft_method, "method_name": PEFT_DISPLAY_NAMES.get(peft_method, peft_method),
        "sam2": sam2, "model_class": "Sam2Model" if sam2 else "SamModel",
        "processor_class": "Sam2Processor" if sam2 else "SamProcessor",
        "targets": ", ".join(targets) if isinstance(targets, list) else targets,
        "trains_decoder": "mask_decoder" in modules, "has_relation": "relation_module" in modules,
        "hub_base": base_model, "base_name": base_model or adapter_base or "unknown", "local_base": local_base,
        "base_in_repo": local_base and (output_dir / BASE_MODEL_DIR / "config.json").is_file(),
        "base_model_dir": BASE_MODEL_DIR, "base_ref": base_model or adapter_base or "facebook/sam-vit-base",
        "adapter_ref": repo_id or str(output_dir.resolve()),
        "dataset_path": data_args.get("dataset_name_or_path", "unknown"),
        "test_split": data_args.get("test_split") or "test",
        "prompts": "no prompts" if eval_prompt == "none" else f"**{eval_prompt}** prompts",
        "image_size": model_args.get("image_size") or _image_size(processor),
        "dynamic": bool(processor.get("dynamic_input_size")),
        "num_classes": num_classes, "ignore_index": data_args.get("ignore_index"), "class_names": class_names,
        "class_list": ", ".join(class_label(i, class_names) for i in range(num_classes)) if class_names else "",
    }


def _card_data(facts: Mapping[str, Any], results: Mapping[str, float]) -> ModelCardData:
    """The card's YAML metadata: library, base model, tags, data set and the test results as ``model-index``."""
    dataset_id, dataset_name = _dataset_ids(facts["dataset_path"])
    task = "Semantic segmentation" if facts["num_classes"] > 1 else "Prompted segmentation"
    eval_results = [EvalResult(task_type="image-segmentation", task_name=task, dataset_type=dataset_id,
                               dataset_name=dataset_name, dataset_split=facts["test_split"], metric_type=name,
                               metric_name=name, metric_value=value) for name, value in results.items()] or None
    tags = list(CARD_TAGS) + [t for t in (facts["peft_method"],) if t and t not in CARD_TAGS]
    return ModelCardData(library_name="peft", base_model=facts["hub_base"], pipeline_tag=PIPELINE_TAG, tags=tags,
                         datasets=[dataset_id], model_name=facts["model_name"], eval_results=eval_results)


def _results_tables(results: Mapping[str, float], summary: Mapping[str, Any],
                    class_names: list[str] | None) -> dict[str, Any]:
    """The results table (earlier rows of the run's summary, then this adapter) and, multi-class, IoU per class."""
    if not results:
        return {"results_table": "", "class_table": "", "lower_is_better": False}
    rows: dict[str, Mapping[str, float]] = {
        name: {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
        for name, values in summary.items() if name != "after training" and isinstance(values, Mapping)}
    rows["this adapter"] = results
    class_keys = [key for key in results if key.startswith(CLASS_IOU_PREFIX)]
    per_class = {class_label(int(key.removeprefix(CLASS_IOU_PREFIX)), class_names):
                 {name: values[key] for name, values in rows.items() if key in values} for key in class_keys}
    return {"results_table": _metric_table(rows, [key for key in results if key not in class_keys]),
            "class_table": _metric_table(per_class, list(rows)) if class_keys else "",
            "lower_is_better": "mae" in results}


CLICK_COLUMNS = (1, 3, 5, 10)  # clicks shown in the card (and the last one)


def _click_table(output_dir: Path) -> dict[str, Any]:
    """IoU and Dice after chosen clicks and NoC@85/90 (the untrained model's too, when it was scored), from the run's
    ``click_results.json`` (written with ``eval_clicks``)."""
    clicks = _read_json(output_dir / CLICK_RESULTS_NAME) or {}
    if not clicks.get("click_iou"):
        return {"click_table": "", "click_cap": 0}
    count = len(clicks["click_iou"])
    shown = [c for c in CLICK_COLUMNS if c < count] + [count]
    keys = [f"IoU@{c}" for c in shown] + [f"Dice@{c}" for c in shown] + ["NoC@85", "NoC@90"]

    def row(scores: dict[str, Any]) -> dict[str, float]:
        dices = scores.get("click_dice") or []
        values = {f"IoU@{c}": scores["click_iou"][c - 1] for c in shown}
        values.update({f"Dice@{c}": dices[c - 1] for c in shown if c <= len(dices)})
        values.update({f"NoC@{t}": scores[f"noc@{t}"] for t in (85, 90) if f"noc@{t}" in scores})
        return {key: float(value) for key, value in values.items()}

    rows = {"before training": row(clicks["before_training"])} if clicks.get("before_training") else {}
    rows["this adapter"] = row(clicks)
    return {"click_table": _metric_table(rows, keys), "click_cap": count}


def _hyperparameters(run_args: Mapping[str, Any], facts: Mapping[str, Any],
                     trainer_state: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The training table's rows: the InfoSAM weights, prompts, optimisation, input and PEFT settings."""
    model_args, peft_args, data_args, training = (dict(run_args.get(key) or {})
                                                  for key in ("model", "peft", "data", "training"))
    hyper: dict[str, Any] = {}
    for key, meaning in (("lambda_r", "λ1, relation compression"), ("lambda_d", "λ2, relation distillation")):
        if key in training:
            hyper[f"{key} ({meaning})"] = training[key]
    hyper.update({key: data_args[key] for key in ("train_prompt", "eval_prompt") if key in data_args})
    steps_set = (training.get("max_steps") or 0) > 0
    for key in CARD_TRAINING_KEYS:
        skipped = (key == "num_train_epochs" and steps_set) or (key == "max_steps" and not steps_set)
        if key in training and key not in ("lambda_r", "lambda_d") and not skipped:
            hyper[key] = training[key]
    if facts["image_size"]:
        hyper["image_size"] = facts["image_size"]
    hyper["peft_method"] = facts["peft_method"]
    if peft_args.get("peft_config"):
        hyper["peft_config"] = peft_args["peft_config"]
    for key in ("augment", "relation_from", "freeze_relation", "teacher_model_name_or_path"):
        value = data_args.get(key, model_args.get(key))
        if value:
            hyper[key] = value
    if trainer_state.get("global_step"):
        hyper["optimizer steps"] = trainer_state["global_step"]
    return [(key, _fmt(value)) for key, value in hyper.items()]


def _versions() -> list[str]:
    import peft
    import torch
    import transformers

    return [f"PEFT {peft.__version__}", f"Transformers {transformers.__version__}", f"PyTorch {torch.__version__}"]


def build_model_card(output_dir: str | Path, repo_id: str | None = None, *,
                     run_args: Mapping[str, Any] | None = None, test_metrics: Mapping[str, Any] | None = None,
                     summary: Mapping[str, Mapping[str, float]] | None = None) -> ModelCard:
    """The InfoSAM model card of a finished run in ``output_dir``, rendered from ``model_card.md``.

    Everything not given is read from the run's files: ``adapter_config.json``, ``run_args.json`` (model / peft /
    data / training arguments), ``test_results.json`` (final evaluation, keys ``test_*``), ``eval_summary.json``
    (before-training and baseline rows), ``click_results.json`` (click-by-click scores, when the run made them),
    ``trainer_state.json`` and ``preprocessor_config.json`` (input size, class names).

    Args:
        output_dir: the run's output directory (a PEFT adapter directory).
        repo_id: the Hub repo the card is for; used in the loading snippet (default: the directory).
        run_args: ``{"model": …, "peft": …, "data": …, "training": …}`` as in ``run_args.json``.
        test_metrics: the final evaluation, ``test_``-prefixed as ``Trainer.evaluate`` returns it.
        summary: ``{row name: {metric: value}}`` tables printed at the end of training.
    """
    output_dir = Path(output_dir)
    run_args = dict(run_args if run_args is not None else _read_json(output_dir / RUN_ARGS_NAME) or {})
    test_metrics = test_metrics if test_metrics is not None else _read_json(output_dir / TEST_RESULTS_NAME) or {}
    summary = summary if summary is not None else _read_json(output_dir / EVAL_SUMMARY_NAME) or {}
    facts = _card_facts(output_dir, repo_id, run_args)
    results = {k: v for k, v in eval_results_from_metrics(test_metrics).items() if not is_click_metric(k)}
    return ModelCard.from_template(
        _card_data(facts, results), template_path=str(TEMPLATE), **facts,
        **_results_tables(results, summary, facts["class_names"]), **_click_table(output_dir),
        hyperparameters=_hyperparameters(run_args, facts, _read_json(output_dir / TRAINER_STATE_NAME) or {}),
        versions=_versions(), bibtex=INFOSAM_BIBTEX)


def write_model_card(output_dir: str | Path, repo_id: str | None = None, **kwargs) -> Path:
    """Build the card (see :func:`build_model_card`) and save it as ``output_dir/README.md``."""
    path = Path(output_dir) / "README.md"
    card = build_model_card(output_dir, repo_id, **kwargs)
    atomic_write_with(path, card.save)
    return path
