"""Recipe values checked before anything loads: each bad value is one line naming its key."""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Any

from .recipe import RecipeError
from .teacher_cache import CACHE_DIR_ENV

__all__ = ["MIN_PATCHES", "PATCH_SIZE", "check_recipe_values", "check_drop_last", "check_peft_targets", "check_target_modules"]

PATCH_SIZE = 16  # SAM's ViT patch (sam_config may set another)
MIN_PATCHES = 4  # the smallest input side, in patches, that still gives the mask decoder a 4x4 embedding


def _check_side(key: str, value: Any, patch: int, multiple: bool) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise RecipeError(f"{key}={value!r} must be a positive number of pixels")
    if value < MIN_PATCHES * patch:
        raise RecipeError(f"{key}={value!r} is too small: SAM needs at least {MIN_PATCHES * patch} pixels a side "
                          f"({MIN_PATCHES} patches of {patch})")
    if multiple and value % patch:
        raise RecipeError(f"{key}={value!r} is not a multiple of the patch size {patch} (e.g. "
                          f"{max(patch, round(value / patch) * patch)})")


def _vision_config(model_args) -> dict[str, Any] | None:
    """The ViT fields of the SAM a recipe names (``sam_config``, or the checkpoint's local config); None for a
    SAM 2 (its Hiera input sizes are checked where it loads)."""
    from ..models.sam2 import is_sam2

    if model_args.sam_config:
        return None if is_sam2(model_args.sam_config) else dict(model_args.sam_config.get("vision_config") or {})
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(model_args.model_name_or_path, local_files_only=True)
    except Exception:  # noqa: BLE001 - not at hand: SAM's patch size
        return {}
    vision = getattr(config, "vision_config", None)
    return None if config.model_type != "sam" or vision is None else {"patch_size": vision.patch_size}


def check_recipe_values(model_args, peft_args, data_args, args) -> None:
    """Sizes, learning rate, step counts, PEFT rank and cache folder: one line per bad value, before any loading."""
    vision = _vision_config(model_args)
    if vision is not None:
        patch = vision.get("patch_size", PATCH_SIZE)
        if not isinstance(patch, int) or patch <= 0:
            raise RecipeError(f"sam_config.vision_config.patch_size={patch!r} must be a positive integer")
        if "image_size" in vision:
            _check_side("sam_config.vision_config.image_size", vision["image_size"], patch, multiple=True)
        if model_args.image_size is not None:
            _check_side("image_size", model_args.image_size, patch, multiple=True)
        for key in ("resize", "random_crop"):
            for side in getattr(data_args, key) or ():
                _check_side(key, side, patch, multiple=key == "random_crop" or not model_args.dynamic_input_size)
    elif model_args.image_size is not None and model_args.image_size <= 0:
        raise RecipeError(f"image_size={model_args.image_size!r} must be a positive number of pixels")
    lr = args.learning_rate
    if not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr <= 0:
        raise RecipeError(f"learning_rate={lr!r} must be a finite number > 0")
    if getattr(args, "eval_clicks", 0) and data_args.num_labels > 1:
        raise RecipeError(f"eval_clicks={args.eval_clicks}: corrective clicks need a binary (prompted) model, not "
                          f"num_labels={data_args.num_labels}")
    if args.max_steps == 0:  # decided: an error, not "no limit" (-1, the default, is that)
        raise RecipeError("max_steps=0 trains nothing: drop it (num_train_epochs decides) or set a positive count")
    if args.max_steps < 0 and not (args.num_train_epochs > 0 and math.isfinite(args.num_train_epochs)):
        raise RecipeError(f"num_train_epochs={args.num_train_epochs!r} must be > 0 (or set max_steps)")
    if getattr(args, "max_grad_norm", None) is not None and not math.isfinite(args.max_grad_norm):
        raise RecipeError(f"max_grad_norm={args.max_grad_norm!r} must be finite (0 turns clipping off)")
    for key in ("r", "lora_alpha"):
        value = peft_args.peft_config.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and value < 1:  # a non-number: typed check
            raise RecipeError(f"peft_config.{key}={value!r} must be >= 1")
    cache_dir, key = ((args.teacher_cache_dir, "teacher_cache_dir") if args.teacher_cache_dir
                      else (os.environ.get(CACHE_DIR_ENV), CACHE_DIR_ENV))
    if cache_dir and Path(cache_dir).exists() and not Path(cache_dir).is_dir():
        raise RecipeError(f"{key}={cache_dir!r} is a file, not a folder")
    _check_objects_per_image(data_args, args)
    if not 0 <= data_args.ignore_index < max(data_args.num_labels, 2) or data_args.num_labels == 1:
        return
    raise RecipeError(f"ignore_index={data_args.ignore_index} is one of the num_labels={data_args.num_labels} class "
                      f"ids (0..{data_args.num_labels - 1}): pixels of that class would be ignored; use 255")


