"""ONNX export of a fine-tuned SAM as the two graphs every SAM deployment uses (``infosam export --onnx DIR``).

- ``encoder.onnx``: ``pixel_values`` (B, 3, H, W) → ``image_embeddings`` (B, 256, H/16, W/16); dynamic batch.
- ``decoder.onnx``: ``image_embeddings``, ``point_coords`` (B, 1, N, 2) in input-frame pixels and
  ``point_labels`` (B, 1, N) int64 → ``pred_masks`` (B, 1, 1, 4h, 4w) low-resolution logits and ``iou_scores``;
  dynamic batch and point count. Labels follow SAM's deployment convention: 1 foreground, 0 background,
  -1 padding, 2 / 3 the top-left / bottom-right box corners (a box is two points). Exactly as in
  ``SamModel``, a point-only prompt must end with one padding point (0, 0, label -1).

Mergeable adapters (LoRA …) are merged first; the others (``sam_adapter``, AdaptFormer …) stay in the graph as
ordinary ops. The export is checked with onnxruntime against PyTorch on a random sample before the command
returns. ``onnx_config.json`` records the pre-processing (from the run that trained the adapter) that
:mod:`infosam_hf.evaluation.onnx_predict` applies with numpy only.
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
from ..tuners.variants import active_variant

logger = logging.getLogger(__name__)

__all__ = [
    "DECODER_FILE",
    "ENCODER_FILE",
    "ONNX_CONFIG_NAME",
    "SamEncoderGraph",
    "SamPromptDecoderGraph",
    "export_adapter_onnx",
    "export_onnx",
    "sam_for_export",
]

ONNX_CONFIG_NAME = "onnx_config.json"
ENCODER_FILE, DECODER_FILE = "encoder.onnx", "decoder.onnx"
OPSET = 17


class SamEncoderGraph(nn.Module):
    """The image encoder (with any adapter modules it holds) as one module."""

    def __init__(self, sam: nn.Module):
        super().__init__()
        self.sam = sam

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.sam.get_image_embeddings(pixel_values)


class SamPromptDecoderGraph(nn.Module):
    """Prompt encoder + mask decoder for one embedding grid, prompts as labelled points (boxes as corners)."""

    def __init__(self, sam: nn.Module, grid: tuple[int, int]):
        super().__init__()
        self.sam = sam
        patch = sam.config.vision_config.patch_size
        self.input_hw = (grid[0] * patch, grid[1] * patch)
        self.grid = tuple(grid)
        if is_dynamic_input_size(sam):
            sam._set_grid(self.input_hw, self.grid)
        try:
            positional = sam.get_image_wide_positional_embeddings()
        finally:
            if is_dynamic_input_size(sam):
                sam._set_grid(None, None)
        self.register_buffer("image_positional_embeddings", positional.detach().clone(), persistent=False)

    def forward(self, image_embeddings: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor):
        encoder = self.sam.prompt_encoder
        sparse = encoder.shared_embedding(point_coords + 0.5, self.input_hw)
        labels = point_labels[..., None]
        sparse = torch.where(labels == -1, encoder.not_a_point_embed.weight, sparse)
        for label in range(4):  # 0 background, 1 foreground, 2 / 3 box corners
            sparse = torch.where(labels == label, sparse + encoder.point_embed[label].weight, sparse)
        batch = image_embeddings.shape[0]
        dense = encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(batch, -1, *self.grid)
        positional = self.image_positional_embeddings.repeat(batch, 1, 1, 1)
        masks, scores = self.sam.mask_decoder(image_embeddings=image_embeddings, image_positional_embeddings=positional,
                                              sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                              multimask_output=False)[:2]
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
    """TorchScript-based export (``dynamo=False``): it traces SAM's decoder with symbolic batch and point axes."""
    with warnings.catch_warnings():
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


def _preprocessing_record(settings: dict, model: nn.Module, input_hw: tuple[int, int]) -> dict:
    mean, std = _pixel_stats(settings.get("image_mean"), settings.get("image_std"))
    return {"image_size": model_image_size(model), "input_size": list(input_hw),
            "dynamic_input_size": is_dynamic_input_size(model), "resize": settings.get("resize"),
            "pixel_mean": mean.tolist(), "pixel_std": std.tolist(),
            "preprocessing": settings.get("preprocessing", "sam"), "point_convention":
            "labels 1 fg, 0 bg, -1 pad, 2/3 box corners; input-frame pixels"}


@torch.no_grad()
def export_adapter_onnx(adapter: str | None, output_dir: str | Path, base_model: str | None = None,
                        revision: str | None = None, **options) -> dict:
    """Load ``adapter`` on its base (see ``load_for_inference``) and :func:`export_onnx` it with the pre-processing
    its training run used; its ``preprocessor_config.json`` is copied too."""
    model = load_for_inference(adapter, base_model, revision=revision)
    source = Path(adapter) if adapter and Path(adapter).is_dir() else None
    return export_onnx(model, output_dir, input_settings=run_input_settings(adapter), source_dir=source, **options)


