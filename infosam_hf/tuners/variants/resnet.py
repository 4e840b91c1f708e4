"""GSAM's CNN branch: a ResNet stem and its first three stages (stride 8) from transformers' ResNet, and the loading
of torchvision's ImageNet ResNet-101 weights (``timm/resnet101.tv_in1k``, timm key names) into it."""

from __future__ import annotations

import re

import torch
from torch import nn
from transformers import ResNetConfig
from transformers.models.resnet.modeling_resnet import ResNetConvLayer, ResNetStage

__all__ = ["RESNET101_WEIGHTS", "ResNetBranch", "timm_to_branch_key", "load_timm_resnet"]

RESNET101_WEIGHTS = "timm/resnet101.tv_in1k"  # torchvision's IMAGENET1K_V1 resnet101 as safetensors
_BN = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


class ResNetBranch(nn.Module):
    """conv1 → BN → ReLU (no max-pool), ``len(depths)`` bottleneck stages (the first at stride 1, the others
    at stride 2), then a bias-free 1×1 convolution to the ViT width. Input (B, 3, H, W), output (B, dim, H/2^k, W/2^k)
    with k = ``len(depths)``; ResNet-101's layers 1–3 are ``depths=(3, 4, 23)``."""

    def __init__(self, dim: int, depths=(3, 4, 23), hidden_sizes=(256, 512, 1024), embedding_size: int = 64):
        super().__init__()
        config = ResNetConfig(embedding_size=embedding_size, hidden_sizes=list(hidden_sizes), depths=list(depths),
                              layer_type="bottleneck", hidden_act="relu", downsample_in_first_stage=False)
        self.stem = ResNetConvLayer(3, embedding_size, kernel_size=7, stride=2, activation="relu")
        widths = [embedding_size, *hidden_sizes]
        self.stages = nn.ModuleList(
            ResNetStage(config, widths[i], widths[i + 1], stride=1 if i == 0 else 2, depth=depth)
            for i, depth in enumerate(depths))
        self.proj = nn.Conv2d(hidden_sizes[-1], dim, 1, bias=False)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        x = self.stem(pixel_values)
        for stage in self.stages:
            x = stage(x)
        return self.proj(x)


def timm_to_branch_key(key: str) -> str | None:
    """The :class:`ResNetBranch` key of a timm/torchvision ResNet key, or ``None`` for what the branch does not
    build (layer4, fc)."""
    if re.fullmatch(r"conv1\.weight", key):
        return "stem.convolution.weight"
    if match := re.fullmatch(rf"bn1\.{_BN}", key):
        return f"stem.normalization.{match.group(1)}"
    if match := re.fullmatch(r"layer([1-4])\.(\d+)\.(.+)", key):
        stage, block, rest = int(match.group(1)) - 1, match.group(2), match.group(3)
        if stage == 3:
            return None
        prefix = f"stages.{stage}.layers.{block}"
        if sub := re.fullmatch(r"conv([1-3])\.weight", rest):
            return f"{prefix}.layer.{int(sub.group(1)) - 1}.convolution.weight"
        if sub := re.fullmatch(rf"bn([1-3])\.{_BN}", rest):
            return f"{prefix}.layer.{int(sub.group(1)) - 1}.normalization.{sub.group(2)}"
        if re.fullmatch(r"downsample\.0\.weight", rest):
            return f"{prefix}.shortcut.convolution.weight"
        if sub := re.fullmatch(rf"downsample\.1\.{_BN}", rest):
            return f"{prefix}.shortcut.normalization.{sub.group(1)}"
    if key.startswith("fc."):
        return None
    raise KeyError(f"unexpected ResNet key {key!r}")


def load_timm_resnet(branch: ResNetBranch, state_dict: dict[str, torch.Tensor]) -> None:
    """Copy a timm-layout ResNet state dict into ``branch`` (all of stem and stages; ``proj`` keeps its init).
    Missing or mis-shaped tensors fail with one line."""
    mapped = {}
    for key, tensor in state_dict.items():
        target = timm_to_branch_key(key)
        if target is not None:
            mapped[target] = tensor
    own = branch.state_dict()
    expected = {k for k in own if not k.startswith("proj.")}
    missing = sorted(expected - set(mapped))
    if missing:
        raise ValueError(f"ResNet weights: {len(missing)} tensors missing for the CNN branch, e.g. {missing[0]}")
    for key, tensor in mapped.items():
        if key not in own or own[key].shape != tensor.shape:
            raise ValueError(f"ResNet weights: {key} has shape {tuple(tensor.shape)}, the CNN branch expects "
                             f"{tuple(own[key].shape) if key in own else 'no such tensor'}")
    branch.load_state_dict(mapped, strict=False)


def download_timm_resnet(repo_id: str = RESNET101_WEIGHTS) -> dict[str, torch.Tensor]:
    """The ``model.safetensors`` of a timm ResNet: a local file or directory, the Hub cache, or a download.
    Without a connection it fails at once with one line (no retries)."""
    import socket
    from pathlib import Path
    from urllib.parse import urlparse

    from huggingface_hub import constants, hf_hub_download
    from safetensors.torch import load_file

    path = Path(repo_id)
    if path.is_dir():
        path = path / "model.safetensors"
    if path.is_file():
        return load_file(str(path))
    try:
        return load_file(hf_hub_download(repo_id, "model.safetensors", local_files_only=True))
    except Exception:  # not cached: download below
        pass
    reason = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else None
    if reason is None:
        try:
            socket.getaddrinfo(urlparse(constants.ENDPOINT).hostname, 443)
        except OSError as err:
            reason = f"no connection to {constants.ENDPOINT}: {err}"
    if reason is None:
        try:
            return load_file(hf_hub_download(repo_id, "model.safetensors"))
        except Exception as err:  # unknown repo, no file, network error
            reason = f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    raise OSError(f"resnet_weights={repo_id!r}: could not get model.safetensors ({reason}); set resnet_weights to a "
                  "local directory, or null for a random init")

