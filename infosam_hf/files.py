"""What a run writes: the file and folder names of an output directory, and the check that one holds an adapter.

One module below every subpackage, so ``models``, ``training``, ``evaluation`` and ``hub`` agree on names without
importing each other."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

__all__ = ["ADAPTER_CONFIG_NAME", "ADAPTER_WEIGHTS_NAME", "BASE_MODEL_DIR", "CLICK_CURVE_NAME", "CLICK_RESULTS_NAME", "EPOCH_DIR", "EVAL_RESULTS_NAME", "EVAL_SUMMARY_NAME",
           "PREPROCESSOR_NAME", "PROTOCOL_RESULTS_NAME", "RUN_ARGS_NAME", "SAMPLES_DIR", "TEST_RESULTS_NAME",
           "TRAINER_STATE_NAME", "AdapterDirError", "read_json", "validate_adapter_dir"]

ADAPTER_CONFIG_NAME = "adapter_config.json"
# peft's SAFETENSORS_WEIGHTS_NAME, spelled out: importing peft here would register the tuners while this module
# is half-initialised (tests/test_import_layers.py checks both the value and that every module imports first)
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
PREPROCESSOR_NAME = "preprocessor_config.json"
RUN_ARGS_NAME = "run_args.json"
TEST_RESULTS_NAME = "test_results.json"
EVAL_RESULTS_NAME = "eval_results.json"  # `infosam evaluate` beside a local adapter
CLICK_CURVE_NAME = "click_curve.png"  # IoU after each simulated click
CLICK_RESULTS_NAME = "click_results.json"  # a run's click-by-click test scores (eval_clicks)
EVAL_SUMMARY_NAME = "eval_summary.json"
TRAINER_STATE_NAME = "trainer_state.json"
PROTOCOL_RESULTS_NAME = "protocol_results.json"
BASE_MODEL_DIR = "base_model"  # where a run keeps a base that has no Hub id (built from config or resized)
EPOCH_DIR = "epoch_{}"
SAMPLES_DIR = "samples"


class AdapterDirError(ValueError):
    """The directory is not a (safetensors) PEFT adapter written by a training run."""


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None (with a warning when unreadable) if absent, unreadable or not an object."""
    if not path.is_file():
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError) as err:
        logger.warning("Could not read %s: %s", path, err)
        return None
    return value if isinstance(value, dict) else None


def validate_adapter_dir(path: str | Path) -> Path:
    """Check that ``path`` is a finished run's adapter directory; raise :class:`AdapterDirError` if not."""
    path = Path(path)
    if not path.is_dir():
        raise AdapterDirError(f"{path}: not a directory")
    config = path / ADAPTER_CONFIG_NAME
    if not config.is_file():
        raise AdapterDirError(f"{path}: no {ADAPTER_CONFIG_NAME} (not a PEFT adapter directory)")
    parsed = read_json(config)
    if parsed is None or "peft_type" not in parsed:
        raise AdapterDirError(f"{config}: not a valid PEFT adapter config")
    if not (path / ADAPTER_WEIGHTS_NAME).is_file():
        raise AdapterDirError(f"{path}: no {ADAPTER_WEIGHTS_NAME} (only safetensors adapters are pushed)")
    return path
