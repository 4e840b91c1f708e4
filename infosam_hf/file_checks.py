"""Files the project reads, checked where they are read: one line naming the file and what is wrong with it."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

__all__ = ["DamagedFileError", "check_adapter_dir", "check_safetensors", "read_json_file"]

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


class DamagedFileError(ValueError):
    """A file the project reads is missing, truncated or not what its name says."""


def read_json_file(path: str | os.PathLike, what: str = "file") -> Any:
    """The JSON in ``path``, or one line naming the file when it is empty or not valid JSON."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise DamagedFileError(f"{path}: {what} is not text (damaged)") from None
    if not text.strip():
        raise DamagedFileError(f"{path}: {what} is empty")
    try:
        return json.loads(text)
    except ValueError as err:
        raise DamagedFileError(f"{path}: {what} is not valid JSON ({err})") from None


def check_safetensors(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape of a safetensors file, after checking it is complete and holds at least one tensor."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(path, framework="pt") as handle:
            shapes = {key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118 - safe_open is not a dict
    except Exception as err:  # noqa: BLE001 - safetensors raises its own SafetensorError for damaged files
        raise DamagedFileError(f"{path}: damaged or truncated safetensors file ({str(err).splitlines()[0]})") from None
    if not shapes:
        raise DamagedFileError(f"{path}: the weights file holds no tensors")
    return shapes


def _known_peft_types() -> set[str]:
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING  # importing peft registers the SAM tuners (__init__)

    return {str(getattr(name, "value", name)).upper() for name in PEFT_TYPE_TO_CONFIG_MAPPING}


def check_adapter_dir(folder: str | os.PathLike) -> dict[str, Any]:
    """The ``adapter_config.json`` of a local adapter folder, after checking it and the weights beside it: valid
    JSON with a known ``peft_type``, a complete weights file with tensors, and (LoRA-like) a rank matching ``r``."""
    folder = Path(folder)
    config_path = folder / ADAPTER_CONFIG
    if not config_path.is_file():
        raise DamagedFileError(f"{folder}: not a PEFT adapter (no {ADAPTER_CONFIG})")
    config = read_json_file(config_path, "the adapter config")
    if not isinstance(config, dict):
        raise DamagedFileError(f"{config_path}: the adapter config is not a JSON object")
    peft_type = str(config.get("peft_type") or "")
    known = _known_peft_types()
    if peft_type.upper() not in known:
        raise DamagedFileError(f"{config_path}: unknown peft_type {peft_type!r} (known: "
                               f"{', '.join(sorted(known)[:12])} …)")
    weights = [folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()]
    if not weights:
        raise DamagedFileError(f"{folder}: no adapter weights ({' or '.join(ADAPTER_WEIGHTS)})")
    if weights[0].suffix == ".safetensors":
        shapes = check_safetensors(weights[0])
        rank = config.get("r")
        if isinstance(rank, int) and not config.get("rank_pattern"):
            for name, shape in shapes.items():
                if re.search(r"lora_A(\.[^.]+)?\.weight$", name) and shape and shape[0] != rank:
                    raise DamagedFileError(f"{weights[0]}: {name} has rank {shape[0]}, but {config_path} says "
                                           f"r={rank} (weights and config of different adapters)")
    return config
