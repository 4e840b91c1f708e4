"""Loading a trained adapter (or the zero-shot base) for evaluation, prediction and export."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel
from ..files import BASE_MODEL_DIR, RUN_ARGS_NAME
from ..remote import check_pretrained_name
from .dynamic import enable_dynamic_input_size
from .sam import attach_relation_module, load_pretrained_sam
from .sam2 import sam_input_size

logger = logging.getLogger(__name__)

__all__ = ["BASE_MODEL_DIR", "BaseModelMismatchError", "load_for_inference", "model_image_size", "resolve_device",
           "run_input_settings"]

class BaseModelMismatchError(ValueError):
    """The adapter was trained on another base model than the one given."""


def _same_model(a: str, b: str) -> bool:
    if a == b:
        return True
    pa, pb = Path(a), Path(b)
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def load_for_inference(adapter: str | None, base_model: str | None = None, device: str | torch.device = "cpu",
                       revision: str | None = None) -> torch.nn.Module:
    """A SAM or SAM 2 ready for inference: ``base + adapter`` via ``PeftModel.from_pretrained``, or the base alone.

    Args:
        adapter: adapter directory or Hub repo id; ``None`` or ``"none"`` evaluates the zero-shot base.
        base_model: the base checkpoint. Defaults to the adapter's ``base_model_name_or_path``; if given,
            it must be that same model, else :class:`BaseModelMismatchError` is raised.
    """
    if adapter is None or str(adapter).lower() == "none":
        if not base_model:
            raise ValueError("--adapter none needs --base_model (the SAM checkpoint to evaluate zero-shot)")
        model = load_pretrained_sam(base_model)
    else:
        check_pretrained_name(adapter, "adapter", marker_file="adapter_config.json")
        try:
            config = PeftConfig.from_pretrained(adapter, revision=revision)
        except (OSError, ValueError) as err:
            raise OSError(f"adapter={adapter}: not a PEFT adapter ({str(err).splitlines()[0]})") from None
        recorded = config.base_model_name_or_path
        recorded_gone = bool(recorded) and Path(recorded).is_absolute() and not Path(recorded).exists()
        if base_model and recorded and not recorded_gone and not _same_model(base_model, recorded):
            raise BaseModelMismatchError(
                f"adapter {adapter} was trained on base model {recorded!r}, not {base_model!r}; "
                "omit the base model to use the recorded one")
        base = _load_base(adapter, base_model or recorded, revision)
        if _run_was_dynamic(adapter):  # a base loaded by Hub id cannot record it in its config
            enable_dynamic_input_size(base)
        attach_relation_module(base)  # so the adapter's relation weights load too
        model = PeftModel.from_pretrained(base, adapter, revision=revision)
    return model.to(device).eval()


def _read_run_args(adapter: str | None) -> dict:
    """The ``run_args.json`` a training run wrote beside its adapter (a local directory), or {}."""
    path = Path(adapter) / RUN_ARGS_NAME if adapter else None
    if path is None or not path.is_file():
        return {}
    try:
        loaded = json.loads(path.read_text())
    except ValueError:
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _run_was_dynamic(adapter: str) -> bool:
    """Whether the run that saved ``adapter`` trained with ``dynamic_input_size``: a base loaded by Hub id
    has no saved config to record it, the run's ``run_args.json`` does."""
    return bool((_read_run_args(adapter).get("model") or {}).get("dynamic_input_size", False))


def run_input_settings(adapter: str | None) -> dict:
    """The input settings (``resize``, ``image_mean``, ``image_std``, ``preprocessing``) the run that saved
    ``adapter`` trained with, for preprocessing at inference; {} when unknown (SAM's defaults)."""
    data = _read_run_args(adapter).get("data") or {}
    return {key: data[key] for key in ("resize", "image_mean", "image_std", "preprocessing")
            if data.get(key) is not None}


def _load_base(adapter: str, base: str | None, revision: str | None) -> torch.nn.Module:
    """The base SAM or SAM 2 (by its config's ``model_type``); a recorded local path that no longer exists (a
    moved run, or an adapter from the Hub whose base was built locally) falls back to the ``base_model/`` folder
    shipped beside the adapter."""
    if base and (Path(base).exists() or not Path(base).is_absolute()):
        return load_pretrained_sam(base)
    local_copy = Path(adapter) / BASE_MODEL_DIR
    if local_copy.is_dir():
        return load_pretrained_sam(str(local_copy))
    if not Path(adapter).exists():
        try:
            return load_pretrained_sam(adapter, subfolder=BASE_MODEL_DIR, revision=revision)
        except OSError:
            pass
    raise OSError(f"adapter {adapter}: its base model {base!r} is not on this machine and the adapter has no "
                  f"{BASE_MODEL_DIR}/ folder; pass the base model explicitly")


def model_image_size(model: torch.nn.Module) -> int:
    """The square input size the (possibly PEFT-wrapped) SAM or SAM 2 was configured for (a dynamic-size
    SAM takes others too)."""
    return sam_input_size(model)  # unwraps a PeftModel


def resolve_device(name: str | torch.device | None) -> torch.device:
    """``auto`` (or None): CUDA when available, else CPU; otherwise the named device."""
    if isinstance(name, torch.device):
        return name
    if not name or name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
