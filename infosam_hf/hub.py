"""The trained adapter as a Hub repository: the model card, validation of an output dir, and the push.

A finished run's ``output_dir`` is a PEFT adapter repository (``adapter_config.json``,
``adapter_model.safetensors`` with the adapter weights, the trained mask decoder and the relation
module, ``preprocessor_config.json``) plus ``README.md``, the model card written here with
``huggingface_hub.ModelCard``. ``push_adapter_dir`` uploads such a directory; the token is never
printed, logged or saved -- it is resolved by ``huggingface_hub`` (``HF_TOKEN`` or ``hf auth login``)
unless passed explicitly.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from .data.class_names import class_label
from .evaluation.metrics import CLASS_IOU_PREFIX
from .io import atomic_write_with
from .files import (
    ADAPTER_CONFIG_NAME,
    BASE_MODEL_DIR,
    EVAL_SUMMARY_NAME,
    PREPROCESSOR_NAME,
    RUN_ARGS_NAME,
    TEST_RESULTS_NAME,
    TRAINER_STATE_NAME,
    AdapterDirError,
    validate_adapter_dir,
)
from .files import read_json as _read_json

logger = logging.getLogger(__name__)

__all__ = [
    "AdapterDirError",
    "CARD_TAGS",
    "INFOSAM_BIBTEX",
    "PUSH_IGNORE_PATTERNS",
    "build_model_card",
    "eval_results_from_metrics",
    "hub_base_model",
    "push_adapter_dir",
    "training_args_dict",
    "validate_adapter_dir",
    "write_model_card",
]

CARD_TAGS = ("infosam", "segment-anything", "peft", "image-segmentation")
PIPELINE_TAG = "mask-generation"
# Like Trainer.push_to_hub: no private files and no intermediate checkpoints.
PUSH_IGNORE_PATTERNS = ["_*", "checkpoint-*", ".*"]
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


def _is_sam2_run(output_dir: Path) -> bool:
    """A SAM 2 run saves ``Sam2ImageProcessor``'s config beside the adapter."""
    config = _read_json(output_dir / PREPROCESSOR_NAME) or {}
    return str(config.get("image_processor_type", "")).startswith("Sam2")


def _image_size(output_dir: Path) -> int | None:
    config = _read_json(output_dir / PREPROCESSOR_NAME) or {}
    size = config.get("size") or {}
    value = (size.get("longest_edge") or size.get("height")) if isinstance(size, dict) else None
    if value is None:
        pad = config.get("pad_size") or {}
        value = pad.get("height") if isinstance(pad, dict) else None
    return int(value) if value else None


