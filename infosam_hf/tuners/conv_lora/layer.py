"""Layer of ``conv_lora``: LoRA with a noisy top-1 mixture of multi-scale convolution experts."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..base import SamTunerLayer

__all__ = ["ConvLoraBranch", "ConvLoraLayer", "tokens_to_grid"]


def tokens_to_grid(tokens: torch.Tensor) -> torch.Tensor:
    """``(N, H, W, C)`` (or square ``(N, L, C)``) tokens as an ``(N, C, H, W)`` grid."""
    if tokens.dim() == 3:
        side = math.isqrt(tokens.shape[1])
        if side * side != tokens.shape[1]:
            raise ValueError(f"{tokens.shape[1]} tokens are not a square grid; pass (N, H, W, C) tokens")
        tokens = tokens.reshape(tokens.shape[0], side, side, tokens.shape[2])
    elif tokens.dim() != 4:
        raise ValueError(f"expected (N, H, W, C) tokens, got shape {tuple(tokens.shape)}")
    return tokens.permute(0, 3, 1, 2)


def _cv_squared(values: torch.Tensor) -> torch.Tensor:
    if values.shape[0] == 1:
        return values.new_zeros(())
    values = values.float()
    return values.var() / (values.mean() ** 2 + 1e-10)


class ConvLoraBranch(nn.Module):
    """``x → B(xA + E_k(xA))·alpha/r`` with expert ``k`` chosen per image by a noisy top-1 gate."""

    def __init__(self, d_in: int, d_out: int, r: int, lora_alpha: float, num_experts: int, aux_loss_coef: float):
        super().__init__()
        self.down = nn.Linear(d_in, r, bias=False)
        nn.init.kaiming_uniform_(self.down.weight, a=math.sqrt(5))
        self.up = nn.Linear(r, d_out, bias=False)
        nn.init.zeros_(self.up.weight)
        self.experts = nn.ModuleList(nn.Conv2d(r, r, 3, padding=1) for _ in range(num_experts))
        for expert in self.experts:
            nn.init.zeros_(expert.bias)
        self.w_gate = nn.Parameter(torch.zeros(r, num_experts))
        self.w_noise = nn.Parameter(torch.zeros(r, num_experts))
        self.scaling = lora_alpha / r
        self.aux_loss_coef = aux_loss_coef

    def route(self, grid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen expert per image and the load-balancing loss (noisy gating while training)."""
        pooled = grid.float().mean(dim=(2, 3))
        clean = pooled @ self.w_gate.float()
        num_experts = clean.shape[1]
        if self.training:
            noise_std = F.softplus(pooled @ self.w_noise.float()) + 0.01
            logits = clean + torch.randn_like(clean) * noise_std
        else:
            logits = clean
        top_values, top_index = logits.topk(min(2, num_experts), dim=1)
        choice = top_index[:, 0]
        gates = F.one_hot(choice, num_experts).to(logits.dtype)
        if self.training and num_experts > 1:
            # probability that each expert stays in the top 1 under fresh noise (differentiable load)
            normal = torch.distributions.Normal(0.0, 1.0)
            is_in = logits > top_values[:, 1:2]
            prob_in = normal.cdf((clean - top_values[:, 1:2]) / noise_std)
            prob_out = normal.cdf((clean - top_values[:, 0:1]) / noise_std)
            load = torch.where(is_in, prob_in, prob_out).sum(0)
        else:
            load = gates.sum(0)
        loss = self.aux_loss_coef * (_cv_squared(gates.sum(0)) + _cv_squared(load))
        return choice, loss

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        low = self.down(tokens.to(self.down.weight.dtype))
        grid = tokens_to_grid(low)
        choice, loss = self.route(grid)
        mixed = torch.zeros_like(grid)
        size = grid.shape[-2:]
        for index, expert in enumerate(self.experts):
            rows = (choice == index).nonzero().squeeze(1)
            if rows.numel() == 0:
                # an idle expert stays in the graph with a zero gradient, so DDP needs no unused-parameter search
                mixed = mixed + 0.0 * (expert.weight.sum() + expert.bias.sum())
                continue
            hidden = grid[rows]
            if index > 0:
                hidden = F.interpolate(hidden, scale_factor=index + 1, mode="bicubic")
            hidden = F.gelu(expert(hidden))
            if index > 0:
                hidden = F.interpolate(hidden, size=size, mode="bicubic")
            mixed = mixed.index_add(0, rows, hidden)
        bottleneck = (grid + mixed).permute(0, 2, 3, 1).reshape(low.shape)
        return self.up(bottleneck) * self.scaling, loss


class ConvLoraLayer(SamTunerLayer):
    """A Linear (the fused ``qkv``) plus :class:`ConvLoraBranch` on its input; records the gate loss."""

    adapter_layer_names = ("convlr_branch",)

    def build(self, config) -> dict[str, nn.Module]:
        linear = self.base_layer
        return {"convlr_branch": ConvLoraBranch(linear.in_features, linear.out_features, config.r,
                                                config.lora_alpha, config.num_experts, config.aux_loss_coef)}

    def adapted_forward(self, adapters: list[str], hidden_states: torch.Tensor):
        result = self.base_layer(hidden_states)
        losses = []
        for name in adapters:
            delta, loss = self.convlr_branch[name](hidden_states)
            result = result + delta.to(result.dtype)
            losses.append(loss)
        if self.training:
            self.auxiliary_loss = torch.stack(losses).sum()
        return result
