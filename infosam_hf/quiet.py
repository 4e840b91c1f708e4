"""Third-party warnings that our own calls would raise on every run, silenced where we make those calls."""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator

__all__ = ["peft_wrapping"]


@contextlib.contextmanager
def peft_wrapping() -> Iterator[None]:
    """Around ``get_peft_model`` / ``PeftModel.from_pretrained``: peft 0.21 reads transformers' deprecated
    ``is_gradient_checkpointing`` property on every wrap (a ``FutureWarning`` per adapter load, about peft's code,
    not the user's)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield
