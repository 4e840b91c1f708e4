"""Any input size on a stock ``SamModel`` (G-SAM's variable-size input, on transformers' SAM modules).

:func:`enable_dynamic_input_size` swaps the classes of three modules of a built ``SamModel`` for the
subclasses below; no weight changes, so any PEFT method that wraps the vision layers or their
attention (LoRA, adapters …) keeps working, before or after wrapping. What changes:

- the vision encoder accepts any H×W: the absolute position embedding is resized bicubically
  (``align_corners=False``) to the (H/16, W/16) patch grid on every call (never cached: it may be
  trainable), and added unchanged at the native grid;
- the prompt encoder's no-mask dense embedding and the image-wide positional encoding are built on
  the actual embedding grid;
- point and box coordinates (input-frame pixels) are normalised by the input width (x) and height
  (y), not by the configured square size;
- an input whose sides are not multiples of the patch size is padded bottom/right with zeros and the
  low-resolution logits are cropped back to the unpadded extent.

At the configured size every output is bit-identical to the stock model. The option is recorded as
``config.infosam_dynamic_input_size`` (saved with the config), and :func:`load_sam` /
``load_for_inference`` re-enable it when a saved model carries it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from transformers import SamModel
from transformers.models.sam.modeling_sam import (
    SamPatchEmbeddings,
    SamPromptEncoder,
    SamVisionEncoder,
    SamVisionEncoderOutput,
)
from transformers.utils.generic import merge_with_config_defaults
from transformers.utils.output_capturing import capture_outputs

__all__ = ["DYNAMIC_CONFIG_KEY", "enable_dynamic_input_size", "is_dynamic_input_size", "resize_pos_embed"]

DYNAMIC_CONFIG_KEY = "infosam_dynamic_input_size"


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(1, h, w, C) absolute position embedding resized bicubically to ``grid``; unchanged at its own grid."""
    if tuple(pos_embed.shape[1:3]) == tuple(grid):
        return pos_embed
    resized = F.interpolate(pos_embed.permute(0, 3, 1, 2).float(), size=tuple(grid), mode="bicubic",
                            align_corners=False)
    return resized.permute(0, 2, 3, 1).to(pos_embed.dtype)


class DynamicSamPatchEmbeddings(SamPatchEmbeddings):
    """Patch embedding without the fixed-size check (the input must be a multiple of the patch size)."""

    def forward(self, pixel_values):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(f"pixel_values has {pixel_values.shape[1]} channels, the model expects {self.num_channels}")
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size[0] or width % self.patch_size[1]:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {self.patch_size}")
        return self.projection(pixel_values).permute(0, 2, 3, 1)


class DynamicSamVisionEncoder(SamVisionEncoder):
    """SAM's ViT with the absolute position embedding resized to the input's patch grid."""

    @merge_with_config_defaults
    @capture_outputs(tie_last_hidden_states=False)
    def forward(self, pixel_values: torch.Tensor | None = None, **kwargs) -> SamVisionEncoderOutput:
        if pixel_values is None:
            raise ValueError("You have to specify pixel_values")
        hidden_states = self.patch_embed(pixel_values)
        if self.pos_embed is not None:
            hidden_states = hidden_states + resize_pos_embed(self.pos_embed, hidden_states.shape[1:3])
        for layer_module in self.layers:
            hidden_states = layer_module(hidden_states)
        hidden_states = self.neck(hidden_states)
        return SamVisionEncoderOutput(last_hidden_state=hidden_states)


class DynamicSamPromptEncoder(SamPromptEncoder):
    """Prompt encoder whose coordinate frame and dense-embedding grid follow the current input.

    :class:`DynamicSamModel` sets ``input_hw`` (padded input height, width) and ``grid`` (embedding
    height, width) before each call; unset, they are the configured square.
    """

    input_hw: tuple[int, int] | None = None
    grid: tuple[int, int] | None = None

    def _to_square_frame(self, coords: torch.Tensor) -> torch.Tensor:
        """(x, y) pixel coordinates of the true H×W frame, re-expressed in the configured square frame
        so that the parent's ``(c + 0.5) / size`` gives ``(x + 0.5) / W`` and ``(y + 0.5) / H``."""
        height, width = self.input_hw
        size = self.input_image_size
        scale = torch.tensor([size / width, size / height], dtype=coords.dtype, device=coords.device)
        return (coords + 0.5) * scale - 0.5

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        if self.input_hw is not None:
            points = self._to_square_frame(points)
        return super()._embed_points(points, labels, pad)

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        if self.input_hw is not None:
            boxes = self._to_square_frame(boxes.reshape(*boxes.shape[:-1], 2, 2)).reshape(boxes.shape)
        return super()._embed_boxes(boxes)

    def forward(self, input_points, input_labels, input_boxes, input_masks):
        saved = self.image_embedding_size
        self.image_embedding_size = self.grid or saved
        try:
            return super().forward(input_points, input_labels, input_boxes, input_masks)
        finally:
            self.image_embedding_size = saved