@torch.no_grad()
def export_onnx(model: nn.Module, output_dir: str | Path, *, input_settings: dict | None = None,
                source_dir: Path | None = None, input_size: tuple[int, int] | None = None,
                atol: float = 1e-4) -> dict:
    """Export ``model`` (a SAM, or a PEFT-wrapped one) to ``output_dir/encoder.onnx`` + ``decoder.onnx``, validate
    both with onnxruntime against PyTorch and return the max abs differences (``encoder``, ``decoder``, and
    ``graph_vs_model``: the decoder graph's wrapper against ``SamModel.forward``).

    ``input_settings`` are the run's ``resize`` / ``image_mean`` / ``image_std`` / ``preprocessing`` (recorded in
    ``onnx_config.json``).

    ``input_size`` (H, W) fixes the encoder input of a dynamic-size model (default: its square size). The folder is
    written under a temporary name and renamed when the check passes; a failed check raises ``ValueError``.
    """
    import onnxruntime as ort

    if sam_num_classes(model) > 1:
        raise ValueError("ONNX export supports prompted (single-mask) models, not multi-class "
                         "heads")
    sam = sam_for_export(model).float().eval()
    variant = active_variant(sam)
    if variant is not None:
        raise ValueError(f"ONNX export covers SAM with adapter modules in its layers, not the "
                         f"{type(variant).__name__.removesuffix('Encoder')} variant (its own encoder and decoder "
                         "positional encoding); predict with PyTorch (--tile works)")
    if not hasattr(sam, "prompt_encoder") or not hasattr(sam.config, "vision_config"):
        raise ValueError("ONNX export supports SAM (not SAM 2) models")
    size = model_image_size(sam)
    input_hw = tuple(input_size) if input_size else (size, size)
    if input_size and not is_dynamic_input_size(sam) and input_hw != (size, size):
        raise ValueError(f"--onnx_input_size {input_hw}: this model takes only {size}x{size}")
    generator = torch.Generator().manual_seed(0)
    pixels = torch.randn(2, 3, *input_hw, generator=generator)
    encoder = SamEncoderGraph(sam).eval()
    embeddings = encoder(pixels)
    decoder = SamPromptDecoderGraph(sam, tuple(embeddings.shape[-2:])).eval()
    coords, labels = _sample_prompt(2, decoder.input_hw, generator)

    output_dir = Path(output_dir)
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
    try:
        _export(encoder, (pixels,), staging / ENCODER_FILE, ["pixel_values"], ["image_embeddings"],
                {"pixel_values": {0: "batch"}, "image_embeddings": {0: "batch"}})
        _export(decoder, (embeddings, coords, labels), staging / DECODER_FILE,
                ["image_embeddings", "point_coords", "point_labels"], ["pred_masks", "iou_scores"],
                {"image_embeddings": {0: "batch"}, "point_coords": {0: "batch", 2: "points"},
                 "point_labels": {0: "batch", 2: "points"}, "pred_masks": {0: "batch"}, "iou_scores": {0: "batch"}})
        options = {"providers": ["CPUExecutionProvider"]}
        enc_session = ort.InferenceSession(str(staging / ENCODER_FILE), **options)
        dec_session = ort.InferenceSession(str(staging / DECODER_FILE), **options)
        # validate on other batch and point counts than the traced ones: one row, a point-only prompt
        one = pixels[:1]
        ort_embeddings = enc_session.run(None, {"pixel_values": one.numpy()})[0]
        torch_embeddings = encoder(one)
        point_coords = torch.tensor([[[[input_hw[1] * 0.4, input_hw[0] * 0.5], [0.0, 0.0]]]])
        point_labels = torch.tensor([[[1, -1]]])
        ort_masks = dec_session.run(None, {"image_embeddings": torch_embeddings.numpy(),
                                           "point_coords": point_coords.numpy(),
                                           "point_labels": point_labels.numpy()})[0]
        torch_masks = decoder(torch_embeddings, point_coords, point_labels)[0]
        chained = dec_session.run(None, {"image_embeddings": ort_embeddings, "point_coords": point_coords.numpy(),
                                         "point_labels": point_labels.numpy()})[0]
        reference = sam(pixel_values=one, input_points=point_coords[:, :, :1], input_labels=point_labels[:, :, :1],
                        multimask_output=False).pred_masks
        diffs = {"encoder": float(np.abs(ort_embeddings - torch_embeddings.numpy()).max()),
                 "decoder": float(np.abs(ort_masks - torch_masks.numpy()).max()),
                 "graph_vs_model": float((torch_masks - reference).abs().max()),
                 "logits": float(np.abs(chained - reference.numpy()).max())}  # onnxruntime end to end
        if max(diffs.values()) > atol:
            raise ValueError(f"ONNX export: onnxruntime differs from PyTorch by {diffs} (> {atol})")
        record = _preprocessing_record(input_settings or {}, model, input_hw)
        record["validation_max_abs_diff"] = diffs
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
