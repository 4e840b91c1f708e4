"""Original ``segment_anything`` checkpoints (``sam_vit_b_01ec64.pth``, MedSAM, …) <-> HF ``SamModel``.

The original layout names modules after Meta's ``segment_anything`` package; transformers renames most of
them and stores the prompt encoder's random Fourier matrix twice (``shared_image_embedding`` is a tied
copy). The architecture is read from the tensor shapes, so one converter covers ViT-B/L/H and every
fine-tune in the same format.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import torch
from transformers import SamConfig, SamModel

from .inference import BaseModelMismatchError
from .sam import ORIGINAL_DECODER_LAYER_NORM_EPS, build_sam_config

logger = logging.getLogger(__name__)

__all__ = [
    "ORIGINAL_SAM_PRESETS",
    "CheckpointLayoutError",
    "convert_official_infosam",
    "convert_original_sam",
    "official_infosam_to_peft",
    "resolve_checkpoint_file",
    "split_official_infosam_state",
    "hf_to_original_state_dict",
    "infer_sam_config",
    "load_original_state_dict",
    "original_to_hf_state_dict",
    "sam_from_original_state_dict",
]

# model_type -> (embed dim, depth, heads, global attention indexes) of the released SAM checkpoints.
ORIGINAL_SAM_PRESETS = {
    "vit_b": (768, 12, 12, (2, 5, 8, 11)),
    "vit_l": (1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": (1280, 32, 16, (7, 15, 23, 31)),
}
# Not stored in a checkpoint: every released SAM-format model uses 8 heads in the two-way transformer.
DEFAULT_DECODER_HEADS = 8
# Non-persistent buffers of the original ``Sam``, present in some saved files; they set the image processor.
PIXEL_STAT_KEYS = ("pixel_mean", "pixel_std")
SHARED_EMBEDDING = "shared_image_embedding.positional_embedding"
PROMPT_EMBEDDING = "prompt_encoder.shared_embedding.positional_embedding"

# (original, HF) key templates, tried in order; {i} matches an index, {p} the rest of the key.
_TEMPLATES = [
    ("image_encoder.pos_embed", "vision_encoder.pos_embed"),
    ("image_encoder.patch_embed.proj.{p}", "vision_encoder.patch_embed.projection.{p}"),
    ("image_encoder.blocks.{i}.norm{n}.{p}", "vision_encoder.layers.{i}.layer_norm{n}.{p}"),
    ("image_encoder.blocks.{i}.{p}", "vision_encoder.layers.{i}.{p}"),  # attn.qkv (fused), attn.proj, rel_pos, mlp
    ("image_encoder.neck.0.{p}", "vision_encoder.neck.conv1.{p}"),
    ("image_encoder.neck.1.{p}", "vision_encoder.neck.layer_norm1.{p}"),  # LayerNorm2d
    ("image_encoder.neck.2.{p}", "vision_encoder.neck.conv2.{p}"),
    ("image_encoder.neck.3.{p}", "vision_encoder.neck.layer_norm2.{p}"),
    ("prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", PROMPT_EMBEDDING),
    ("prompt_encoder.point_embeddings.{i}.{p}", "prompt_encoder.point_embed.{i}.{p}"),
    ("prompt_encoder.mask_downscaling.0.{p}", "prompt_encoder.mask_embed.conv1.{p}"),
    ("prompt_encoder.mask_downscaling.1.{p}", "prompt_encoder.mask_embed.layer_norm1.{p}"),
    ("prompt_encoder.mask_downscaling.3.{p}", "prompt_encoder.mask_embed.conv2.{p}"),
    ("prompt_encoder.mask_downscaling.4.{p}", "prompt_encoder.mask_embed.layer_norm2.{p}"),
    ("prompt_encoder.mask_downscaling.6.{p}", "prompt_encoder.mask_embed.conv3.{p}"),
    ("mask_decoder.transformer.layers.{i}.norm{n}.{p}", "mask_decoder.transformer.layers.{i}.layer_norm{n}.{p}"),
    ("mask_decoder.transformer.norm_final_attn.{p}", "mask_decoder.transformer.layer_norm_final_attn.{p}"),
    ("mask_decoder.output_upscaling.0.{p}", "mask_decoder.upscale_conv1.{p}"),
    ("mask_decoder.output_upscaling.1.{p}", "mask_decoder.upscale_layer_norm.{p}"),
    ("mask_decoder.output_upscaling.3.{p}", "mask_decoder.upscale_conv2.{p}"),
]
# The IoU head and the hypernetwork MLPs: original layers.0..n-1 are HF proj_in, layers.0..n-3, proj_out.
_MLP_HEAD = r"mask_decoder\.(iou_prediction_head|output_hypernetworks_mlps\.\d+)"
_ORIGINAL_MLP = re.compile(_MLP_HEAD + r"\.layers\.(\d+)\.(weight|bias)$")
_HF_MLP = re.compile(_MLP_HEAD + r"\.(proj_in|proj_out|layers\.(\d+))\.(weight|bias)$")


class CheckpointLayoutError(ValueError):
    """The file is a checkpoint, but not of an original SAM (missing/unexpected keys, impossible shapes)."""


def _compile(template: str) -> re.Pattern:
    pattern = re.escape(template)
    for name, group in (("i", r"\d+"), ("n", r"\d+"), ("p", r".+")):
        pattern = pattern.replace(re.escape("{" + name + "}"), f"(?P<{name}>{group})")
    return re.compile(pattern + "$")


_RULES = [(_compile(orig), orig, _compile(hf), hf) for orig, hf in _TEMPLATES]


def _rename(key: str, to_hf: bool) -> str:
    for orig_re, orig, hf_re, hf in _RULES:
        match = (orig_re if to_hf else hf_re).match(key)
        if match:
            return (hf if to_hf else orig).format(**match.groupdict())
    return key  # same name in both layouts (attention projections, tokens, embeddings)


def _mlp_depths(keys, pattern: re.Pattern) -> dict[str, int]:
    """Number of linear layers of each decoder MLP head found in ``keys``."""
    layers: dict[str, set[str]] = {}
    for key in keys:
        match = pattern.match(key)
        if match:
            layers.setdefault(match.group(1), set()).add(match.group(2))
    return {head: len(names) for head, names in layers.items()}


def original_to_hf_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original SAM state dict to ``SamModel`` names (pure renaming, no shape checks).

    ``pixel_mean``/``pixel_std`` are dropped; the Fourier matrix is also stored as HF's tied
    ``shared_image_embedding``.
    """
    depths = _mlp_depths(state_dict, _ORIGINAL_MLP)
    converted = {}
    for key, value in state_dict.items():
        if key in PIXEL_STAT_KEYS:
            continue
        match = _ORIGINAL_MLP.match(key)
        if match:
            head, index, kind = match.group(1), int(match.group(2)), match.group(3)
            last = depths[head] - 1
            layer = "proj_in" if index == 0 else "proj_out" if index == last else f"layers.{index - 1}"
            converted[f"mask_decoder.{head}.{layer}.{kind}"] = value
        else:
            converted[_rename(key, to_hf=True)] = value
    if PROMPT_EMBEDDING in converted:
        converted[SHARED_EMBEDDING] = converted[PROMPT_EMBEDDING]
    return converted


