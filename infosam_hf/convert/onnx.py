"""ONNX export of a fine-tuned SAM as the two graphs every SAM deployment uses (``infosam export --onnx DIR``).

- ``encoder.onnx``: ``pixel_values`` (B, 3, H, W) → ``image_embeddings`` (B, 256, h, w); dynamic batch, and
  dynamic H and W for a dynamic-size model (:mod:`infosam_hf.models.dynamic`, the G-SAM / SAMUS variants).
- ``decoder.onnx``: ``image_embeddings``, ``point_coords`` (B, 1, N, 2) in input-frame pixels and
  ``point_labels`` (B, 1, N) int64 → ``pred_masks`` (B, 1, 1, 4h, 4w) low-resolution logits and ``iou_scores``;
  dynamic batch and point count (and grid, for a dynamic-size model). Labels follow SAM's deployment convention:
  1 foreground, 0 background, -1 padding, 2 / 3 the top-left / bottom-right box corners (a box is two points).
  Exactly as in ``SamModel``, a point-only prompt must end with one padding point (0, 0, label -1).
  ``decoder_multimask.onnx`` is the same graph returning SAM's three candidate masks and their scores (everything
  mode). A multi-class head (``num_labels`` > 1) takes no prompt: its ``decoder.onnx`` maps ``image_embeddings``
  to ``pred_masks`` (B, 1, C, 4h, 4w) class logits.

Mergeable adapters (LoRA …) are merged first; the others (``sam_adapter``, AdaptFormer, the G-SAM and SAMUS
encoders …) stay in the graph as ordinary ops. The export is checked with onnxruntime against PyTorch before the
command returns (a dynamic-size model at two input sizes besides the traced one). ``onnx_config.json`` records
the pre-processing (from the run that trained the adapter) that :mod:`infosam_hf.evaluation.onnx_predict`
applies with numpy only.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from transformers.utils import IMAGE_PROCESSOR_NAME as PREPROCESSOR_NAME

from ..data.transforms import _pixel_stats
from ..models.dynamic import is_dynamic_input_size
from ..models.inference import load_for_inference, model_image_size, run_input_settings
from ..models.multiclass import sam_num_classes
from .onnx_ops import dynamic_shape_ops
from ..tuners.variants import active_variant

logger = logging.getLogger(__name__)

__all__ = [
    "DECODER_FILE",
    "ENCODER_FILE",
    "MULTIMASK_FILE",
    "ONNX_CONFIG_NAME",
    "SamClassDecoderGraph",
    "SamEncoderGraph",
    "SamPromptDecoderGraph",
    "export_adapter_onnx",
    "export_onnx",
    "sam_for_export",
    "token_stride",
]

ONNX_CONFIG_NAME = "onnx_config.json"
ENCODER_FILE, DECODER_FILE, MULTIMASK_FILE = "encoder.onnx", "decoder.onnx", "decoder_multimask.onnx"
OPSET = 17


class SamEncoderGraph(nn.Module):
    """The image encoder (with any adapter modules it holds, or a variant's encoder) as one module."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.sam = sam

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.sam.get_image_embeddings(pixel_values)


def token_stride(sam: nn.Module) -> int:
    """Input pixels per image-embedding cell: the patch size, half of it for the G-SAM / SAMUS variants."""
    variant = active_variant(sam)
    return variant.token_stride if variant is not None else sam.config.vision_config.patch_size


class _DecoderGraph(nn.Module):
    """What the decoder graphs share: the image positional encoding and the no-mask dense embedding on the grid of
    the incoming embeddings (a fixed-size model: its own grid, precomputed). ``grid`` is not needed any more (the
    graphs read it from the embeddings) and is accepted for compatibility."""

    def __init__(self, sam: nn.Module, grid: tuple[int, int] | None = None):
        super().__init__()
        self.sam = sam
        self.stride = token_stride(sam)
        self.dynamic = is_dynamic_input_size(sam)
        self.has_variant = active_variant(sam) is not None
        if not self.dynamic:
            self.register_buffer("image_positional_embeddings", sam.get_image_wide_positional_embeddings().detach()
                                 .clone(), persistent=False)

    def positional(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        batch = image_embeddings.shape[0]
        if self.has_variant:
            positional = active_variant(self.sam).image_positional_embeddings(image_embeddings)
            if positional is not None:  # G-SAM: PosCNN of the embeddings
                return positional
        if not self.dynamic:
            return self.image_positional_embeddings.repeat(batch, 1, 1, 1)
        height, width = image_embeddings.shape[-2:]  # SAM's Fourier encoding of the cell centres of this grid
        ys = (torch.arange(height, dtype=torch.float32) + 0.5) / height
        xs = (torch.arange(width, dtype=torch.float32) + 0.5) / width
        coords = torch.stack([xs[None, :].expand(height, width), ys[:, None].expand(height, width)], dim=-1)
        positional = self.sam.shared_image_embedding(coords).permute(2, 0, 1).unsqueeze(0)
        return positional.repeat(batch, 1, 1, 1)

    def dense(self, image_embeddings: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = image_embeddings.shape
        return self.sam.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, height, width)


class SamPromptDecoderGraph(_DecoderGraph):
    """Prompt encoder + mask decoder, prompts as labelled points (boxes as corners); ``multimask``: SAM's three
    candidate masks instead of one."""

    def __init__(self, sam: nn.Module, grid: tuple[int, int] | None = None, multimask: bool = False):
        super().__init__(sam, grid)
        self.multimask = multimask

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor):
        encoder = self.sam.prompt_encoder
        height, width = image_embeddings.shape[-2:]
        frame = torch.stack([torch.as_tensor(width * self.stride), torch.as_tensor(height * self.stride)]).float()
        sparse = encoder.shared_embedding((point_coords + 0.5) / frame)
        labels = point_labels[..., None]
        sparse = torch.where(labels == -1, encoder.not_a_point_embed.weight, sparse)
        for label in range(4):  # 0 background, 1 foreground, 2 / 3 box corners
            sparse = torch.where(labels == label, sparse + encoder.point_embed[label].weight, sparse)
        masks, scores = self.sam.mask_decoder(image_embeddings=image_embeddings,
                                              image_positional_embeddings=self.positional(image_embeddings),
                                              sparse_prompt_embeddings=sparse,
                                              dense_prompt_embeddings=self.dense(image_embeddings),
                                              multimask_output=self.multimask)[:2]
        return masks, scores


class SamClassDecoderGraph(_DecoderGraph):
    """A multi-class head's decoder: no prompt, C class logits (:mod:`infosam_hf.models.multiclass`)."""

    def forward(self, image_embeddings: torch.Tensor):
        masks, scores = self.sam.mask_decoder(image_embeddings=image_embeddings,
                                              image_positional_embeddings=self.positional(image_embeddings),
                                              sparse_prompt_embeddings=None,
                                              dense_prompt_embeddings=self.dense(image_embeddings),
                                              multimask_output=True)[:2]
        return masks, scores


def sam_for_export(model: nn.Module) -> nn.Module:
    """A plain module tree for tracing: mergeable PEFT adapters merged, others left in place as ordinary modules."""
    if not hasattr(model, "get_base_model"):
        return model
    try:
        return model.merge_and_unload()
    except (NotImplementedError, AttributeError, ValueError, TypeError) as err:
        logger.info("adapter not mergeable (%s); exporting its modules as ops", err)
        return model.get_base_model()


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], axes: dict) -> None:
    """TorchScript-based export (``dynamo=False``): it traces SAM with symbolic batch, point and (with
    :func:`~.onnx_ops.dynamic_shape_ops`) image-size axes; torch.export (``dynamo=True``) rejects SAM's size checks."""
    with warnings.catch_warnings(), dynamic_shape_ops():
        warnings.simplefilter("ignore")  # tracer warnings about Python-side shape checks, expected here
        try:
            torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes,
                              opset_version=OPSET, dynamo=False)
        except RuntimeError as err:  # torch.onnx.OnnxExporterError and tracing failures
            lines = [line for line in str(err).splitlines() if line.strip() and not line.startswith("Torch IR graph")]
            reason = lines[0].split(" [Caused by")[0] if lines else type(err).__name__
            raise ValueError(f"ONNX export of the {path.stem} graph failed: {reason}") from None


