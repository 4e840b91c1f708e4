"""What every command shares: logging set-up, the one-line error report, and the adapter options."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from ..errors import error_line
from ..import_hooks import after_import

__all__ = ["USER_ERRORS", "adapter_parser", "configure_logging", "run_main"]

# Errors that are the user's input, reported as one ``error: ...`` line (exit status 2). UsageError,
# RecipeError, DataError and BaseModelMismatchError are ValueErrors.
USER_ERRORS = (ValueError, OSError)
TRACEBACK_ENV = "INFOSAM_TRACEBACK"


def configure_logging(level: int = logging.WARNING) -> None:
    """One handler per log line (never a second one), warnings and above by default; quiet the noise.

    The root logger gets a handler unless it has one; loggers of libraries that print through their
    own handler stop propagating to it, so no line appears twice. Transformers' weight loading/saving
    bars (a second for a small model) and a deprecation warning peft triggers on transformers 5
    (``is_gradient_checkpointing``) tell the user nothing and are switched off.
    """
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    # transformers takes seconds to import: quiet it when something imports it, so `--help` stays instant
    after_import("huggingface_hub", _quiet_huggingface_hub)
    after_import("transformers", _quiet_transformers)


def _stop_propagating(name: str) -> None:
    library = logging.getLogger(name)
    if library.handlers:
        library.propagate = False


def _quiet_huggingface_hub() -> None:
    import huggingface_hub.utils.logging  # noqa: F401  (adds its handler now, so it is seen below)

    _stop_propagating("huggingface_hub")


def _quiet_transformers() -> None:
    import transformers.utils.logging as transformers_logging

    transformers_logging.get_logger("transformers")  # adds its handler now, so it is seen below
    _stop_propagating("transformers")
    transformers_logging.disable_progress_bar()


def run_main(body: Callable[[list[str]], int], argv: Sequence[str] | None) -> int:
    """Run a command's ``body(argv)``; a user error becomes one ``error:`` line on stderr and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    configure_logging()
    try:
        return body(argv)
    except USER_ERRORS as err:
        if os.environ.get(TRACEBACK_ENV):
            raise
        print(f"error: {error_line(err)}  ({TRACEBACK_ENV}=1 shows the traceback)", file=sys.stderr)
        return 2


def adapter_parser(prog: str, description: str) -> argparse.ArgumentParser:
    """The options every command that loads a trained adapter shares (``evaluate``, ``predict``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description, allow_abbrev=False)
    parser.add_argument("--adapter", required=True,
                        help="Adapter directory or Hub repo id; 'none' uses the base model alone (zero-shot).")
    parser.add_argument("--base_model", default=None,
                        help="Base SAM (default: the adapter's recorded base model).")
    parser.add_argument("--batch_size", type=int, default=None, help="Images per forward pass.")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:1 ... (default: auto).")
    return parser
