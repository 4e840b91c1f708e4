"""``info_loss_batch: global``: the information losses' Gram matrices over the batch of every process.

Each Gram matrix is B×B over the batch it sees. With ``local`` (the default) that is the per-device
micro-batch; with ``global`` the per-sample relations and features are gathered from every process
(with gradient: ``torch.distributed.nn.functional.all_gather``), so every process computes the loss
of one large batch. The backward of the gather sums each process's gradient for its own samples over
processes, and DDP averages over processes: the parameter gradient is that of the global-batch loss.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

__all__ = ["distributed_world_size", "gather_batch"]


def distributed_world_size() -> int:
    """The number of processes of the default group (1 without torch.distributed)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def gather_batch(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` (B, ...) of every process concatenated along the batch (rank order); differentiable when
    ``tensor`` requires grad. Every process must pass the same shape (accelerate's ``even_batches``)."""
    if distributed_world_size() == 1:
        return tensor
    if tensor.requires_grad:
        from torch.distributed.nn.functional import all_gather

        return torch.cat(all_gather(tensor.contiguous()), dim=0)
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts, dim=0)