def _sample_prompt(batch: int, input_hw: tuple[int, int], generator: torch.Generator):
    """Three points plus one box per row (the richest prompt kind), in input-frame pixels."""
    height, width = input_hw
    scale = torch.tensor([width, height], dtype=torch.float32)
    coords = torch.rand(batch, 1, 5, 2, generator=generator) * scale
    labels = torch.tensor([1, 0, 1, 2, 3]).expand(batch, 1, 5).clone()
    return coords, labels


def _preprocessing_record(settings: dict, model: nn.Module, sam: nn.Module, input_hw: tuple[int, int]) -> dict:
    mean, std = _pixel_stats(settings.get("image_mean"), settings.get("image_std"))
    official = settings.get("preprocessing", "sam") == "official"
    return {"image_size": model_image_size(model), "input_size": list(input_hw),
            "dynamic_input_size": is_dynamic_input_size(sam), "resize": settings.get("resize"),
            "pixel_mean": mean.tolist(), "pixel_std": std.tolist(),
            "image_mean": settings.get("image_mean"), "image_std": settings.get("image_std"),
            "preprocessing": settings.get("preprocessing", "sam"),
            "channel_order": "bgr" if official else settings.get("channel_order", "rgb"),
            "num_classes": sam_num_classes(model), "patch_size": sam.config.vision_config.patch_size,
            "token_stride": token_stride(sam), "variant": _variant_name(sam),
            "pads_to_patch": is_dynamic_input_size(sam) and active_variant(sam) is None,
            "point_convention": "labels 1 fg, 0 bg, -1 pad, 2/3 box corners; input-frame pixels"}


