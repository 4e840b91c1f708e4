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

from ..models.sam import ORIGINAL_DECODER_LAYER_NORM_EPS, build_sam_config
from .presets import DEFAULT_DECODER_HEADS, ORIGINAL_SAM_PRESETS

logger = logging.getLogger(__name__)

__all__ = [
    "ORIGINAL_SAM_PRESETS",
    "CheckpointLayoutError",
    "convert_original_sam",
    "hf_to_original_state_dict",
    "infer_sam_config",
    "load_original_state_dict",
    "original_to_hf_state_dict",
    "sam_from_original_state_dict",
]

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