# --------------------------------------------------------------------------------------- the card
def build_model_card(output_dir: str | Path, repo_id: str | None = None, *,
                     run_args: Mapping[str, Any] | None = None, test_metrics: Mapping[str, Any] | None = None,
                     summary: Mapping[str, Mapping[str, float]] | None = None) -> ModelCard:
    """The InfoSAM model card of a finished run in ``output_dir``.

    Everything not given is read from the run's files: ``adapter_config.json``, ``run_args.json``
    (model / peft / data / training arguments), ``test_results.json`` (final evaluation, keys
    ``test_*``), ``eval_summary.json`` (before-training and baseline rows) and
    ``preprocessor_config.json`` (input size).

    Args:
        output_dir: the run's output directory (a PEFT adapter directory).
        repo_id: the Hub repo the card is for; used in the loading snippet (default: the directory).
        run_args: ``{"model": …, "peft": …, "data": …, "training": …}`` as in ``run_args.json``.
        test_metrics: the final evaluation, ``test_``-prefixed as ``Trainer.evaluate`` returns it.
        summary: ``{row name: {metric: value}}`` tables printed at the end of training.
    """
    output_dir = Path(output_dir)
    adapter_config = _read_json(output_dir / ADAPTER_CONFIG_NAME) or {}
    run_args = dict(run_args if run_args is not None else _read_json(output_dir / RUN_ARGS_NAME) or {})
    model_args = dict(run_args.get("model") or {})
    peft_args = dict(run_args.get("peft") or {})
    data_args = dict(run_args.get("data") or {})
    training = dict(run_args.get("training") or {})
    if test_metrics is None:
        test_metrics = _read_json(output_dir / TEST_RESULTS_NAME) or {}
    if summary is None:
        summary = _read_json(output_dir / EVAL_SUMMARY_NAME) or {}
    results = eval_results_from_metrics(test_metrics)
    trainer_state = _read_json(output_dir / TRAINER_STATE_NAME) or {}

    adapter_base = adapter_config.get("base_model_name_or_path")
    base_model = hub_base_model(adapter_base, model_args.get("model_name_or_path"))
    local_base = bool(adapter_base) and not _is_hub_id(adapter_base)
    base_in_repo = local_base and (output_dir / BASE_MODEL_DIR / "config.json").is_file()
    peft_method = peft_args.get("peft_method") or str(adapter_config.get("peft_type", "lora")).lower()
    method_name = PEFT_DISPLAY_NAMES.get(peft_method, peft_method)
    dataset_id, dataset_name = _dataset_ids(data_args.get("dataset_name_or_path"))
    test_split = data_args.get("test_split") or "test"
    image_size = model_args.get("image_size") or _image_size(output_dir)
    model_name = (repo_id or output_dir.resolve().name).split("/")[-1]
    tags = list(CARD_TAGS) + [t for t in (peft_method,) if t and t not in CARD_TAGS]
    num_classes = int(data_args.get("num_labels") or 1)
    class_names = (_read_json(output_dir / PREPROCESSOR_NAME) or {}).get("class_names") or None

    eval_results = [
        EvalResult(task_type="image-segmentation",
                   task_name="Semantic segmentation" if num_classes > 1 else "Prompted segmentation",
                   dataset_type=dataset_id,
                   dataset_name=dataset_name, dataset_split=test_split, metric_type=name, metric_name=name,
                   metric_value=value)
        for name, value in results.items()
    ] or None
    card_data = ModelCardData(
        library_name="peft", base_model=base_model, pipeline_tag=PIPELINE_TAG, tags=tags,
        datasets=[dataset_id], model_name=model_name, eval_results=eval_results,
    )

    adapter_ref = repo_id or str(output_dir.resolve())
    base_ref = base_model or adapter_base or "facebook/sam-vit-base"
    modules = adapter_config.get("modules_to_save") or []
    targets = adapter_config.get("target_modules")
    sam2 = _is_sam2_run(output_dir)
    model_class, processor_class = ("Sam2Model", "Sam2Processor") if sam2 else ("SamModel", "SamProcessor")
    sections = [f"# {model_name}", ""]
    sections.append(
        f"A **{method_name}** adapter for the Segment Anything Model{' 2' if sam2 else ''} (`{model_class}`), "
        "fine-tuned with "
        "**InfoSAM** -- relation-based information-theoretic distillation from the pre-trained SAM (the "
        "teacher) into the fine-tuned one (the student) -- trained with `infosam-hf` (🤗 Transformers "
        "`Trainer` + PEFT).")
    sections += ["", "The adapter (`adapter_model.safetensors`) holds:", ""]
    sections.append(f"- the {method_name} weights"
                    + (f" on `{', '.join(targets) if isinstance(targets, list) else targets}`" if targets else ""))
    if "mask_decoder" in modules:
        sections.append("- the fully trained mask decoder (`modules_to_save`)")
    if "relation_module" in modules:
        sections.append("- the InfoSAM relation module (`modules_to_save`; used by the training losses only, not "
                        "for prediction -- reuse it with `relation_from`)")
    sections += ["", f"- **Base model:** `{base_model or adapter_base or 'unknown'}`"]
    if local_base:
        sections.append(f"  (built locally{'; a copy is in the `base_model/` folder' if base_in_repo else ''})")
    sections.append(f"- **Training data:** `{data_args.get('dataset_name_or_path', 'unknown')}`, "
                    f"evaluated on the `{test_split}` split")
    if image_size:
        sections.append(f"- **Input size:** {image_size}×{image_size}")
    if num_classes > 1:
        sections.append(f"- **Classes:** {num_classes} (a multi-class head without prompts: class c is mask "
                        f"token c + 1; ignore_index {data_args.get('ignore_index')})"
                        + (": " + ", ".join(class_label(i, class_names) for i in range(num_classes)) if class_names
                           else ""))

    sections += ["", "## Results", ""]
    if results:
        eval_prompt = data_args.get("eval_prompt", "box")
        prompts = "no prompts" if eval_prompt == "none" else f"**{eval_prompt}** prompts"
        sections.append(f"Final evaluation on the `{test_split}` split with {prompts} (metrics of "
                        "`infosam_hf.evaluation.metrics`" + ("; `mae` is lower-is-better" if "mae" in results else "") + "):")
        sections.append("")
        rows: dict[str, Mapping[str, float]] = {
            name: {k: float(v) for k, v in values.items() if isinstance(v, (int, float))}
            for name, values in (summary or {}).items() if name != "after training" and isinstance(values, Mapping)}
        rows["this adapter"] = results
        class_keys = [key for key in results if key.startswith(CLASS_IOU_PREFIX)]
        sections.append(_metric_table(rows, [key for key in results if key not in class_keys]))
        if class_keys:  # multi-class: IoU per class (confusion matrix over the whole split), one row each
            sections += ["", "IoU per class:", ""]
            per_class = {class_label(int(key.removeprefix(CLASS_IOU_PREFIX)), class_names): {name: values[key] for name, values in
                                                                           rows.items() if key in values}
                         for key in class_keys}
            sections.append(_metric_table(per_class, list(rows)))
    else:
        sections.append("No test evaluation was recorded for this run.")

    snippet_base = (f'{model_class}.from_pretrained("{adapter_ref}", subfolder="{BASE_MODEL_DIR}")' if base_in_repo
                    else f'{model_class}.from_pretrained("{base_ref}")')
    dynamic = bool((_read_json(output_dir / PREPROCESSOR_NAME) or {}).get("dynamic_input_size"))
    sections += ["", "## How to use", "", "`pip install infosam-hf`; the import registers the SAM tuners with peft and "
                 f"the adapter's image processor (its channel order, padding and input size) with `{processor_class}`.",
                 "", "```python", "import torch", "import infosam_hf  # registers the SAM tuners with peft",
                 "from peft import AutoPeftModel, PeftModel", "from PIL import Image",
                 f"from transformers import {model_class}, {processor_class}", "",
                 f'processor = {processor_class}.from_pretrained("{adapter_ref}")',
                 f"base = {snippet_base}",
                 f'model = PeftModel.from_pretrained(base, "{adapter_ref}").eval()']
    if dynamic:
        sections += ["infosam_hf.models.enable_dynamic_input_size(model.get_base_model())  # any H x W, as trained"]
    if not local_base:
        sections += ["# or, in one step (loads the recorded base model):",
                     f'# model = AutoPeftModel.from_pretrained("{adapter_ref}").eval()']
    if sam2:
        sections += ["# use mask token 0 in eval mode too, as trained (no fallback to the multimask outputs)",
                     "model.get_base_model().mask_decoder.dynamic_multimask_via_stability = False"]
    if num_classes > 1:  # no prompt; one channel per class, the prediction is the argmax
        sections += ["", 'image = Image.open("image.png").convert("RGB")',
                     'inputs = processor(images=image, return_tensors="pt")',
                     "with torch.no_grad():",
                     "    outputs = model(pixel_values=inputs[\"pixel_values\"], multimask_output=True)",
                     "logits = processor.image_processor.post_process_masks(",
                     '    outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"],',
                     "    binarize=False)",
                     f"classes = logits[0][0].argmax(0)  # (H, W) class ids 0..{num_classes - 1}",
                     "```", ""]
    else:
        sections += ["", 'image = Image.open("image.png").convert("RGB")',
                     "box = [20, 20, 90, 90]  # x0, y0, x1, y1 of the object, in the image's pixels",
                     "inputs = processor(images=image, input_boxes=[[box]], return_tensors=\"pt\")",
                     "with torch.no_grad():",
                     "    outputs = model(**inputs, multimask_output=False)",
                     "masks = processor.image_processor.post_process_masks(",
                     ('    outputs.pred_masks, inputs["original_sizes"])' if sam2 else
                      '    outputs.pred_masks, inputs["original_sizes"], inputs["reshaped_input_sizes"])'),
                     "```", ""]
    sections += [f"To get a plain `{model_class}` with the adapter merged in (mergeable methods such as LoRA): "
                 f"`infosam export {adapter_ref} merged/`."]

    sections += ["", "## Training", "", "| hyperparameter | value |", "|---|---|"]
    hyper: dict[str, Any] = {}
    for key in ("lambda_r", "lambda_d"):
        if key in training:
            hyper[f"{key} ({'λ1, relation compression' if key == 'lambda_r' else 'λ2, relation distillation'})"] = \
                training[key]
    for key in ("train_prompt", "eval_prompt"):
        if key in data_args:
            hyper[key] = data_args[key]
    for key in CARD_TRAINING_KEYS:
        if key == "num_train_epochs" and (training.get("max_steps") or 0) > 0:
            continue  # max_steps wins
        if key == "max_steps" and (training.get("max_steps") or 0) <= 0:
            continue
        if key in training and key not in ("lambda_r", "lambda_d"):
            hyper[key] = training[key]
    if image_size:
        hyper["image_size"] = image_size
    hyper["peft_method"] = peft_method
    if peft_args.get("peft_config"):
        hyper["peft_config"] = peft_args["peft_config"]
    for key in ("augment", "relation_from", "freeze_relation", "teacher_model_name_or_path"):
        value = data_args.get(key, model_args.get(key))
        if value:
            hyper[key] = value
    if trainer_state.get("global_step"):
        hyper["optimizer steps"] = trainer_state["global_step"]
    sections += [f"| {key} | {_fmt(value)} |" for key, value in hyper.items()]

    try:
        import peft
        import torch
        import transformers

        versions = [f"- PEFT {peft.__version__}", f"- Transformers {transformers.__version__}",
                    f"- PyTorch {torch.__version__}"]
    except ImportError:  # pragma: no cover
        versions = []
    sections += ["", "### Framework versions", "", *versions]
    sections += ["", "## Citation", "",
                 "If you use this model, please cite the InfoSAM paper: Yuanhong Zhang, Muyao Yuan, Weizhan Zhang, "
                 "Tieliang Gong, Wen Wen, Jiangyong Ying, Weijie Shi. *InfoSAM: Fine-Tuning the Segment Anything "
                 "Model from An Information-Theoretic Perspective.* ICML 2025. "
                 "[arXiv:2505.21920](https://arxiv.org/abs/2505.21920)", "", "```bibtex", INFOSAM_BIBTEX, "```", ""]

    content = f"---\n{card_data.to_yaml()}\n---\n\n" + "\n".join(sections)
    return ModelCard(content)


