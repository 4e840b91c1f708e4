"""Resume checkpoints checked up front, before any model loads: present, complete, of this configuration."""

from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..file_checks import check_adapter_dir
from .recipe import RecipeError

logger = logging.getLogger(__name__)

__all__ = ["TRUE_WORDS", "interrupted_message", "resolve_resume_checkpoint"]

TRUE_WORDS = ("true", "True", "yes", "last")
_STATE = "trainer_state.json"
_TRAINING_STATE = ("optimizer.pt", "scheduler.pt")


def _complete(checkpoint: Path) -> bool:
    return (checkpoint / _STATE).is_file() and (checkpoint / "adapter_config.json").is_file()


def _last_complete(output_dir: str) -> Path | None:
    """The complete checkpoint with the highest step in ``output_dir`` (a half-written later one is skipped)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return None
    steps = sorted(((int(m.group(1)), p) for p in folder.iterdir()
                    if p.is_dir() and (m := re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", p.name))), reverse=True)
    for _, checkpoint in steps:
        if _complete(checkpoint):
            return checkpoint
        logger.warning("Skipping %s: incomplete (no %s or adapter_config.json; a save that did not finish)",
                       checkpoint, _STATE)
    return None


def resolve_resume_checkpoint(value: str | bool | None, output_dir: str, peft_type: str | None = None,
                              peft_options: dict | None = None, model_only: bool = False) -> str | None:
    """The checkpoint folder to resume from (``true``: the last complete one in ``output_dir``), checked: a
    complete checkpoint, readable weights, the run's PEFT type and rank, and the optimizer and scheduler state
    (their absence is an error unless ``model_only``: the optimizer then restarts, said in one line)."""
    if value in (None, False, "", "false", "False", "no"):
        return None
    if value is True or value in TRUE_WORDS:
        checkpoint = _last_complete(output_dir)
        if checkpoint is None:
            raise RecipeError(f"resume_from_checkpoint: true, but output_dir={output_dir!r} holds no complete "
                              f"{PREFIX_CHECKPOINT_DIR}-N folder; drop resume_from_checkpoint to start afresh")
    else:
        checkpoint = Path(value)
        if not checkpoint.is_dir():
            raise RecipeError(f"resume_from_checkpoint={str(value)!r}: no such checkpoint folder")
        if not (checkpoint / _STATE).is_file():
            raise RecipeError(f"resume_from_checkpoint={str(value)!r}: incomplete checkpoint (no {_STATE}; "
                              "a save that did not finish): resume from an earlier checkpoint")
    config = check_adapter_dir(checkpoint)
    saved_type = str(config.get("peft_type", ""))
    peft_type = str(getattr(peft_type, "value", peft_type or ""))
    if peft_type and saved_type and saved_type.upper() != str(peft_type).upper():
        raise RecipeError(f"resume_from_checkpoint={str(checkpoint)!r} holds a {saved_type} adapter, but this run "
                          f"trains {peft_type}: resume with the recipe that wrote it")
    for key, wanted in (peft_options or {}).items():
        if key in config and isinstance(wanted, (int, float, str)) and config[key] != wanted:
            raise RecipeError(f"resume_from_checkpoint={str(checkpoint)!r} was trained with {key}={config[key]!r}, "
                              f"this run sets {key}={wanted!r}: resume with the recipe that wrote it")
    missing = [name for name in _TRAINING_STATE if not (checkpoint / name).is_file()]
    if missing and not model_only:
        raise RecipeError(f"resume_from_checkpoint={str(checkpoint)!r} has no {' / '.join(missing)}: the optimizer "
                          "would silently restart; pass --resume_model_only true to resume the weights alone")
    if missing:
        logger.warning("Resuming %s without %s: the optimizer and learning-rate schedule restart", checkpoint,
                       " / ".join(missing))
    for name in (_STATE,):
        try:
            json.loads((checkpoint / name).read_text())
        except (OSError, ValueError) as err:
            raise RecipeError(f"{checkpoint / name}: not valid JSON ({err}); resume from an earlier checkpoint") from None
    return os.fspath(checkpoint)


def interrupted_message(step: int | None, output_dir: str) -> str:
    """The one line a Ctrl-C ends a run with: the step, and how to resume from the last complete checkpoint."""
    checkpoint = _last_complete(output_dir)
    where = "interrupted" if step is None else f"interrupted at step {step}"
    if checkpoint is None:
        return (f"{where}; no checkpoint was saved yet, so a new run starts over "
                f"(save_steps sets how often checkpoints are written)")
    return (f"{where}; resume from {checkpoint.name} with --resume_from_checkpoint true "
            f"--output_dir {output_dir}")
