"""Relation diagnostics: what the information losses are doing, logged as ``info/...`` beside ``loss_r`` and
``loss_d``.

With every feature L2-normalised, ``loss_r`` is minimised by making all relation maps of a batch identical.
Once the teacher's relation Gram is all ones, ``loss_d`` is exactly 0 with zero gradient and training is plain
PEFT. The values here show whether that happened: the teacher's ``a2`` (mean off-diagonal
``(cos_img · cos_tok)²``: how strongly image and mask-token features correlate across the batch), the mean
off-diagonal squared cosine of the teacher's and the student's relation maps (1 = collapsed), the Rényi-2
entropies of the relation Grams in bits (0 = collapsed, log2 B = orthogonal) and their mutual information
(``= -loss_d``).

Everything stays on the device: per-step values are summed as tensors and read once per logging interval.
"""

from __future__ import annotations

import logging

import torch

from ..losses import float32_region, gram_matrix, matrix_entropy

logger = logging.getLogger(__name__)

__all__ = ["COLLAPSE_COS2", "INFO_PREFIX", "RelationDiagnostics", "collapse_bound", "relation_diagnostics"]

INFO_PREFIX = "info/"
COLLAPSE_COS2 = 0.95  # teacher relations whose mean off-diagonal cos² exceeds this have collapsed
TEACHER_COS2 = f"{INFO_PREFIX}teacher_relation_cos2"


def _mean_off_diagonal(matrix: torch.Tensor) -> torch.Tensor:
    size = matrix.shape[0]
    off = 1.0 - torch.eye(size, device=matrix.device, dtype=matrix.dtype)
    return (matrix * off).sum() / (size * (size - 1))


@torch.no_grad()
def relation_diagnostics(image_embeds_t: torch.Tensor, mask_tokens_t: torch.Tensor, relation_t: torch.Tensor,
                         relation_s: torch.Tensor) -> dict[str, torch.Tensor]:
    """The ``info/...`` values of one batch (B >= 2) as 0-d float32 tensors on the features' device."""
    with float32_region(relation_t):
        g_img, g_tok = gram_matrix(image_embeds_t.detach()), gram_matrix(mask_tokens_t.detach())
        g_t, g_s = gram_matrix(relation_t.detach()), gram_matrix(relation_s.detach())
        # the Rényi-2 entropy in bits is -H, the losses' matrix entropy
        entropy_t, entropy_s = -matrix_entropy(g_t), -matrix_entropy(g_s)
        return {
            f"{INFO_PREFIX}teacher_a2": _mean_off_diagonal((g_img * g_tok).pow(2)),
            TEACHER_COS2: _mean_off_diagonal(g_t.pow(2)),
            f"{INFO_PREFIX}student_relation_cos2": _mean_off_diagonal(g_s.pow(2)),
            f"{INFO_PREFIX}teacher_entropy": entropy_t,
            f"{INFO_PREFIX}student_entropy": entropy_s,
            f"{INFO_PREFIX}mutual_information": entropy_t + entropy_s + matrix_entropy(g_t, g_s),
        }


def collapse_bound(batch_size: int, lambda_r: float, lambda_d: float) -> float:
    """The ``a2`` below which ``lambda_r·loss_r + lambda_d·loss_d`` is lower for collapsed relations than for
    orthogonal ones: ``(B^(1 − λd/λr) − 1)/(B − 1)`` (1/3 at B = 4, λr = 1, λd = 0.5)."""
    if batch_size < 2 or lambda_r <= 0:
        return 0.0
    return (batch_size ** (1.0 - lambda_d / lambda_r) - 1.0) / (batch_size - 1.0)


class RelationDiagnostics:
    """Sums :func:`relation_diagnostics` over a logging interval on the device; :meth:`pop` reads the means.

    Warns once, in one line, when the teacher's relations have collapsed over an interval.
    """

    def __init__(self, lambda_r: float = 1.0, lambda_d: float = 0.5):
        self.lambda_r, self.lambda_d = lambda_r, lambda_d
        self.sums: dict[str, torch.Tensor] = {}
        self.steps = 0
        self.batch_size = 0
        self.warned = False

    def update(self, image_embeds_t: torch.Tensor, mask_tokens_t: torch.Tensor, relation_t: torch.Tensor,
               relation_s: torch.Tensor) -> None:
        """Add one batch's values (skipped for a batch of 1, where every relation is trivially identical)."""
        if relation_t.shape[0] < 2:
            return
        self.batch_size = max(self.batch_size, relation_t.shape[0])
        for name, value in relation_diagnostics(image_embeds_t, mask_tokens_t, relation_t, relation_s).items():
            self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.steps += 1

    def pop(self, reduce=None) -> dict[str, float]:
        """The interval's means (``reduce(tensor) -> tensor`` averages them over processes), then reset."""
        if not self.steps:
            return {}
        names = list(self.sums)
        means = torch.stack([self.sums[name] for name in names]) / self.steps
        if reduce is not None:
            means = reduce(means)
        logs = {name: round(float(value), 6) for name, value in zip(names, means.tolist())}
        self.sums.clear()
        self.steps = 0
        self._check_collapse(logs)
        return logs

    def _check_collapse(self, logs: dict[str, float]) -> None:
        cos2 = logs.get(TEACHER_COS2)
        if self.warned or cos2 is None or not cos2 > COLLAPSE_COS2:
            return
        self.warned = True
        bound = collapse_bound(self.batch_size, self.lambda_r, self.lambda_d)
        logger.warning(
            "InfoSAM relations collapsed: the teacher's relation maps are nearly identical across each batch "
            "(mean off-diagonal cos² %.3f > %.2f), so loss_d is ~0 with no gradient and training is plain PEFT; "
            "the loss prefers this when %s = %.3f < %.3f, so try a larger batch or a lower lambda_r "
            "(README: Relation diagnostics)", cos2, COLLAPSE_COS2, f"{INFO_PREFIX}teacher_a2",
            logs.get(f"{INFO_PREFIX}teacher_a2", float("nan")), bound)