def hf_to_original_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a ``SamModel`` state dict to the original ``segment_anything`` names.

    HF holds the prompt encoder's Fourier matrix twice (tied); the original has it once, so the two
    copies must be equal.
    """
    state_dict = dict(state_dict)
    shared = state_dict.pop(SHARED_EMBEDDING, None)
    prompt = state_dict.get(PROMPT_EMBEDDING)
    if shared is not None and prompt is None:
        state_dict[PROMPT_EMBEDDING] = prompt = shared
    if shared is not None and shared is not prompt and not shared.is_meta and not torch.equal(shared, prompt):
        raise ValueError(f"{SHARED_EMBEDDING} differs from {PROMPT_EMBEDDING}; the original layout holds one "
                         "positional encoding matrix for both")
    depths = _mlp_depths(state_dict, _HF_MLP)
    converted = {}
    for key, value in state_dict.items():
        match = _HF_MLP.match(key)
        if match:
            head, layer, hidden, kind = match.group(1), match.group(2), match.group(3), match.group(4)
            index = 0 if layer == "proj_in" else depths[head] - 1 if layer == "proj_out" else int(hidden) + 1
            converted[f"mask_decoder.{head}.layers.{index}.{kind}"] = value
        else:
            converted[_rename(key, to_hf=False)] = value
    return converted


def load_original_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read an original SAM checkpoint with ``torch.load(weights_only=True)``.

    Accepts a bare state dict or one wrapped in ``{'model': ...}`` / ``{'state_dict': ...}``, with or
    without DDP's ``module.`` prefix. Pickled code is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError (code refused), KeyError/RuntimeError/EOFError (not a checkpoint)
        refused = re.search(r"Unsupported global: GLOBAL (\S+)", str(err))
        if refused:
            raise ValueError(f"{path}: refused: it pickles {refused.group(1)}, and only tensors and plain "
                             "containers are loaded (weights_only=True)") from None
        raise ValueError(f"{path}: not a PyTorch checkpoint that weights_only=True can read "
                         f"({type(err).__name__})") from None
    for wrapper in ("model", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    if not isinstance(checkpoint, dict) or not checkpoint:
        raise CheckpointLayoutError(f"{path}: expected a state dict (optionally under 'model'), "
                                    f"got {type(checkpoint).__name__}")
    not_tensors = [k for k, v in checkpoint.items() if not isinstance(v, torch.Tensor)]
    if not_tensors:
        raise CheckpointLayoutError(f"{path}: expected a state dict of tensors; {not_tensors[:3]} are not tensors")
    return {str(k).removeprefix("module."): v for k, v in checkpoint.items()}


def _shape(state: dict[str, torch.Tensor], key: str, source: str) -> tuple[int, ...]:
    if key not in state:
        raise CheckpointLayoutError(f"{source}: missing key {key!r}; not an original SAM checkpoint "
                                    f"(first keys: {list(state)[:3]})")
    return tuple(state[key].shape)


def _count(state: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    return len({match.group(1) for key in state if (match := pattern.match(key))})


def infer_sam_config(state: dict[str, torch.Tensor], source: str = "checkpoint",
                     model_type: str = "auto", decoder_num_heads: int = DEFAULT_DECODER_HEADS) -> SamConfig:
    """The ``SamConfig`` of an original-layout state dict, read from its tensor shapes.

    Embed dim and patch size from ``patch_embed``, the input size from ``pos_embed``, depth from the
    blocks, heads from the relative-position tables' head dim, the window size and the global-attention
    blocks from the tables' lengths (2·window−1 vs 2·grid−1). ``model_type`` (``vit_b``/``vit_l``/``vit_h``)
    checks the result against the released architecture.
    """
    if model_type != "auto" and model_type not in ORIGINAL_SAM_PRESETS:
        raise ValueError(f"model_type={model_type!r}: expected auto or one of {sorted(ORIGINAL_SAM_PRESETS)}")
    embed, channels, patch, patch_w = _shape(state, "image_encoder.patch_embed.proj.weight", source)
    _, grid, grid_w, pos_dim = _shape(state, "image_encoder.pos_embed", source)
    depth = _count(state, "image_encoder.blocks.")
    if channels != 3 or patch != patch_w or grid != grid_w or pos_dim != embed or depth == 0:
        raise CheckpointLayoutError(f"{source}: patch_embed {(embed, channels, patch, patch_w)} and pos_embed "
                                    f"(1, {grid}, {grid_w}, {pos_dim}) fit no SAM image encoder")
    windows, global_blocks, head_dim = set(), [], None
    for block in range(depth):
        length, dim = _shape(state, f"image_encoder.blocks.{block}.attn.rel_pos_h", source)
        head_dim = head_dim or dim
        if dim != head_dim or length % 2 == 0 or embed % dim:
            raise CheckpointLayoutError(f"{source}: image_encoder.blocks.{block}.attn.rel_pos_h has shape "
                                        f"{(length, dim)}, which fits no SAM attention block of width {embed}")
        if length == 2 * grid - 1:
            global_blocks.append(block)
        else:
            windows.add((length + 1) // 2)
    if len(windows) > 1:
        raise CheckpointLayoutError(f"{source}: blocks use several window sizes {sorted(windows)}")
    window = windows.pop() if windows else 0
    heads = embed // head_dim
    if model_type != "auto":
        expected = ORIGINAL_SAM_PRESETS[model_type]
        found = (embed, depth, heads, tuple(global_blocks))
        if found != expected:
            names = [name for name, preset in ORIGINAL_SAM_PRESETS.items() if preset == found]
            detected = f"a {names[0]}" if names else "no released SAM"
            raise CheckpointLayoutError(f"{source}: model_type={model_type} expects (embed, depth, heads, global "
                                        f"blocks) {expected}, the checkpoint has {found} ({detected})")
    out_channels = _shape(state, "image_encoder.neck.0.weight", source)[0]
    mask_tokens, width = _shape(state, "mask_decoder.mask_tokens.weight", source)
    attention_width = _shape(state, "mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight",
                             source)[0]
    num_pos_feats = _shape(state, "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix", source)[1]
    if width != out_channels or 2 * num_pos_feats != width or width % attention_width:
        raise CheckpointLayoutError(f"{source}: neck width {out_channels}, mask-token width {width} and Fourier "
                                    f"features {num_pos_feats} fit no SAM (they must be w, w and w/2)")
    fields = {
        "vision_config": {
            "hidden_size": embed, "num_hidden_layers": depth, "num_attention_heads": heads,
            "mlp_dim": _shape(state, "image_encoder.blocks.0.mlp.lin1.weight", source)[0],
            "window_size": window, "global_attn_indexes": global_blocks, "image_size": grid * patch,
            "patch_size": patch, "output_channels": out_channels, "num_pos_feats": num_pos_feats,
            "qkv_bias": "image_encoder.blocks.0.attn.qkv.bias" in state,
        },
        "prompt_encoder_config": {
            "hidden_size": width,
            "mask_input_channels": _shape(state, "prompt_encoder.mask_downscaling.3.weight", source)[0],
            "num_point_embeddings": _count(state, "prompt_encoder.point_embeddings."),
        },
        "mask_decoder_config": {
            "hidden_size": width, "num_attention_heads": decoder_num_heads,
            "num_hidden_layers": _count(state, "mask_decoder.transformer.layers."),
            "mlp_dim": _shape(state, "mask_decoder.transformer.layers.0.mlp.lin1.weight", source)[0],
            "attention_downsample_rate": width // attention_width,
            "num_multimask_outputs": mask_tokens - 1,
            "iou_head_depth": _count(state, "mask_decoder.iou_prediction_head.layers."),
            "iou_head_hidden_dim": _shape(state, "mask_decoder.iou_prediction_head.layers.0.weight", source)[0],
            "layer_norm_eps": ORIGINAL_DECODER_LAYER_NORM_EPS,  # the original TwoWayTransformer's nn.LayerNorm
        },
    }
    return build_sam_config(fields)


def _check_layout(converted: dict[str, torch.Tensor], model: SamModel, source: str) -> None:
    expected = model.state_dict()
    missing = [k for k in expected if k not in converted]
    unexpected = [k for k in converted if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            original = list(hf_to_original_state_dict({k: expected[k] for k in missing}))
            parts.append(f"missing {len(missing)} keys, e.g. {original[:3]}")
        if unexpected:
            original = list(hf_to_original_state_dict({k: converted[k] for k in unexpected}))
            parts.append(f"unexpected {len(unexpected)} keys, e.g. {original[:3]}")
        raise CheckpointLayoutError(f"{source}: not an original SAM layout: {'; '.join(parts)}")
    for key, value in converted.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            original = next(iter(hf_to_original_state_dict({key: value})))
            raise CheckpointLayoutError(f"{source}: {original} has shape {tuple(value.shape)}, the architecture "
                                        f"read from the other tensors needs {tuple(expected[key].shape)}")


def sam_from_original_state_dict(state: dict[str, torch.Tensor], source: str = "checkpoint",
                                 model_type: str = "auto",
                                 decoder_num_heads: int = DEFAULT_DECODER_HEADS) -> SamModel:
    """A ``SamModel`` holding the weights of an original-layout state dict (architecture from the shapes)."""
    config = infer_sam_config(state, source, model_type, decoder_num_heads)
    converted = original_to_hf_state_dict(state)
    with torch.device("meta"):
        model = SamModel(config)
    _check_layout(converted, model, source)
    model.load_state_dict(converted, strict=True, assign=True)
    model.tie_weights()
    return model.eval()


def _image_processor(state: dict[str, torch.Tensor], image_size: int):
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    processor = SamImageProcessorPil(size={"longest_edge": image_size},
                                     pad_size={"height": image_size, "width": image_size})
    if all(key in state for key in PIXEL_STAT_KEYS):  # pixel statistics in 0-255 units
        processor.image_mean = [round(float(v) / 255, 6) for v in state["pixel_mean"].flatten()]
        processor.image_std = [round(float(v) / 255, 6) for v in state["pixel_std"].flatten()]
    return processor


def convert_original_sam(checkpoint: str | os.PathLike, output_dir: str | os.PathLike, model_type: str = "auto",
                         decoder_num_heads: int = DEFAULT_DECODER_HEADS) -> Path:
    """Convert an original SAM ``.pth`` into a ``save_pretrained`` directory (model + image processor).

    Everything is checked before ``output_dir`` is written. Returns ``output_dir``.
    """
    state = load_original_state_dict(checkpoint)
    model = sam_from_original_state_dict(state, str(checkpoint), model_type, decoder_num_heads)
    output_dir = Path(output_dir)
    if output_dir.is_file():
        raise FileExistsError(f"{output_dir}: exists and is a file")
    image_size = model.config.vision_config.image_size
    processor = _image_processor(state, image_size)
    model.save_pretrained(output_dir)
    processor.save_pretrained(output_dir)
    logger.info("converted %s (%d parameters, %d² input) to %s", checkpoint,
                sum(p.numel() for p in model.parameters()), image_size, output_dir)
    return output_dir


# ---------------------------------------------------------------------------------------------------------------
# Official InfoSAM checkpoints (``<backend>_<epoch>_.pth`` + ``relation_models/<epoch>.pth``) -> a sam_adapter dir

HUB_PREFIX = "hf://"
OFFICIAL_HUB_REPO = "MuyaoYuan/InfoSAM"
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
    from .sam import attach_relation_module

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
    from .sam import load_sam

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
