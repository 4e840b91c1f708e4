"""Reading relation-module weights from a previous run's adapter or an official ``.pth`` file."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors.torch import load_file

from .modeling import RELATION_MODULE_NAME
from .relation import load_official_relation_state_dict

__all__ = ["ADAPTER_WEIGHTS_NAME", "load_relation_state_dict", "relation_state_from_adapter_weights"]

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"


def relation_state_from_adapter_weights(weights: dict[str, torch.Tensor], source: str = "adapter") -> dict[str, torch.Tensor]:
    """The relation module's state dict out of a PEFT adapter state dict."""
    marker = f"{RELATION_MODULE_NAME}."
    state = {}
    for key, value in weights.items():
        if marker in key:
            name = key.split(marker, 1)[1].removeprefix("modules_to_save.default.")
            state[name] = value
    if not state:
        raise ValueError(f"{source}: holds no relation-module weights (was it trained with infosam-hf?)")
    return state


def load_relation_state_dict(source: str | os.PathLike, revision: str | None = None) -> dict[str, torch.Tensor]:
    """Relation weights from ``source``: an official ``relation_models/N.pth``, an adapter directory,
    or a Hub repo id holding ``adapter_model.safetensors``. Only safetensors and ``weights_only`` loads."""
    path = Path(source)
    if path.suffix in (".pth", ".pt", ".bin"):
        if not path.is_file():
            raise FileNotFoundError(f"relation_from={source}: file not found")
        return load_official_relation_state_dict(path)
    if path.is_dir():
        weights_path = path / ADAPTER_WEIGHTS_NAME
        if not weights_path.is_file():
            raise FileNotFoundError(f"relation_from={source}: no {ADAPTER_WEIGHTS_NAME} in the directory")
    else:
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import HFValidationError
        from huggingface_hub.utils import validate_repo_id

        try:
            validate_repo_id(str(source))
        except HFValidationError:
            raise FileNotFoundError(f"relation_from={source}: no such file or directory") from None
        if path.is_absolute() or str(source).startswith("."):
            raise FileNotFoundError(f"relation_from={source}: no such file or directory")
        try:
            weights_path = Path(hf_hub_download(str(source), ADAPTER_WEIGHTS_NAME, revision=revision))
        except OSError as err:  # not found, offline, no access: one line, like a local miss
            raise FileNotFoundError(f"relation_from={source}: not a local path and no {ADAPTER_WEIGHTS_NAME} "
                                    f"could be fetched from the Hub ({type(err).__name__})") from None
    return relation_state_from_adapter_weights(load_file(str(weights_path)), str(source))
