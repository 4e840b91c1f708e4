"""``infosam COMMAND [options]``: one entry point for every command, as ``trl sft`` is for TRL."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["COMMANDS", "HELP_FILE", "command_help", "write_command_help", "main"]

# `infosam COMMAND --help` for the commands whose modules import torch: the text their parsers print, stored by
# write_command_help() (tests/test_cli_speed.py checks it is current), so help appears at once.
HELP_FILE = Path(__file__).with_name("command_help.json")
HELP_WIDTH = 100

# command -> (module under infosam_hf.commands, one-line summary)
COMMANDS = {
    "train": ("train", "fine-tune SAM from a recipe: infosam train RECIPE.yaml [--key value ...]"),
    "evaluate": ("evaluate", "score an adapter (or the zero-shot base) on a dataset split"),
    "predict": ("predict", "masks and overlays for new images"),
    "export": ("export", "merge an adapter into a plain SamModel (or Sam2Model)"),
    "convert": ("convert", "original SAM checkpoints (sam_vit_*.pth, MedSAM) -> a SamModel directory"),
    "push": ("push", "push a finished run to the Hugging Face Hub"),
    "download": ("download", "fetch the public benchmark data sets"),
    "env": ("env", "print versions and the device, for bug reports"),
}


def usage() -> str:
    width = max(map(len, COMMANDS)) + 2
    lines = ["usage: infosam COMMAND [options]   (infosam COMMAND --help for a command's options)", "",
             "commands:"]
    lines += [f"  {name:<{width}}{summary}" for name, (_, summary) in COMMANDS.items()]
    return "\n".join(lines)


def command_help(name: str) -> str:
    """What ``infosam NAME --help`` prints, computed by running the command's parser."""
    module = importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")
    out, columns = io.StringIO(), os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = str(HELP_WIDTH)  # argparse wraps at the terminal's width: store one width
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            module.main(["--help"])
    finally:
        if columns is None:
            os.environ.pop("COLUMNS")
        else:
            os.environ["COLUMNS"] = columns
    return out.getvalue()


def write_command_help() -> Path:
    """Regenerate :data:`HELP_FILE` (after changing a command's options)."""
    texts = {name: command_help(name) for name in COMMANDS if name not in ("train", "env")}
    HELP_FILE.write_text(json.dumps(texts, indent=1, sort_keys=True) + "\n")
    return HELP_FILE


def _stored_help(name: str, rest: Sequence[str]) -> str | None:
    if list(rest) not in (["-h"], ["--help"]) or not HELP_FILE.is_file():
        return None
    return json.loads(HELP_FILE.read_text()).get(name)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    stored = _stored_help(name, rest)
    if stored is not None:
        print(stored, end="")
        return 0
    module = importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