class DynamicSamModel(SamModel):
    """``SamModel`` that takes any H×W per batch (see the module docstring). Build it with
    :func:`enable_dynamic_input_size` on a loaded ``SamModel``."""

    def _set_grid(self, input_hw: tuple[int, int] | None, grid: tuple[int, int] | None) -> None:
        self.prompt_encoder.input_hw = input_hw
        self.prompt_encoder.grid = grid

    def get_image_wide_positional_embeddings(self):
        grid = self.prompt_encoder.grid
        if grid is None:
            return super().get_image_wide_positional_embeddings()
        height, width = grid
        embedding = self.shared_image_embedding.positional_embedding
        ones = torch.ones((height, width), device=embedding.device, dtype=embedding.dtype)
        y_embed = (ones.cumsum(dim=0) - 0.5) / height
        x_embed = (ones.cumsum(dim=1) - 0.5) / width
        positional = self.shared_image_embedding(torch.stack([x_embed, y_embed], dim=-1))
        return positional.permute(2, 0, 1).unsqueeze(0)

    def forward(self, pixel_values: torch.Tensor | None = None, *args, image_embeddings: torch.Tensor | None = None,
                **kwargs):
        patch = self.config.vision_config.patch_size
        crop = None
        if pixel_values is not None:
            height, width = pixel_values.shape[-2:]
            padded_h, padded_w = math.ceil(height / patch) * patch, math.ceil(width / patch) * patch
            if (padded_h, padded_w) != (height, width):
                pixel_values = F.pad(pixel_values, (0, padded_w - width, 0, padded_h - height))
                # low-resolution logits are at 4x the embedding grid, i.e. one logit per patch/4 pixels
                scale = patch // 4
                crop = (math.ceil(height / scale), math.ceil(width / scale))
            grid = (padded_h // patch, padded_w // patch)
        elif image_embeddings is not None:
            grid = tuple(image_embeddings.shape[-2:])
            padded_h, padded_w = grid[0] * patch, grid[1] * patch
        else:
            grid, padded_h, padded_w = None, None, None
        native = self.config.prompt_encoder_config.image_embedding_size
        if grid is None or grid == (native, native):
            self._set_grid(None, None)  # the stock code path, bit for bit
        else:
            self._set_grid((padded_h, padded_w), grid)
        try:
            outputs = super().forward(pixel_values, *args, image_embeddings=image_embeddings, **kwargs)
        finally:
            self._set_grid(None, None)
        if crop is not None:
            outputs.pred_masks = outputs.pred_masks[..., :crop[0], :crop[1]]
        return outputs


def is_dynamic_input_size(model: torch.nn.Module) -> bool:
    """Whether ``model`` (a ``SamModel``) takes any input size."""
    return isinstance(model, DynamicSamModel)


def enable_dynamic_input_size(model: SamModel) -> SamModel:
    """Make a ``SamModel`` (or an already PEFT-wrapped one's base) take any H×W input; in place.

    Records ``config.infosam_dynamic_input_size = True`` so a saved base config rebuilds it. Outputs at
    the configured size are unchanged, bit for bit.
    """
    if isinstance(model, DynamicSamModel):
        return model
    if not isinstance(model, SamModel):
        raise TypeError(f"dynamic_input_size needs a transformers SamModel, got {type(model).__name__}")
    model.vision_encoder.patch_embed.__class__ = DynamicSamPatchEmbeddings
    model.vision_encoder.__class__ = DynamicSamVisionEncoder
    model.prompt_encoder.__class__ = DynamicSamPromptEncoder
    model.__class__ = DynamicSamModel
    setattr(model.config, DYNAMIC_CONFIG_KEY, True)
    return model