def training_args_dict(args: Any) -> dict[str, Any]:
    """``TrainingArguments`` as a JSON-ready dict for ``run_args.json``, without any token."""
    values = json.loads(json.dumps(args.to_dict(), default=str))
    return {key: value for key, value in values.items() if not key.endswith("_token")}


def write_model_card(output_dir: str | Path, repo_id: str | None = None, **kwargs) -> Path:
    """Build the card (see :func:`build_model_card`) and save it as ``output_dir/README.md``."""
    path = Path(output_dir) / "README.md"
    card = build_model_card(output_dir, repo_id, **kwargs)
    atomic_write_with(path, card.save)
    return path


# ------------------------------------------------------------------------------------------- push
def _default_api() -> HfApi:
    from . import __version__

    return HfApi(library_name="infosam-hf", library_version=__version__)


def push_adapter_dir(output_dir: str | Path, repo_id: str, *, private: bool | None = None,
                     revision: str | None = None, token: str | bool | None = None,
                     commit_message: str = "Upload InfoSAM adapter", create_repo: bool = True,
                     api: HfApi | None = None, blocking: bool = True):
    """Upload a run's ``output_dir`` to the Hub repo ``repo_id`` (created if needed).

    Uploads everything but checkpoints and ``_``/``.``-prefixed files, like ``Trainer.push_to_hub``.
    ``revision`` names a branch, created from ``main`` when missing. ``token=None`` lets
    ``huggingface_hub`` resolve the token; it is never logged.

    Returns the ``CommitInfo`` (a ``Future`` of it when ``blocking=False``).
    """
    output_dir = validate_adapter_dir(output_dir)
    api = api or _default_api()
    if create_repo:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True, token=token).repo_id
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
    logger.info("Pushing %s to %s", output_dir, repo_id)
    return api.upload_folder(
        repo_id=repo_id, folder_path=str(output_dir), commit_message=commit_message, token=token,
        revision=revision, ignore_patterns=PUSH_IGNORE_PATTERNS, run_as_future=not blocking,
    )
