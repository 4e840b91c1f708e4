"""Export-time replacements that keep the image encoder's graph valid at any input height and width.

The TorchScript exporter traces Python: wherever the model turns a tensor size into a Python number, the traced
graph keeps that number. Two such places matter for a dynamic-size encoder graph, and :func:`dynamic_shape_ops`
swaps them, for the duration of an export only, for tensor-only versions with the same results:

- ``SamVisionAttention.get_rel_pos`` (``int(2 * max(q, k) - 1)`` rows, ``max(k / q, 1.0)`` scales): the relative-
  position table is resized to the current grid with tensor arithmetic instead;
- ``F.adaptive_avg_pool2d`` in G-SAM's pooled-key attention (the exporter needs a static input size): written as
  two averaging matrices built from the input size (identical bins: ``floor(i H / k)`` .. ``ceil((i + 1) H / k)``).

Outside the ``with`` block the model runs its own code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from transformers.models.sam.modeling_sam import SamVisionAttention

__all__ = ["adaptive_avg_pool2d", "dynamic_shape_ops", "get_rel_pos"]


def _pool_matrix(size, out: int, dtype: torch.dtype) -> torch.Tensor:
    """(out, size) averaging matrix of adaptive average pooling along one axis of length ``size``."""
    index = torch.arange(out, dtype=torch.float32)
    start = torch.floor(index * size / out)
    end = torch.ceil((index + 1) * size / out)
    position = torch.arange(size, dtype=torch.float32)[None]
    inside = ((position >= start[:, None]) & (position < end[:, None])).to(dtype)
    return inside / inside.sum(1, keepdim=True)


def adaptive_avg_pool2d(x: torch.Tensor, output_size) -> torch.Tensor:
    """``F.adaptive_avg_pool2d`` of a (B, C, H, W) tensor with sizes that stay symbolic in a traced graph."""
    out_h, out_w = (output_size, output_size) if isinstance(output_size, int) else output_size
    rows = _pool_matrix(x.shape[-2], out_h, x.dtype)
    cols = _pool_matrix(x.shape[-1], out_w, x.dtype)
    return torch.einsum("ih,bchw,jw->bcij", rows, x, cols)


def get_rel_pos(self, q_size, k_size, rel_pos: torch.Tensor) -> torch.Tensor:
    """``SamVisionAttention.get_rel_pos`` with the query and key sizes kept as tensors."""
    q, k = torch.as_tensor(q_size), torch.as_tensor(k_size)
    length = 2 * torch.maximum(q, k) - 1
    resized = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).transpose(1, 2), size=length, mode="linear")
    resized = resized.reshape(rel_pos.shape[1], -1).permute(1, 0)
    qf, kf = q.float(), k.float()
    q_coords = torch.arange(q)[:, None] * torch.clamp(kf / qf, min=1.0)
    k_coords = torch.arange(k)[None, :] * torch.clamp(qf / kf, min=1.0)
    relative = (q_coords - k_coords) + (kf - 1) * torch.clamp(qf / kf, min=1.0)
    return resized[relative.long()]


class _FunctionalWithPool:
    """``torch.nn.functional`` with :func:`adaptive_avg_pool2d` in place of its own."""

    def __getattr__(self, name: str):
        return adaptive_avg_pool2d if name == "adaptive_avg_pool2d" else getattr(F, name)


@contextlib.contextmanager
def dynamic_shape_ops() -> Iterator[None]:
    """Inside the block, SAM's relative-position lookup and the variants' adaptive pooling trace size-agnostically."""
    from ..tuners.variants import blocks

    saved_functional, saved_rel_pos = blocks.F, SamVisionAttention.get_rel_pos
    blocks.F = _FunctionalWithPool()
    SamVisionAttention.get_rel_pos = get_rel_pos
    try:
        yield
    finally:
        blocks.F = saved_functional
        SamVisionAttention.get_rel_pos = saved_rel_pos
