"""``infosam convert sam CHECKPOINT.pth OUT_DIR [--model_type auto|vit_b|vit_l|vit_h]``: bring original
SAM checkpoints (Meta's ``sam_vit_*.pth``, MedSAM and other fine-tunes in that format) into HF format.
``infosam convert infosam CKPT.pth OUT_DIR --base facebook/sam-vit-base [--relation relation_models/N.pth]``:
an official InfoSAM checkpoint into a ``sam_adapter`` adapter directory."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

from ..convert.presets import DEFAULT_DECODER_HEADS, OFFICIAL_HUB_REPO, ORIGINAL_SAM_PRESETS
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
    official = kinds.add_parser(
        "infosam", allow_abbrev=False, help="official InfoSAM <backend>_<epoch>_.pth -> sam_adapter adapter directory",
        description="Convert an official InfoSAM checkpoint (the whole SAM with series adapters, trained LayerNorms "
                    "and decoder, saved under 'model') and its relation_models/<epoch>.pth into a sam_adapter "
                    "adapter directory over --base, loadable with AutoPeftModel.from_pretrained. Files are local "
                    f"paths, hf://OWNER/REPO/FILE (e.g. hf://{OFFICIAL_HUB_REPO}/...), or files of --repo_id; read "
                    "with torch.load(weights_only=True).")
    official.add_argument("checkpoint", help="official <backend>_<epoch>_.pth, hf://OWNER/REPO/FILE, or a file of --repo_id")
    official.add_argument("output_dir", help="the adapter directory to write")
    official.add_argument("--base", required=True,
                          help="the base SAM the run started from (hub id or directory, e.g. facebook/sam-vit-base, or "
                               "a directory made by 'infosam convert sam sam_vit_b_01ec64.pth')")
    official.add_argument("--relation", default=None,
                          help="relation_models/<epoch>.pth (default: the one beside a local checkpoint, if there)")
    official.add_argument("--repo_id", default=None, help=f"Hub repo holding the files (e.g. {OFFICIAL_HUB_REPO})")
    official.add_argument("--atol", type=float, default=0.0,
                          help="tolerance of the check that the frozen weights equal the base's (default: exact)")
    return parser


def _convert(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    _check_local_files(args)
    import torch

    from ..convert import convert_official_infosam, convert_original_sam

    with torch.no_grad():
        if args.kind == "infosam":
            out = convert_official_infosam(args.checkpoint, args.output_dir, args.base, args.relation, args.repo_id,
                                           args.atol)
            print(f"sam_adapter adapter saved to {out} (AutoPeftModel.from_pretrained after 'import infosam_hf')")
            return 0
        out = convert_original_sam(args.checkpoint, args.output_dir, args.model_type, args.decoder_heads)
    print(f"SamModel saved to {out} (use it as model_name_or_path)")
    return 0


def _check_local_files(args: argparse.Namespace) -> None:
    """A checkpoint that is meant as a local file (not hf://, no --repo_id) must exist: one line, before torch loads."""
    for value in [args.checkpoint] + ([args.relation] if getattr(args, "relation", None) else []):
        remote = value.startswith("hf://") or getattr(args, "repo_id", None)
        if not remote and not os.path.isfile(value):
            raise FileNotFoundError(f"{value}: no such checkpoint file")


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``error:`` line on bad input."""
    return run_main(_convert, argv)
