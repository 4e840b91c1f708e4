"""``infosam export ADAPTER OUT [--base_model B] [--revision R]``: merge an adapter into a plain ``SamModel``;
``infosam export ADAPTER --onnx DIR``: ONNX encoder + prompt-decoder graphs, checked with onnxruntime."""

from __future__ import annotations

import argparse
from pathlib import Path
from collections.abc import Sequence

from ..errors import UsageError
from ..files import ADAPTER_CONFIG_NAME
from ..remote import check_pretrained_name
from .common import run_main

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infosam export",
        description="Merge an InfoSAM adapter into its base SAM and save a plain SamModel (Sam2Model for SAM 2).")
    parser.add_argument("adapter", help="adapter directory (a run's output_dir) or Hub repo id")
    parser.add_argument("output_dir", nargs="?", default=None, help="where to save the merged model")
    parser.add_argument("--onnx", default=None, help="also (or instead) export ONNX graphs to this folder")
    parser.add_argument("--onnx_input_size", default=None,
                        help="HxW whole-image input the ONNX predictor uses for a dynamic-size model (default: the run's "
                             "resize, else its square size); its encoder graph takes any size")
    parser.add_argument("--base_model", default=None, help="base SAM (default: the adapter's recorded base)")
    parser.add_argument("--revision", default=None, help="revision of a Hub adapter")
    return parser


def _export(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if not args.output_dir and not args.onnx:
        raise UsageError("give an output folder for the merged model, or --onnx DIR (or both)")
    size = _parse_size(args.onnx_input_size)
    check_pretrained_name(args.adapter, "adapter", marker_file=ADAPTER_CONFIG_NAME)  # before torch is imported
    if Path(args.adapter).is_dir() and not (Path(args.adapter) / ADAPTER_CONFIG_NAME).is_file():
        raise UsageError(f"{args.adapter}: not a PEFT adapter (no {ADAPTER_CONFIG_NAME})")
    if args.onnx:
        from ..convert.onnx import export_adapter_onnx

        diffs = export_adapter_onnx(args.adapter, args.onnx, args.base_model, args.revision, input_size=size)
        print(f"ONNX graphs saved to {args.onnx}; onnxruntime vs PyTorch max abs difference: "
              + ", ".join(f"{key} {value:.2e}" for key, value in diffs.items()))
    if args.output_dir:
        import torch

        from ..models.merge import export_merged

        with torch.no_grad():
            out = export_merged(args.adapter, args.output_dir, args.base_model, args.revision)
        print(f"Merged model saved to {out}")
    return 0


def _parse_size(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise UsageError(f"--onnx_input_size {text!r}: expected HxW, e.g. 512x768") from None
    return height, width


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``error:`` line on bad input."""
    return run_main(_export, argv)
