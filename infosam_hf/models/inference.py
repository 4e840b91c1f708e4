"""Loading a trained adapter (or the zero-shot base) for evaluation, prediction and export."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import torch
from peft import PeftConfig, PeftModel

from ..file_checks import check_adapter_dir
from ..io import atomic_write_json
from ..files import BASE_MODEL_DIR
from ..quiet import peft_wrapping
from ..remote import check_pretrained_name
from .dynamic import enable_dynamic_input_size
from .processor import read_input_settings
from .sam import load_pretrained_sam
from ..relation import attach_relation_module
from .sam2 import sam_input_size

logger = logging.getLogger(__name__)

__all__ = ["BASE_MODEL_DIR", "BaseModelMismatchError", "base_beside_adapter", "load_for_inference", "model_image_size", "record_base_beside",
           "resolve_device",
           "run_input_settings"]

# Applied to every model load_for_inference returns. Layers above this one add theirs (segment everything adds a
# ``generate_masks`` method when infosam_hf.evaluation is imported) without this module importing them.
POST_LOAD_HOOKS: list[Callable[[torch.nn.Module], torch.nn.Module]] = []


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
        if Path(adapter).is_dir():  # a damaged local adapter: one line naming the file, before any model loads
            check_adapter_dir(adapter)
        try:
            config = PeftConfig.from_pretrained(adapter, revision=revision)
        except (OSError, ValueError) as err:
            raise OSError(f"adapter={adapter}: not a PEFT adapter ({str(err).splitlines()[0]})") from None
        recorded = base_beside_adapter(adapter, config.base_model_name_or_path)
        recorded_gone = bool(recorded) and not Path(recorded).exists() and (
            Path(recorded).is_absolute() or Path(recorded).name == BASE_MODEL_DIR)
        if base_model and recorded and not recorded_gone and not _same_model(base_model, recorded):
            raise BaseModelMismatchError(
                f"adapter {adapter} was trained on base model {recorded!r}, not {base_model!r}; "
                "omit the base model to use the recorded one")
        base = _load_base(adapter, base_model or recorded, revision)
        if read_input_settings(adapter, revision).get("dynamic_input_size"):  # a Hub base cannot record it
            enable_dynamic_input_size(base)
        attach_relation_module(base)  # so the adapter's relation weights load too
        with peft_wrapping():
            model = PeftModel.from_pretrained(base, adapter, revision=revision)
    model = model.to(device).eval()
    for hook in POST_LOAD_HOOKS:
        model = hook(model)
    return model


def run_input_settings(adapter: str | None, revision: str | None = None) -> dict:
    """The input settings (``resize``, ``image_mean``, ``image_std``, ``preprocessing``, ``channel_order``)
    ``adapter`` was trained with, from its saved image processor, for preprocessing at inference; {} when unknown
    (SAM's defaults)."""
    settings = read_input_settings(adapter, revision)
    return {key: settings[key] for key in ("resize", "image_mean", "image_std", "preprocessing", "channel_order")
            if settings.get(key) is not None}


def base_beside_adapter(adapter: str, recorded: str | None) -> str | None:
    """A relative ``.../base_model`` (the folder a run saves its built base to) found beside the adapter folder,
    or beside its run folder for a checkpoint inside a run; anything else as recorded."""
    if not recorded or Path(recorded).is_absolute() or Path(recorded).name != BASE_MODEL_DIR:
        return recorded
    for folder in (Path(adapter) / BASE_MODEL_DIR, Path(adapter).parent / BASE_MODEL_DIR):
        if Path(adapter).is_dir() and (folder / "config.json").is_file():
            return str(folder)
    return recorded


def record_base_beside(adapter_dir: str | Path, run_dir: str | Path | None = None) -> None:
    """Rewrite a saved adapter's absolute ``base_model_name_or_path`` that points at its run's own ``base_model/``
    folder as a relative path: ``<run_dir>/base_model`` as the user named a relative ``run_dir`` (so
    ``AutoPeftModel.from_pretrained("outputs/demo")`` works from where the run was started), else ``base_model``.
    The project's loaders look beside the adapter first either way, so the folder can be moved, copied or pushed.
    Hub ids stay as they are. Written to a temporary name, then renamed."""
    path = Path(adapter_dir) / "adapter_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text())
    recorded = config.get("base_model_name_or_path")
    run_dir = Path(run_dir) if run_dir is not None else Path(adapter_dir)
    if not recorded or not Path(recorded).is_absolute() or Path(recorded).resolve() != (
            run_dir / BASE_MODEL_DIR).resolve():
        return
    config["base_model_name_or_path"] = BASE_MODEL_DIR if run_dir.is_absolute() else str(run_dir / BASE_MODEL_DIR)
    atomic_write_json(path, config, indent=2, sort_keys=True)


def _load_base(adapter: str, base: str | None, revision: str | None) -> torch.nn.Module:
    """The base SAM or SAM 2 (by its config's ``model_type``). The ``base_model/`` folder a run ships beside its
    adapter is found there (a moved run, or an adapter from the Hub), also when an old adapter recorded it by an
    absolute path that no longer exists."""
    if base and Path(base).exists():
        return load_pretrained_sam(base)
    if base and not Path(base).is_absolute() and Path(base).name != BASE_MODEL_DIR:  # a Hub id
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
                  f"{BASE_MODEL_DIR}/ folder; pass the base model it was trained on (--base_model ID_OR_PATH, or "
                  "load_for_inference(adapter, base_model=...))")


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