def _variant_name(sam: nn.Module) -> str | None:
    variant = active_variant(sam)
    return None if variant is None else type(variant).__name__.removesuffix("Encoder").lower()


@torch.no_grad()
def export_adapter_onnx(adapter: str | None, output_dir: str | Path, base_model: str | None = None,
                        revision: str | None = None, **options) -> dict:
    """Load ``adapter`` on its base (see ``load_for_inference``) and :func:`export_onnx` it with the pre-processing
    its training run used; its ``preprocessor_config.json`` is copied too."""
    model = load_for_inference(adapter, base_model, revision=revision)
    source = Path(adapter) if adapter and Path(adapter).is_dir() else None
    return export_onnx(model, output_dir, input_settings=run_input_settings(adapter), source_dir=source, **options)


def _check_sizes(sam: nn.Module, input_hw: tuple[int, int]) -> tuple[list[tuple[int, int]], tuple]:
    """The sizes to validate at and the size to trace at. A dynamic-size model is traced at a size unlike its
    configured square and the validation sizes (so no size-dependent shortcut is recorded), and validated at the
    prediction size (padded to the patch size, as the predictor feeds it) plus one more."""
    if not is_dynamic_input_size(sam):
        return [input_hw], input_hw
    unit = sam.config.vision_config.patch_size
    padded = tuple(-(-side // unit) * unit for side in input_hw)
    trace = (padded[0] + 2 * unit, padded[1] + 3 * unit)
    return [padded, (padded[0] + unit, padded[1] + 2 * unit)], trace


def _input_hw(sam: nn.Module, size: int, input_size, settings: dict) -> tuple[int, int]:
    if input_size:
        input_hw = tuple(int(v) for v in input_size)
    elif settings.get("resize"):
        input_hw = tuple(int(v) for v in settings["resize"])
    else:
        input_hw = (size, size)
    if not is_dynamic_input_size(sam) and input_hw != (size, size):
        source = "--onnx_input_size" if input_size else "the run's resize"
        raise ValueError(f"ONNX input size {input_hw[0]}x{input_hw[1]} ({source}): this model takes only "
                         f"{size}x{size} (not dynamic_input_size)")
    unit = token_stride(sam) * 2 if active_variant(sam) is not None else 1  # a dynamic SAM pads to its patch size
    if input_hw[0] % unit or input_hw[1] % unit:
        raise ValueError(f"--onnx_input_size {input_hw[0]}x{input_hw[1]}: the {_variant_name(sam)} variant needs a "
                         f"multiple of {unit}")
    return input_hw


@torch.no_grad()
def export_onnx(model: nn.Module, output_dir: str | Path, *, input_settings: dict | None = None,
                source_dir: Path | None = None, input_size: tuple[int, int] | None = None,
                atol: float = 1e-4) -> dict:
    """Export ``model`` (a SAM, or a PEFT-wrapped one, a G-SAM / SAMUS variant, a multi-class head) to
    ``output_dir`` (see the module doc), validate every graph with onnxruntime against PyTorch and return the max
    abs differences (``encoder``, ``decoder``, ``graph_vs_model``: the decoder wrapper against ``SamModel.forward``,
    ``logits``: onnxruntime end to end against ``SamModel.forward``; for a dynamic-size model the max over the
    validation sizes).

    ``input_settings`` are the run's ``resize`` / ``image_mean`` / ``image_std`` / ``preprocessing`` /
    ``channel_order`` (recorded in ``onnx_config.json``). ``input_size`` (H, W) is the input the predictor feeds a
    whole image at (default: the run's ``resize``, else the square size); a dynamic-size model's encoder graph
    takes any multiple of the patch size. The folder is written under a temporary name and renamed when the check
    passes; a failed check raises ``ValueError``.
    """
    import onnxruntime as ort

    settings = dict(input_settings or {})
    sam = sam_for_export(model).float().eval()
    if not hasattr(sam, "prompt_encoder") or not hasattr(sam.config, "vision_config"):
        raise ValueError("ONNX export supports SAM (not SAM 2) models")
    num_classes = sam_num_classes(model)
    size = model_image_size(sam)
    input_hw = _input_hw(sam, size, input_size, settings)
    sizes, trace_hw = _check_sizes(sam, input_hw)
    dynamic = is_dynamic_input_size(sam)
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, *trace_hw, generator=generator)
    encoder = SamEncoderGraph(sam).eval()
    embeddings = encoder(pixels)
    grid = tuple(embeddings.shape[-2:])
    image_axes = {0: "batch", 2: "height", 3: "width"} if dynamic else {0: "batch"}
    grid_axes = {0: "batch", 2: "grid_height", 3: "grid_width"} if dynamic else {0: "batch"}
    mask_axes = {0: "batch", 3: "mask_height", 4: "mask_width"} if dynamic else {0: "batch"}
    if num_classes > 1:
        decoders = {DECODER_FILE: SamClassDecoderGraph(sam, grid).eval()}
    else:
        decoders = {DECODER_FILE: SamPromptDecoderGraph(sam, grid).eval(),
                    MULTIMASK_FILE: SamPromptDecoderGraph(sam, grid, multimask=True).eval()}
    stride = token_stride(sam)
    coords, labels = _sample_prompt(2, (grid[0] * stride, grid[1] * stride), generator)

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        _export(encoder, (pixels,), staging / ENCODER_FILE, ["pixel_values"], ["image_embeddings"],
                {"pixel_values": image_axes, "image_embeddings": grid_axes})
        for name, decoder in decoders.items():
            if num_classes > 1:
                _export(decoder, (embeddings,), staging / name, ["image_embeddings"], ["pred_masks", "iou_scores"],
                        {"image_embeddings": grid_axes, "pred_masks": mask_axes, "iou_scores": {0: "batch"}})
            else:
                _export(decoder, (embeddings, coords, labels), staging / name,
                        ["image_embeddings", "point_coords", "point_labels"], ["pred_masks", "iou_scores"],
                        {"image_embeddings": grid_axes, "point_coords": {0: "batch", 2: "points"},
                         "point_labels": {0: "batch", 2: "points"}, "pred_masks": mask_axes,
                         "iou_scores": {0: "batch"}})
        options = {"providers": ["CPUExecutionProvider"]}
        enc_session = ort.InferenceSession(str(staging / ENCODER_FILE), **options)
        sessions = {name: ort.InferenceSession(str(staging / name), **options) for name in decoders}
        diffs = {"encoder": 0.0, "decoder": 0.0, "graph_vs_model": 0.0, "logits": 0.0}
        for check_hw in sizes:  # other batch and point counts (and sizes) than the traced ones
            one = torch.randn(1, 3, *check_hw, generator=generator)
            for key, value in _validate(sam, encoder, enc_session, decoders, sessions, one, num_classes).items():
                diffs[key] = max(diffs[key], value)
        if max(diffs.values()) > atol:
            raise ValueError(f"ONNX export: onnxruntime differs from PyTorch by {diffs} (> {atol})")
        record = _preprocessing_record(settings, model, sam, input_hw)
        record["validation_max_abs_diff"] = diffs
        record["validated_input_sizes"] = [list(hw) for hw in sizes]
        (staging / ONNX_CONFIG_NAME).write_text(json.dumps(record, indent=2) + "\n")
        if source_dir is not None and (source_dir / PREPROCESSOR_NAME).is_file():
            shutil.copyfile(source_dir / PREPROCESSOR_NAME, staging / PREPROCESSOR_NAME)
        if output_dir.exists():
            shutil.rmtree(output_dir)
        os.replace(staging, output_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return diffs


def _validate(sam, encoder, enc_session, decoders: dict, sessions: dict, one: torch.Tensor, num_classes: int) -> dict:
    """Max abs differences on one image: encoder, each decoder graph (onnxruntime vs its PyTorch wrapper), the
    wrapper vs ``SamModel.forward`` and onnxruntime end to end vs ``SamModel.forward``."""
    ort_embeddings = enc_session.run(None, {"pixel_values": one.numpy()})[0]
    torch_embeddings = encoder(one)
    diffs = {"encoder": float(np.abs(ort_embeddings - torch_embeddings.numpy()).max()), "decoder": 0.0,
             "graph_vs_model": 0.0, "logits": 0.0}
    height, width = one.shape[-2:]
    for name, decoder in decoders.items():
        if num_classes > 1:
            feeds, args = {}, ()
            reference = sam(pixel_values=one, multimask_output=True).pred_masks
        else:  # a point-only prompt: one foreground point and the padding point
            point_coords = torch.tensor([[[[width * 0.4, height * 0.5], [0.0, 0.0]]]])
            point_labels = torch.tensor([[[1, -1]]])
            feeds = {"point_coords": point_coords.numpy(), "point_labels": point_labels.numpy()}
            args = (point_coords, point_labels)
            reference = sam(pixel_values=one, input_points=point_coords[:, :, :1],
                            input_labels=point_labels[:, :, :1], multimask_output=decoder.multimask).pred_masks
        ort_masks = sessions[name].run(None, {"image_embeddings": torch_embeddings.numpy(), **feeds})[0]
        torch_masks = decoder(torch_embeddings, *args)[0]
        chained = sessions[name].run(None, {"image_embeddings": ort_embeddings, **feeds})[0]
        diffs["decoder"] = max(diffs["decoder"], float(np.abs(ort_masks - torch_masks.numpy()).max()))
        diffs["graph_vs_model"] = max(diffs["graph_vs_model"], float((torch_masks - reference).abs().max()))
        diffs["logits"] = max(diffs["logits"], float(np.abs(chained - reference.numpy()).max()))
    return diffs
