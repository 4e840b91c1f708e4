"""Peak memory of a training step counted on the ``meta`` device: no real memory, no compute.

Method: every tensor an operator creates inside :class:`LiveTensorBytes` is noted with the size of its
storage (views share their base's storage and add nothing). The storage is freed when the last tensor
on it dies (a weakref finaliser on each tensor; autograd's saved tensors keep theirs alive, as on a
GPU). The peak of the live total is the step's activation + gradient peak; the weights, optimiser
state and inputs, created before, are added by the caller. What it leaves out: the caching
allocator's fragmentation and rounding, cuBLAS/cuDNN workspaces, and kernels' internal scratch
space, so a GPU's ``max_memory_allocated`` is typically a few percent higher.
"""

from __future__ import annotations

import weakref

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["LiveTensorBytes", "unique_bytes"]


class LiveTensorBytes(TorchDispatchMode):
    """``with LiveTensorBytes() as mem: step()`` then ``mem.peak`` (bytes) over the block."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peak = 0
        self._storages: dict[int, list[int]] = {}  # storage id -> [bytes, tensors alive on it]

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.live -= entry[0]
            del self._storages[key]

    def _note(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage._cdata
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [storage.nbytes(), 0]
            self.live += entry[0]
            self.peak = max(self.peak, self.live)
        entry[1] += 1
        weakref.finalize(tensor, self._release, key)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        inputs = {t.untyped_storage()._cdata for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)}
        for tensor in tree_flatten(out)[0]:
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage()._cdata not in inputs:
                self._note(tensor)  # a new storage (views and in-place results share an input's)
            elif isinstance(tensor, torch.Tensor):
                key = tensor.untyped_storage()._cdata
                if key in self._storages:  # one more tensor on a storage created inside the block
                    self._storages[key][1] += 1
                    weakref.finalize(tensor, self._release, key)
        return out


def unique_bytes(*modules: torch.nn.Module, trainable_only: bool = False) -> int:
    """Bytes of the distinct parameters of ``modules`` (shared weights counted once)."""
    seen, total = set(), 0
    for module in modules:
        for param in module.parameters():
            if (trainable_only and not param.requires_grad) or id(param) in seen:
                continue
            seen.add(id(param))
            total += param.numel() * param.element_size()
    return total