def _check_objects_per_image(data_args, args) -> None:
    """``objects_per_image`` > 1 trains binary objects on SAM's single-mask head (SAM 2 fails where it loads)."""
    if data_args.objects_per_image == 1:
        return
    clash = [f"{key}={value}" for key, value, default in (("num_labels", data_args.num_labels, 1),
                                                          ("iterative_rounds", args.iterative_rounds, 0))
             if value != default]
    if clash:
        raise RecipeError(f"objects_per_image={data_args.objects_per_image} trains binary objects on SAM's single-mask "
                          f"head; it does not take {', '.join(clash)}")
    if args.info_loss_batch == "global" and args.info_loss_objects == "all" and (args.lambda_r or args.lambda_d):
        raise RecipeError("info_loss_batch=global gathers the same number of relations from every process: with "
                          "objects_per_image > 1 set info_loss_objects: one_per_image")


def check_drop_last(train_rows: int, args) -> None:
    """``dataloader_drop_last`` with fewer training rows than one global batch leaves no batch at all."""
    batch = args.per_device_train_batch_size * max(1, args.world_size)
    if args.dataloader_drop_last and train_rows < batch:
        raise RecipeError(f"dataloader_drop_last: the train split has {train_rows} row(s), fewer than one batch of "
                          f"{batch}; lower per_device_train_batch_size or set dataloader_drop_last: false")


def check_target_modules(peft_config: Any, module_names: list[str], method: str) -> None:
    """Every name of a PEFT config's ``target_modules`` (list of suffixes or one regex) must match a module of the
    model; an unmatched one is a line with the closest names."""
    targets = getattr(peft_config, "target_modules", None)
    if not targets:
        return
    if isinstance(targets, str):
        if not any(re.fullmatch(targets, name) for name in module_names):
            raise RecipeError(f"peft_config.target_modules={targets!r} matches no module of the model")
        return
    leaves = sorted({name.rsplit(".", 1)[-1] for name in module_names} | set(module_names))
    for target in targets:
        if any(name == target or name.endswith(f".{target}") for name in module_names):
            continue
        close = difflib.get_close_matches(target, leaves, n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise RecipeError(f"peft_config.target_modules: {target!r} is no module of the model ({method}){hint}")


def _module_names_from_config(model_args) -> list[str] | None:
    """The module names of the model a recipe names, built on the ``meta`` device from its config alone (no
    weights, nothing downloaded); None when the config is not at hand (a Hub id not in the local cache)."""
    import torch
    from transformers import AutoConfig, AutoModel

    from ..models.sam import build_sam_config
    from ..models.sam2 import is_sam2

    try:
        if model_args.model_name_or_path:
            config = AutoConfig.from_pretrained(model_args.model_name_or_path, local_files_only=True)
        elif model_args.sam_config and not is_sam2(model_args.sam_config):
            config = build_sam_config(model_args.sam_config)
        else:
            return None
        with torch.device("meta"):
            model = AutoModel.from_config(config)
    except Exception:  # noqa: BLE001 - no config at hand: the check is skipped, loading reports the real problem
        return None
    return [name for name, _ in model.named_modules() if name]


def check_peft_targets(model_args, peft_args) -> None:
    """A recipe's own ``peft_config.target_modules`` resolved against the model's module names (from its config)."""
    if not peft_args.peft_config.get("target_modules"):
        return
    from ..tuners import build_peft_config

    names = _module_names_from_config(model_args)
    if names is not None:
        check_target_modules(build_peft_config(peft_args.peft_method, peft_args.peft_config), names,
                             peft_args.peft_method)
