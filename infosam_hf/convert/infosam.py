"""Official InfoSAM checkpoints (``<backend>_<epoch>_.pth`` + ``relation_models/<epoch>.pth``) -> a peft
``sam_adapter`` directory over a converted base SAM."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from transformers import SamModel

from ..models.inference import BaseModelMismatchError
from .presets import OFFICIAL_HUB_REPO
from .sam import (
    PIXEL_STAT_KEYS,
    CheckpointLayoutError,
    _image_processor,
    hf_to_original_state_dict,
    load_original_state_dict,
    original_to_hf_state_dict,
)

logger = logging.getLogger(__name__)

__all__ = ["convert_official_infosam", "official_infosam_to_peft", "resolve_checkpoint_file",
           "split_official_infosam_state"]

HUB_PREFIX = "hf://"
# The official Block's series adapters: Space_Adapter_Series after the attention, MLP_Adapter_Series after the MLP,
# each Linear D_fc1 (d -> ratio·d), GELU, Linear D_fc2 (ratio·d -> d), plus the skip connection.
_OFFICIAL_ADAPTER = re.compile(r"image_encoder\.blocks\.(\d+)\.(Space|MLP)_Adapter_(Series|Parallel)\.D_fc([12])\."
                               r"(weight|bias)$")
_ADAPTED_MODULE = {"Space": "attn", "MLP": "mlp"}
_OFFICIAL_EPOCH_FILE = re.compile(r"^(?P<backend>.+)_(?P<epoch>\d+)_\.pth$")


def resolve_checkpoint_file(source: str | os.PathLike, repo_id: str | None = None) -> Path:
    """A local path for ``source``: a local file, ``hf://OWNER/REPO/PATH/IN/REPO``, or ``PATH/IN/REPO`` of
    ``repo_id``, downloaded with ``hf_hub_download`` (cached). Offline or unreachable: one-line ``OSError``."""
    source = str(source)
    if source.startswith(HUB_PREFIX):
        parts = source[len(HUB_PREFIX):].split("/", 2)
        if len(parts) < 3 or not all(parts):
            raise ValueError(f"{source}: a Hub path is hf://OWNER/REPO/FILE, e.g. hf://{OFFICIAL_HUB_REPO}/FILE.pth")
        repo_id, source = f"{parts[0]}/{parts[1]}", parts[2]
    elif repo_id is None:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such checkpoint file")
        return path
    from huggingface_hub import hf_hub_download

    try:
        return Path(hf_hub_download(repo_id=repo_id, filename=source, etag_timeout=5))
    except Exception as err:  # offline, no such repo or file, no network: one line, at once
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise OSError(f"{repo_id}/{source}: cannot get it from the Hub ({type(err).__name__}: {first})") from None


def split_official_infosam_state(state: dict[str, torch.Tensor], source: str = "checkpoint"
                                 ) -> tuple[dict[str, torch.Tensor], dict[int, dict[str, dict[str, torch.Tensor]]]]:
    """Split an official InfoSAM model state dict into the original-SAM part and the series adapters,
    ``{block: {"attn"|"mlp": {"0.weight", "0.bias", "2.weight", "2.bias"}}}`` (Bottleneck's Linear indices)."""
    sam_state, adapters = {}, {}
    for key, value in state.items():
        match = _OFFICIAL_ADAPTER.match(key)
        if match is None:
            sam_state[key] = value
            continue
        block, where, kind, fc, param = match.groups()
        if kind != "Series":
            raise CheckpointLayoutError(f"{source}: {key} is a parallel adapter (adapter_config 1, 2 or 5); only the "
                                        "paper's series adapters (adapter_config 0) convert to sam_adapter")
        linear = "0" if fc == "1" else "2"
        adapters.setdefault(int(block), {}).setdefault(_ADAPTED_MODULE[where], {})[f"{linear}.{param}"] = value
    if not adapters:
        raise CheckpointLayoutError(f"{source}: no Space_Adapter_Series / MLP_Adapter_Series weights; not an official "
                                    "InfoSAM Adapter checkpoint (an original SAM converts with 'infosam convert sam')")
    for block, parts in adapters.items():
        for module in ("attn", "mlp"):
            found = sorted(parts.get(module, {}))
            if found != ["0.bias", "0.weight", "2.bias", "2.weight"]:
                name = "Space" if module == "attn" else "MLP"
                raise CheckpointLayoutError(f"{source}: block {block}'s {name}_Adapter_Series is incomplete "
                                            f"(has {found})")
    return sam_state, adapters


def _adapter_ratio(adapters: dict[int, dict[str, dict[str, torch.Tensor]]], width: int, source: str) -> float:
    hidden = {tuple(p["0.weight"].shape) for parts in adapters.values() for p in parts.values()}
    if len(hidden) != 1 or next(iter(hidden))[1] != width:
        raise CheckpointLayoutError(f"{source}: adapter D_fc1 shapes {sorted(hidden)} do not fit one bottleneck over "
                                    f"the encoder width {width} (sam_adapter uses one adapter_ratio)")
    ratio = next(iter(hidden))[0] / width
    if int(width * ratio) != next(iter(hidden))[0]:
        raise CheckpointLayoutError(f"{source}: adapter width {next(iter(hidden))[0]} is no ratio of {width}")
    return ratio


def _trained_keys(hf_keys, blocks) -> set[str]:
    """HF keys the official run trains: the mask decoder and the LayerNorms of adapted blocks."""
    norms = tuple(f"vision_encoder.layers.{b}.layer_norm{n}." for b in blocks for n in (1, 2))
    return {k for k in hf_keys if k.startswith("mask_decoder.") or k.startswith(norms)}


def _check_frozen(converted: dict[str, torch.Tensor], base: SamModel, trained: set[str], source: str,
                  base_name: str, atol: float) -> None:
    expected = base.state_dict()
    bad_shape = [k for k in converted if k in expected and tuple(converted[k].shape) != tuple(expected[k].shape)]
    if bad_shape or set(converted) != set(expected):
        raise BaseModelMismatchError(f"{source}: its SAM architecture is not {base_name}'s "
                                f"(e.g. {(bad_shape or sorted(set(converted) ^ set(expected)))[0]}); "
                                "pass the base SAM the run started from as --base")
    differing = []
    for key, value in converted.items():
        if key in trained:
            continue
        diff = float((value.float() - expected[key].float()).abs().max()) if value.numel() else 0.0
        if diff > atol:
            differing.append((key, diff))
    if differing:
        key, diff = max(differing, key=lambda item: item[1])
        original = next(iter(hf_to_original_state_dict({key: converted[key]})))
        raise BaseModelMismatchError(f"{source}: {len(differing)} frozen tensors differ from {base_name} (largest: "
                                f"{original}, max |diff| {diff:.3g}); pass the base SAM the run started from as --base")


def _sibling_relation_file(checkpoint: Path) -> Path | None:
    """``relation_models/<epoch>.pth`` beside an official ``<backend>_<epoch>_.pth``, if it is there."""
    match = _OFFICIAL_EPOCH_FILE.match(checkpoint.name)
    if match is None:
        return None
    candidate = checkpoint.parent / "relation_models" / f"{match.group('epoch')}.pth"
    return candidate if candidate.is_file() else None


def official_infosam_to_peft(state: dict[str, torch.Tensor], base: SamModel, base_name: str,
                             relation_state: dict[str, torch.Tensor] | None = None, source: str = "checkpoint",
                             atol: float = 0.0):
    """The ``sam_adapter`` PeftModel over ``base`` that computes what the official model state ``state`` does.

    Adapters are copied, the trained LayerNorms become deltas over the base's, the mask decoder is the
    checkpoint's, and the relation module takes ``relation_state`` (else its fresh init). The frozen
    tensors must equal the base's (within ``atol``), else :class:`BaseModelMismatchError`.
    """
    from ..tuners.registry import build_student
    from ..relation import attach_relation_module

    sam_state, adapters = split_official_infosam_state(state, source)
    sam_state = {k: v for k, v in sam_state.items() if k not in PIXEL_STAT_KEYS}
    converted = original_to_hf_state_dict(sam_state)
    depth = base.config.vision_config.num_hidden_layers
    if max(adapters) >= depth:
        raise BaseModelMismatchError(f"{source}: adapters in block {max(adapters)}, but {base_name} has {depth} blocks")
    blocks = sorted(adapters)
    trained = _trained_keys(converted, blocks)
    _check_frozen(converted, base, trained, source, base_name, atol)
    ratio = _adapter_ratio(adapters, base.config.vision_config.hidden_size, source)
    base.name_or_path = base_name
    base.config._name_or_path = base_name
    attach_relation_module(base, relation_state)
    peft_model = build_student(base, "sam_adapter", {"block_indices": blocks, "adapter_ratio": ratio,
                                                     "adapter_init": "official"})
    sam = peft_model.base_model.model
    with torch.no_grad():
        for block, parts in adapters.items():
            layer = sam.vision_encoder.layers[block]
            for module, weights in parts.items():
                getattr(layer, module).sadapter_bottleneck["default"].load_state_dict(weights, strict=True)
            for n in (1, 2):
                norm = getattr(layer, f"layer_norm{n}")
                delta = norm.sadapter_norm["default"]
                prefix = f"vision_encoder.layers.{block}.layer_norm{n}."
                delta.weight.copy_(converted[prefix + "weight"] - norm.base_layer.weight)
                delta.bias.copy_(converted[prefix + "bias"] - norm.base_layer.bias)
        decoder = {k.removeprefix("mask_decoder."): v for k, v in converted.items() if k.startswith("mask_decoder.")}
        sam.mask_decoder.modules_to_save["default"].load_state_dict(decoder, strict=True)
    return peft_model.eval()


def convert_official_infosam(checkpoint: str | os.PathLike, output_dir: str | os.PathLike, base: str,
                             relation: str | os.PathLike | None = None, repo_id: str | None = None,
                             atol: float = 0.0) -> Path:
    """Convert an official InfoSAM checkpoint into a ``sam_adapter`` adapter directory over ``base``.

    ``checkpoint`` / ``relation``: local files, ``hf://OWNER/REPO/FILE``, or files of ``repo_id`` (e.g.
    ``MuyaoYuan/InfoSAM``). Without ``relation``, ``relation_models/<epoch>.pth`` beside a local
    ``<backend>_<epoch>_.pth`` is used when present. Files are read with ``torch.load(weights_only=True)``;
    everything is checked before ``output_dir`` is written. ``AutoPeftModel.from_pretrained(output_dir)``
    (after ``import infosam_hf``) then gives the official model.
    """
    import shutil
    import tempfile

    from ..relation import load_official_relation_state_dict
    from ..models.sam import load_sam

    output_dir = Path(output_dir)
    if output_dir.is_file():
        raise FileExistsError(f"{output_dir}: exists and is a file")
    path = resolve_checkpoint_file(checkpoint, repo_id)
    state = load_original_state_dict(path)
    split_official_infosam_state(state, str(checkpoint))  # a wrong layout fails before the base loads
    relation_path = resolve_checkpoint_file(relation, repo_id) if relation else _sibling_relation_file(path)
    relation_state = load_official_relation_state_dict(relation_path) if relation_path else None
    if relation_path is None:
        logger.warning("%s: no relation checkpoint (--relation relation_models/N.pth); the adapter's relation module "
                       "keeps a fresh init (only training needs it)", checkpoint)
    try:
        base_model = load_sam(base)
    except (OSError, ValueError) as err:
        raise OSError(f"--base {base}: cannot load it ({str(err).strip().splitlines()[0] if str(err) else err!r})") from None
    model = official_infosam_to_peft(state, base_model, base, relation_state, str(checkpoint), atol)
    image_size = base_model.config.vision_config.image_size
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        model.save_pretrained(staging)
        _image_processor({}, image_size).save_pretrained(staging)  # SAM's statistics, as the base uses
        output_dir.mkdir(exist_ok=True)
        for item in staging.iterdir():
            os.replace(item, output_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    logger.info("converted %s (adapters in blocks %s) over %s to %s", checkpoint,
                model.peft_config["default"].block_indices, base, output_dir)
    return output_dir
