"""The teacher's image embedding without recomputing what the student already computed.

With the teacher sharing the student's weights (adapters disabled), every encoder stage the tuner leaves
untouched (the patch embedding, the position embedding, the first vision blocks, possibly the neck)
gives the teacher and the student the same output. :func:`shared_prefix_length` counts those stages;
:class:`PrefixCapture` keeps the student's output after the last of them, and
:func:`teacher_image_embeddings` runs only the remaining stages for the teacher.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from peft.tuners.tuners_utils import BaseTunerLayer
from peft.utils.other import AuxiliaryTrainingWrapper
from torch import nn

from ..models.capture import RecordingHooks

__all__ = ["encoder_stages", "shared_prefix_length", "PrefixCapture", "TeacherSwitch", "teacher_image_embeddings"]


def encoder_stages(sam: nn.Module) -> list[nn.Module]:
    """The vision encoder's stages after the patch embedding: every block, then the neck."""
    encoder = sam.vision_encoder
    return [*encoder.layers, encoder.neck]


def _touched(module: nn.Module) -> bool:
    """Whether a tuner changed ``module``: a tuner layer, a trained parameter or a modules_to_save copy in it."""
    for name, sub in module.named_modules():
        if isinstance(sub, BaseTunerLayer) or "modules_to_save" in name:
            return True
    return any(param.requires_grad for param in module.parameters())


def shared_prefix_length(sam: nn.Module) -> int:
    """How many leading encoder stages (see :func:`encoder_stages`) the teacher can take from the student.

    0 when the patch or position embedding is tuned, or when the first block is (LoRA, G-SAM, BitFit), and for
    SAM 2;
    2 for ``sam_adapter`` (blocks 0-1 untouched); every stage (the whole encoder) for ``decoder_only``.
    ``sam`` is the student's ``SamModel`` (``peft_model.get_base_model()``).
    """
    encoder = sam.vision_encoder
    if not (hasattr(encoder, "layers") and hasattr(encoder, "patch_embed")):  # SAM 2's Hiera: not shared
        return 0
    pos_embed = getattr(encoder, "pos_embed", None)
    if _touched(encoder.patch_embed) or (pos_embed is not None and pos_embed.requires_grad):
        return 0
    count = 0
    for stage in encoder_stages(sam):
        if _touched(stage):
            break
        count += 1
    return count


class PrefixCapture(RecordingHooks):
    """A forward hook on the last shared encoder stage; keeps its first output inside ``record()``
    (activation checkpointing's recomputation cannot overwrite it)."""

    def __init__(self, sam: nn.Module, length: int):
        if length <= 0:
            raise ValueError("PrefixCapture needs at least one shared stage")
        self.length = length
        self._handle = encoder_stages(sam)[length - 1].register_forward_hook(self._hook)

    def _hook(self, module, args, output):
        if self._store is not None and "hidden" not in self._store:
            self._store["hidden"] = output.detach()

    def remove(self) -> None:
        self._handle.remove()


class TeacherSwitch:
    """Turns a ``PeftModel`` into its frozen base for the teacher pass: adapters disabled and every module in
    eval mode, as ``with model.disable_adapter(): model.eval()`` does, restored afterwards.

    The adapter layers and modules are listed once, so a switch costs a flag per module instead of peft's
    per-call model status and module-tree walks (about 20 ms a step for SAM on a CPU).
    """

    def __init__(self, peft_model: nn.Module):
        self.model = peft_model
        config = peft_model.active_peft_config
        self.generic = config.is_prompt_learning or config.is_adaption_prompt  # peft's own context handles these
        self.layers = [m for m in peft_model.modules() if isinstance(m, (BaseTunerLayer, AuxiliaryTrainingWrapper))]
        self.modules = list(peft_model.modules())

    @contextlib.contextmanager
    def teacher(self) -> Iterator[nn.Module]:
        training = [module.training for module in self.modules]
        try:
            if self.generic:
                with self.model.disable_adapter():
                    self.model.eval()
                    yield self.model
                return
            was_disabled = self.model._adapters_disabled
            for layer in self.layers:
                layer.enable_adapters(False)
            self.model._adapters_disabled = True
            for module in self.modules:
                module.training = False
            try:
                yield self.model
            finally:
                if not was_disabled:
                    for layer in self.layers:
                        layer.enable_adapters(True)
                self.model._adapters_disabled = was_disabled
        finally:
            for module, mode in zip(self.modules, training):
                module.training = mode


def _pad_to_patch(pixel_values: torch.Tensor, patch: int) -> torch.Tensor:
    height, width = pixel_values.shape[-2:]
    pad_h, pad_w = math.ceil(height / patch) * patch - height, math.ceil(width / patch) * patch - width
    return F.pad(pixel_values, (0, pad_w, 0, pad_h)) if pad_h or pad_w else pixel_values


@torch.no_grad()
def teacher_image_embeddings(sam: nn.Module, pixel_values: torch.Tensor | None = None,
                             hidden: torch.Tensor | None = None, start: int = 0) -> torch.Tensor:
    """The vision encoder's output (B, C, h, w) of ``sam`` as it is called (adapters disabled by the caller).

    With ``hidden`` (the output of encoder stage ``start - 1``, taken from the student), only the stages
    from ``start`` on run; otherwise the whole encoder runs on ``pixel_values`` (padded to the patch size,
    as a dynamic-size model pads its input).
    """
    if hidden is None:
        pixel_values = _pad_to_patch(pixel_values, sam.config.vision_config.patch_size)
        return sam.vision_encoder(pixel_values).last_hidden_state
    for stage in encoder_stages(sam)[start:]:
        hidden = stage(hidden)
    return hidden
