"""The variants' tuners and the ``SamModel`` subclass that runs a variant's encoder and decoder positional encoding.

The tuner wraps ``vision_encoder`` in the variant's layer (its trained modules are the adapter) and swaps the model's
class for :class:`VariantSamModel`, a :class:`~infosam_hf.models.dynamic.DynamicSamModel`; with adapters disabled it
is exactly the base SAM at any input size.
"""

from __future__ import annotations

import torch
from transformers import SamModel
from transformers.models.sam.modeling_sam import SamImageSegmentationOutput

from ...models.dynamic import DynamicSamModel, enable_dynamic_input_size
from ..base import SamTuner
from .layer import GsamEncoder, GsamEncoderLayer, SamusEncoderLayer, VariantEncoder, VariantEncoderLayer
from .resnet import download_timm_resnet, load_timm_resnet

__all__ = ["VariantSamModel", "GsamModel", "SamusModel", "active_variant", "load_pretrained_parts"]


def active_variant(model: torch.nn.Module) -> VariantEncoder | None:
    """The active variant encoder of a (PEFT-wrapped) SAM, or ``None`` (stock SAM or adapters off)."""
    for module in model.modules():
        if isinstance(module, VariantEncoderLayer):
            return module.active_variant()
    return None


def load_pretrained_parts(model: torch.nn.Module) -> None:
    """Load the pre-trained weights a freshly built variant starts from: GSAM's ResNet branch from its config's
    ``resnet_weights`` (a Hub id such as ``timm/resnet101.tv_in1k`` or a directory; ``None`` keeps the random init).
    Fails with one line when the weights cannot be fetched."""
    configs = getattr(model, "peft_config", {})
    for module in model.modules():
        if not isinstance(module, GsamEncoderLayer):
            continue
        for name, encoder in module.variant_gsam_encoder.items():
            source = getattr(configs.get(name), "resnet_weights", None)
            if source and isinstance(encoder, GsamEncoder):
                load_timm_resnet(encoder.cnn, download_timm_resnet(source))


class VariantSamModel(DynamicSamModel):
    """``SamModel`` whose forward uses the active variant's encoder (tokens at stride patch/2, so logits at H/2 × W/2)
    and its decoder positional encoding; prompts are optional and normalised by the true input size."""

    def forward(self, pixel_values: torch.Tensor | None = None, input_points: torch.Tensor | None = None,
                input_labels: torch.Tensor | None = None, input_boxes: torch.Tensor | None = None,
                input_masks: torch.Tensor | None = None, image_embeddings: torch.Tensor | None = None,
                multimask_output: bool = True, **kwargs):
        layer = self.vision_encoder
        variant = layer.active_variant() if isinstance(layer, VariantEncoderLayer) else None
        if variant is None:
            return super().forward(pixel_values=pixel_values, input_points=input_points, input_labels=input_labels,
                                   input_boxes=input_boxes, input_masks=input_masks, image_embeddings=image_embeddings,
                                   multimask_output=multimask_output, **kwargs)
        if (pixel_values is None) == (image_embeddings is None):
            raise ValueError("pass exactly one of pixel_values and image_embeddings")
        if pixel_values is not None:
            input_hw = tuple(pixel_values.shape[-2:])
            image_embeddings = layer(pixel_values).last_hidden_state
        grid = tuple(image_embeddings.shape[-2:])
        if pixel_values is None:
            input_hw = (grid[0] * variant.token_stride, grid[1] * variant.token_stride)
        if input_points is not None and input_labels is None:
            input_labels = torch.ones_like(input_points[..., 0], dtype=torch.int)
        self._set_grid(input_hw, grid)
        try:
            sparse, dense = self.prompt_encoder(input_points=input_points, input_labels=input_labels,
                                                input_boxes=input_boxes, input_masks=input_masks)
            positional = variant.image_positional_embeddings(image_embeddings)
            if positional is None:
                positional = self.get_image_wide_positional_embeddings().repeat(image_embeddings.shape[0], 1, 1, 1)
            low_res_masks, iou_scores = self.mask_decoder(
                image_embeddings=image_embeddings, image_positional_embeddings=positional,
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=multimask_output)
        finally:
            self._set_grid(None, None)
        return SamImageSegmentationOutput(iou_scores=iou_scores, pred_masks=low_res_masks)


class VariantTuner(SamTuner):
    """Wraps the vision encoder in the variant's layer and makes the model a :class:`VariantSamModel`."""

    layer_cls: type[VariantEncoderLayer] = VariantEncoderLayer

    def _prepare_model(self, peft_config, model) -> None:
        if not isinstance(model, SamModel):
            raise TypeError(f"{peft_config.peft_name}: the base model must be a transformers SamModel, "
                            f"got {type(model).__name__}")
        enable_dynamic_input_size(model)
        model.__class__ = VariantSamModel


class GsamModel(VariantTuner):
    prefix = "variant_gsam_"
    layer_cls = GsamEncoderLayer

    def _mark_only_adapters_as_trainable(self, model: torch.nn.Module) -> None:
        """As every tuner, except that ``train_peg: false`` keeps the PEG at its init (G-SAM)."""
        super()._mark_only_adapters_as_trainable(model)
        frozen = {f".{name}.peg." for name, config in self.peft_config.items() if not config.train_peg}
        for name, param in model.named_parameters():
            if any(part in name for part in frozen):
                param.requires_grad_(False)


class SamusModel(VariantTuner):
    prefix = "variant_samus_"
    layer_cls = SamusEncoderLayer
