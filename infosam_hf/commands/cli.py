"""``infosam COMMAND [options]``: one entry point for every command, as ``trl sft`` is for TRL."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

__all__ = ["COMMANDS", "main"]

# command -> (module under infosam_hf.commands, one-line summary)
COMMANDS = {
    "train": ("train", "fine-tune SAM from a recipe: infosam train RECIPE.yaml [--key value ...]"),
    "evaluate": ("evaluate", "score an adapter (or the zero-shot base) on a dataset split"),
    "predict": ("predict", "masks and overlays for new images"),
    "export": ("export", "merge an adapter into a plain SamModel (or Sam2Model)"),
    "convert": ("convert", "original SAM checkpoints (sam_vit_*.pth, MedSAM) -> a SamModel directory"),
    "demo": ("demo", "a web page to try an adapter click by click, beside the base model"),
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


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"{__package__}.{COMMANDS[name][0]}")
    return module.main(rest)


if __name__ == "__main__":
    sys.exit(main())
