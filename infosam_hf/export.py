"""Export a trained adapter as a plain ``SamModel``: ``merge_and_unload()`` then ``save_pretrained``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoImageProcessor, SamModel

from .hub import AdapterDirError, validate_adapter_dir
from .inference import load_for_inference
from .modeling import RELATION_MODULE_NAME

logger = logging.getLogger(__name__)

__all__ = ["merge_adapter", "export_merged", "main"]


def merge_adapter(adapter: str, base_model: str | None = None, revision: str | None = None) -> SamModel:
    """``base + adapter`` with the LoRA deltas merged into the weights, as a plain ``SamModel``.

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
    """Merge ``adapter`` into its base and save a ``SamModel`` (safetensors) plus the image processor config.

    ``SamModel.from_pretrained(output_dir)`` then loads it without missing or unexpected keys.
    """
    if Path(adapter).exists():
        validate_adapter_dir(adapter)
    output_dir = Path(output_dir)
    merged = merge_adapter(adapter, base_model, revision)
    merged.save_pretrained(output_dir)
    try:
        processor = AutoImageProcessor.from_pretrained(adapter, revision=revision)
    except (OSError, ValueError):
        logger.warning("%s has no preprocessor_config.json; the export has none either", adapter)
    else:
        processor.save_pretrained(output_dir)
    return output_dir


def main(argv: Sequence[str] | None = None) -> int:
    """``export.py ADAPTER OUT [--base_model B] [--revision R]``."""
    parser = argparse.ArgumentParser(
        prog="export.py", description="Merge an InfoSAM adapter into its base SAM and save a plain SamModel.")
    parser.add_argument("adapter", help="adapter directory (a run's output_dir) or Hub repo id")
    parser.add_argument("output_dir", help="where to save the merged SamModel")
    parser.add_argument("--base_model", default=None, help="base SAM (default: the adapter's recorded base)")
    parser.add_argument("--revision", default=None, help="revision of a Hub adapter")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        with torch.no_grad():
            out = export_merged(args.adapter, args.output_dir, args.base_model, args.revision)
    except (AdapterDirError, OSError, ValueError) as err:
        message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        print(f"error: {message}", file=sys.stderr)
        return 2
    print(f"Merged SamModel saved to {out}")
    return 0
