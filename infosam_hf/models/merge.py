"""Export a trained adapter as a plain ``SamModel`` / ``Sam2Model``: ``merge_and_unload()`` then ``save_pretrained``."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from transformers import AutoImageProcessor, Sam2Model, SamModel
from transformers.utils import IMAGE_PROCESSOR_NAME as PREPROCESSOR_NAME

from ..files import validate_adapter_dir
from ..relation import RELATION_MODULE_NAME
from .inference import load_for_inference

logger = logging.getLogger(__name__)

__all__ = ["merge_adapter", "export_merged"]


def merge_adapter(adapter: str, base_model: str | None = None, revision: str | None = None) -> SamModel | Sam2Model:
    """``base + adapter`` with the adapter merged into the weights (mergeable peft methods such as LoRA), as a
    plain ``SamModel`` (or ``Sam2Model``).

    The trained ``modules_to_save`` copies (the mask decoder) replace the originals; the relation module,
    which only the training losses use, is removed so the result has exactly ``SamModel``'s weights.
    """
    model = load_for_inference(adapter, base_model, revision=revision)
    merged = model.merge_and_unload()
    if hasattr(merged, RELATION_MODULE_NAME):
        delattr(merged, RELATION_MODULE_NAME)
    return merged.eval()


def export_merged(adapter: str, output_dir: str | Path, base_model: str | None = None,
                  revision: str | None = None) -> Path:
    """Merge ``adapter`` into its base and save a ``SamModel`` / ``Sam2Model`` (safetensors) plus the image
    processor config.

    ``SamModel.from_pretrained(output_dir)`` (``Sam2Model`` for SAM 2) then loads it without missing or
    unexpected keys.
    """
    if Path(adapter).exists():
        validate_adapter_dir(adapter)
    output_dir = Path(output_dir)
    merged = merge_adapter(adapter, base_model, revision)
    merged.save_pretrained(output_dir)
    try:
        processor = AutoImageProcessor.from_pretrained(adapter, revision=revision)
    except (OSError, ValueError):
        local = Path(adapter) / PREPROCESSOR_NAME
        if local.is_file():  # e.g. Sam2ImageProcessor, which needs torchvision: copy its config unchanged
            shutil.copyfile(local, output_dir / PREPROCESSOR_NAME)
        else:
            logger.warning("%s has no preprocessor_config.json; the export has none either", adapter)
    else:
        processor.save_pretrained(output_dir)
    return output_dir
