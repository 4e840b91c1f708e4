"""``infosam export ADAPTER OUT [--base_model B] [--revision R]``: merge an adapter into a plain ``SamModel``."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from ..models.merge import export_merged
from .common import run_main

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infosam export",
        description="Merge an InfoSAM adapter into its base SAM and save a plain SamModel (Sam2Model for SAM 2).")
    parser.add_argument("adapter", help="adapter directory (a run's output_dir) or Hub repo id")
    parser.add_argument("output_dir", help="where to save the merged model")
    parser.add_argument("--base_model", default=None, help="base SAM (default: the adapter's recorded base)")
    parser.add_argument("--revision", default=None, help="revision of a Hub adapter")
    return parser


def _export(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    with torch.no_grad():
        out = export_merged(args.adapter, args.output_dir, args.base_model, args.revision)
    print(f"Merged model saved to {out}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``error:`` line on bad input."""
    return run_main(_export, argv)
