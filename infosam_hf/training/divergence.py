"""Divergence is a failure, not a result: non-finite or exploding losses or weights stop the run with one line
naming the step and the likely cause, and nothing non-finite is saved as the adapter."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["EXPLODED_WEIGHT", "DivergenceError", "check_logged_losses", "check_trainable_weights", "likely_cause"]

EXPLODED_WEIGHT = 1e6  # a trained weight this large (abs) has left any sensible range


class DivergenceError(ValueError):
    """Training diverged; the adapter was not saved."""


def likely_cause(args) -> str:
    """What most likely made the run diverge, from its settings."""
    clipping = args.max_grad_norm if args.max_grad_norm and args.max_grad_norm > 0 else None
    causes = [f"learning_rate={args.learning_rate:g} too high"]
    if clipping is None:
        causes.append("gradient clipping off (max_grad_norm: 0; try max_grad_norm: 1.0)")
    if getattr(args, "fp16", False) or getattr(args, "bf16", False):
        causes.append("half precision (try fp32)")
    return "; ".join(causes)


def _error(step: int, what: str, args) -> DivergenceError:
    return DivergenceError(f"training diverged at step {step}: {what}; likely cause: {likely_cause(args)}. "
                           f"Nothing was saved as the adapter (earlier checkpoints in {args.output_dir} are kept)")


def check_logged_losses(step: int, logs: dict[str, float], args) -> None:
    """Raise when a logged loss (or the gradient norm) is non-finite."""
    for key in ("loss_seg", "loss", "grad_norm"):
        value = logs.get(key)
        if isinstance(value, (int, float)) and not math.isfinite(value):
            raise _error(step, f"{key} is {value}", args)


@torch.no_grad()
def check_trainable_weights(model: nn.Module, step: int, args) -> None:
    """Raise when a trained weight is non-finite or has exploded (one host read for all of them)."""
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        return
    peaks = torch.stack([p.detach().abs().amax().float() if p.numel() else p.new_zeros((), dtype=torch.float)
                         for p in params])
    peak = float(peaks.max()) if torch.isfinite(peaks).all() else math.nan
    if not math.isfinite(peak):
        names = [n for n, p in model.named_parameters() if p.requires_grad and not torch.isfinite(p).all()]
        raise _error(step, f"{len(names)} trained weight tensor(s) are NaN/Inf (first: {names[0] if names else '?'})",
                     args)
    if peak > EXPLODED_WEIGHT:
        raise _error(step, f"a trained weight reached |w| = {peak:.3g}", args)
