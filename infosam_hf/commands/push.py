"""``infosam push OUTPUT_DIR REPO_ID [--private] [--revision REV]``: push a finished run to the Hub."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from ..errors import UsageError, error_line
from ..files import validate_adapter_dir
from ..remote import hub_unreachable_reason
from .common import run_main

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infosam push", description="Push a finished InfoSAM run (a PEFT adapter directory) to the Hub. "
                                         "The token comes from HF_TOKEN or `hf auth login`.")
    parser.add_argument("output_dir", help="the run's output_dir")
    parser.add_argument("repo_id", nargs="?", help="target model repo, e.g. user/sam-vit-base-infosam-kvasir")
    parser.add_argument("--space", default=None, metavar="DIR",
                        help="instead of pushing, write a Gradio Space (app.py, requirements.txt, README.md, the "
                             "adapter) to the new folder DIR, ready to push as a Space")
    parser.add_argument("--private", action="store_true", help="create the repo private (no effect if it exists)")
    parser.add_argument("--revision", default=None, help="branch to push to (created if missing)")
    parser.add_argument("--commit_message", default="Upload InfoSAM adapter")
    parser.add_argument("--keep_card", action="store_true",
                        help="upload README.md as it is instead of regenerating the card for REPO_ID")
    return parser


def _push(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    output_dir = validate_adapter_dir(args.output_dir)
    if args.space:
        from ..interactive.space import write_space

        print(f"Space files written to {write_space(output_dir, args.space)} (push it as a Gradio Space)")
        return 0
    if not args.repo_id:
        raise UsageError("give the target REPO_ID (or --space DIR to write Space files)")
    from huggingface_hub.utils import validate_repo_id

    from ..hub import push_adapter_dir, write_model_card

    validate_repo_id(args.repo_id)
    reason = hub_unreachable_reason()
    if reason:  # before the card is rewritten: nothing on disk changes when the push cannot start
        raise OSError(f"cannot push to {args.repo_id}: the Hugging Face Hub is unreachable ({reason}); "
                      f"nothing in {output_dir} was changed")
    card = output_dir / "README.md"
    old_card = card.read_bytes() if card.is_file() else None
    if not (args.keep_card and old_card is not None):
        write_model_card(output_dir, args.repo_id)
    try:
        info = push_adapter_dir(output_dir, args.repo_id, private=args.private or None, revision=args.revision,
                                commit_message=args.commit_message)
    except Exception as err:  # noqa: BLE001 - any failed push (network, auth, HTTP): restore, then one line
        if old_card is None:
            card.unlink(missing_ok=True)
        else:
            card.write_bytes(old_card)
        raise OSError(f"push to {args.repo_id} failed ({type(err).__name__}: {error_line(err)}); "
                      f"{output_dir} is unchanged") from err
    url = getattr(info, "commit_url", None) or getattr(info, "repo_url", None) or args.repo_id
    print(f"Pushed {output_dir} to {url}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 2 with one ``error:`` line on bad input or a failed push."""
    return run_main(_push, argv)
