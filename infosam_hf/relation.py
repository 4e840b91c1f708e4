"""The InfoSAM relation module, shared by the teacher and the student: building it, attaching it to a SAM, finding
it under PEFT, and reading its weights back
(from an official ``relation_models/N.pth``, a previous run's adapter, or a Hub repo)."""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from .file_checks import check_safetensors
from .files import ADAPTER_WEIGHTS_NAME as SAFETENSORS_WEIGHTS_NAME

__all__ = [
    "RELATION_MODULE_NAME",
    "RelationModule",
    "attach_relation_module",
    "get_relation_module",
    "load_official_relation_state_dict",
    "load_relation_state_dict",
    "relation_state_from_adapter_weights",
]

RELATION_MODULE_NAME = "relation_module"  # the attribute name on SamModel, and the modules_to_save entry


class RelationModule(nn.Module):
    """Maps (image embeddings, mask token) to one L2-normalised relation map per image.

    ``score = q·kᵀ/√dim + LN(mask_token)·LN(image_embeds)ᵀ`` with ``q = Wq·LN(mask_token)`` and
    ``k = Wk·LN(image_embeds)``; each row is L2-normalised over the HW positions.

    Args:
        dim: channel size of both inputs (256 for every released SAM).
    """

    def __init__(self, dim: int = 256):
        super().__init__()
        self.dim = dim
        self.scale = dim**-0.5
        self.layer_norm_feat = nn.LayerNorm(dim)
        self.layer_norm_mask = nn.LayerNorm(dim)
        self.query_proj = nn.Linear(dim, dim)
        self.key_proj = nn.Linear(dim, dim)

    def forward(self, image_embeds: torch.Tensor, mask_token: torch.Tensor) -> torch.Tensor:
        """image_embeds: (B, HW, dim); mask_token: (B, 1, dim). Returns (B, HW)."""
        if image_embeds.dim() != 3 or mask_token.dim() != 3 or mask_token.shape[1] != 1:
            raise ValueError(
                f"RelationModule expects image_embeds (B, HW, dim) and mask_token (B, 1, dim); "
                f"got {tuple(image_embeds.shape)} and {tuple(mask_token.shape)}"
            )
        dtype = self.query_proj.weight.dtype  # features captured under autocast may be bf16/fp16
        feat = self.layer_norm_feat(image_embeds.to(dtype))
        token = self.layer_norm_mask(mask_token.to(dtype))
        query = self.query_proj(token)
        key = self.key_proj(feat)
        score = query @ key.transpose(1, 2) * self.scale + token @ feat.transpose(1, 2)
        return F.normalize(score.squeeze(1), p=2, dim=-1)


def load_official_relation_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an official InfoSAM ``relation_models/<epoch>.pth`` file.

    The file is a dict with the key ``relation_model`` holding the module's state dict. Only tensors
    and plain containers are accepted (``weights_only=True``); pickled code is refused.
    """
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError and friends: refuse, in one line
        raise ValueError(f"{path}: not a safe relation checkpoint ({type(err).__name__}: "
                         f"{str(err).splitlines()[0] if str(err) else 'unreadable'})") from None
    if isinstance(checkpoint, dict) and "relation_model" in checkpoint:
        checkpoint = checkpoint["relation_model"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path}: expected a dict with key 'relation_model' holding a state dict")
    # Official checkpoints saved from DDP carry a 'module.' prefix.
    return {k.removeprefix("module."): v for k, v in checkpoint.items()}


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
        weights_path = path / SAFETENSORS_WEIGHTS_NAME
        if not weights_path.is_file():
            raise FileNotFoundError(f"relation_from={source}: no {SAFETENSORS_WEIGHTS_NAME} in the directory")
    else:
        from huggingface_hub import hf_hub_download

        from .remote import check_pretrained_name, looks_like_path

        if looks_like_path(str(source)):
            raise FileNotFoundError(f"relation_from={source}: no such file or directory")

        check_pretrained_name(str(source), "relation_from", marker_file=SAFETENSORS_WEIGHTS_NAME)
        try:
            weights_path = Path(hf_hub_download(str(source), SAFETENSORS_WEIGHTS_NAME, revision=revision))
        except OSError as err:  # not found, offline, no access: one line, like a local miss
            raise FileNotFoundError(f"relation_from={source}: not a local path and no {SAFETENSORS_WEIGHTS_NAME} "
                                    f"could be fetched from the Hub ({type(err).__name__})") from None
    check_safetensors(weights_path)  # a truncated or empty file: one line naming it
    return relation_state_from_adapter_weights(load_file(str(weights_path)), str(source))


def attach_relation_module(model: nn.Module, relation_state_dict: dict | None = None) -> RelationModule:
    """Add a :class:`RelationModule` as ``model.relation_module`` (width = the mask decoder's)."""
    dim = model.config.mask_decoder_config.hidden_size
    relation = RelationModule(dim).to(device=next(model.parameters()).device)
    if relation_state_dict is not None:
        relation.load_state_dict(relation_state_dict, strict=True)
    model.add_module(RELATION_MODULE_NAME, relation)
    return relation


def get_relation_module(model: nn.Module) -> nn.Module:
    """The relation module of a (PEFT-wrapped) SAM. Under PEFT this is the ``modules_to_save`` wrapper,
    whose forward runs the trained copy (or the original inside ``disable_adapter()``)."""
    for name, module in model.named_modules():
        if name.endswith(RELATION_MODULE_NAME) and not name.endswith("original_module"):
            return module
    raise AttributeError("model has no relation module; call attach_relation_module() before wrapping")
