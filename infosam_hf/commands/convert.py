"""``infosam convert sam CHECKPOINT.pth OUT_DIR [--model_type auto|vit_b|vit_l|vit_h]``: bring original
SAM checkpoints (Meta's ``sam_vit_*.pth``, MedSAM and other fine-tunes in that format) into HF format."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from ..models.convert import DEFAULT_DECODER_HEADS, ORIGINAL_SAM_PRESETS, convert_original_sam
from .common import run_main

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="infosam convert", description="Convert checkpoints into HF format.",
                                     allow_abbrev=False)
    kinds = parser.add_subparsers(dest="kind", required=True, metavar="KIND")
    sam = kinds.add_parser("sam", allow_abbrev=False,
                           help="original segment_anything .pth -> SamModel save_pretrained directory",
                           description="Convert an original SAM checkpoint (sam_vit_b_01ec64.pth, medsam_vit_b.pth, "
                                       "...) into a directory that model_name_or_path accepts. Loaded with "
                                       "torch.load(weights_only=True); the architecture is read from the shapes.")
    sam.add_argument("checkpoint", help="original SAM .pth (a state dict, optionally under 'model')")
    sam.add_argument("output_dir", help="where to write config.json, model.safetensors, preprocessor_config.json")
    sam.add_argument("--model_type", default="auto", choices=["auto", *ORIGINAL_SAM_PRESETS],
                     help="check the checkpoint against a released architecture (default: auto, read from shapes)")
    sam.add_argument("--decoder_heads", type=int, default=DEFAULT_DECODER_HEADS,
                     help="attention heads of the mask decoder, not stored in checkpoints (default: 8, as in "
                          "every released SAM)")
    return parser


def _convert(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    with torch.no_grad():
        out = convert_original_sam(args.checkpoint, args.output_dir, args.model_type, args.decoder_heads)
    print(f"SamModel saved to {out} (use it as model_name_or_path)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``error:`` line on bad input."""
    return run_main(_convert, argv)
