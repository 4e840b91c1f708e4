"""Checks of the model a recipe names, from its configuration alone (no weights), before anything is built.

* :func:`vision_fields` reads the image encoder's shape from ``sam_config``, a local checkpoint's
  ``config.json``, or the known shapes of the public SAM checkpoints.
* :func:`check_block_indices` stops a tuner that names encoder blocks the model does not have.
* :func:`check_activation_memory` stops a CPU run whose attention maps alone would not fit in memory.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..errors import UsageError

__all__ = ["KNOWN_VISION_FIELDS", "vision_fields", "check_block_indices", "activation_bytes",
           "check_activation_memory"]

# The image encoders of the public SAM checkpoints (their config.json), so no download is needed to check a recipe.
KNOWN_VISION_FIELDS = {
    "facebook/sam-vit-base": {"num_hidden_layers": 12, "hidden_size": 768, "num_attention_heads": 12,
                              "global_attn_indexes": [2, 5, 8, 11], "window_size": 14, "patch_size": 16,
                              "image_size": 1024},
    "facebook/sam-vit-large": {"num_hidden_layers": 24, "hidden_size": 1024, "num_attention_heads": 16,
                               "global_attn_indexes": [5, 11, 17, 23], "window_size": 14, "patch_size": 16,
                               "image_size": 1024},
    "facebook/sam-vit-huge": {"num_hidden_layers": 32, "hidden_size": 1280, "num_attention_heads": 16,
                              "global_attn_indexes": [7, 15, 23, 31], "window_size": 14, "patch_size": 16,
                              "image_size": 1024},
}
_VISION_DEFAULTS = KNOWN_VISION_FIELDS["facebook/sam-vit-base"]  # SamVisionConfig's defaults


def vision_fields(model_name_or_path: str | None, sam_config: dict[str, Any] | None) -> dict[str, Any] | None:
    """The SAM image encoder's shape (``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``,
    ``global_attn_indexes``, ``window_size``, ``patch_size``, ``image_size``), or None when it cannot be known
    without downloading (an unknown Hub id) or the model is a SAM 2."""
    if model_name_or_path:
        known = KNOWN_VISION_FIELDS.get(str(model_name_or_path))
        if known is not None:
            return dict(known)
        config_file = Path(model_name_or_path) / "config.json"
        if not config_file.is_file():
            return None
        try:
            config = json.loads(config_file.read_text())
        except (OSError, ValueError):
            return None  # the loader reports a damaged checkpoint, naming the file
        if config.get("model_type") != "sam":
            return None
        vision = config.get("vision_config") or {}
    elif sam_config:
        if sam_config.get("model_type") == "sam2":
            return None
        vision = sam_config.get("vision_config") or {}
    else:
        return None
    fields = {key: vision.get(key, default) for key, default in _VISION_DEFAULTS.items()}
    fields["global_attn_indexes"] = list(fields["global_attn_indexes"])
    return fields


def check_block_indices(peft_config: dict[str, Any], vision: dict[str, Any] | None, model_name: str) -> None:
    """``peft_config.block_indices`` must name blocks the image encoder has (one line naming both)."""
    indices = (peft_config or {}).get("block_indices")
    if not indices or vision is None:
        return
    depth = int(vision["num_hidden_layers"])
    beyond = sorted(int(i) for i in indices if not 0 <= int(i) < depth)
    if beyond:
        raise UsageError(f"peft_config.block_indices {list(indices)} names block(s) {beyond}, but {model_name} has "
                         f"{depth} image-encoder blocks (0-{depth - 1}): set block_indices for this model")


def activation_bytes(vision: dict[str, Any], image_size: int, batch: int) -> int:
    """A lower bound on the training activations of the image encoder: the attention maps (scores and
    probabilities, float32) of its windowed and global blocks, plus ~16 float32 values per token and channel
    per block, for ``batch`` images of ``image_size``² pixels."""
    grid = max(1, image_size // int(vision["patch_size"]))
    tokens = grid * grid
    heads, depth = int(vision["num_attention_heads"]), int(vision["num_hidden_layers"])
    global_blocks = len([i for i in vision["global_attn_indexes"] if int(i) < depth])
    window = int(vision["window_size"]) or grid
    windows = -(-grid // window) ** 2
    per_image = (global_blocks * heads * tokens ** 2 + (depth - global_blocks) * heads * windows * window ** 4) * 2 * 4
    per_image += depth * tokens * int(vision["hidden_size"]) * 16 * 4
    return batch * per_image


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def check_activation_memory(vision: dict[str, Any] | None, image_size: int | None, batch: int, on_cpu: bool,
                            memory: int | None = None) -> None:
    """On a CPU run, stop when the image encoder's attention maps alone exceed the machine's memory (the run would
    otherwise be killed minutes later without a message). ``memory``: bytes available (default: physical)."""
    if vision is None or not on_cpu:
        return
    image_size = image_size or int(vision["image_size"])
    memory = memory or _physical_memory()
    need = activation_bytes(vision, image_size, batch)
    if memory and need > memory:
        raise UsageError(f"image_size={image_size}: training this image encoder at {image_size}x{image_size} with "
                         f"batch {batch} needs at least {need / 2 ** 30:.0f} GiB of activations, more than this "
                         f"machine's {memory / 2 ** 30:.0f} GiB; set a smaller image_size (or batch), or rehearse "
                         "the recipe with --dry_run")
