import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from infosam_hf import losses
from infosam_hf.losses import compression_loss, distillation_loss, structure_loss


# ---- independent float64 reference, written from the formulas -------------------------------------
def ref_gram(x):
    u = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    u = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
    g = u @ u.T
    return g / np.trace(g)


def ref_h(g):
    g = g / np.trace(g)
    return np.log2((g ** 2).sum())


def ref_loss_r(img, tok, rel):
    g_img, g_tok, g_rel = ref_gram(img), ref_gram(tok), ref_gram(rel)
    return -ref_h(g_rel) + ref_h(g_img * g_tok * g_rel)


def ref_loss_d(rel_t, rel_s):
    g_t, g_s = ref_gram(rel_t), ref_gram(rel_s)
    return ref_h(g_t) + ref_h(g_s) - ref_h(g_t * g_s)


@pytest.mark.parametrize("batch", [2, 4, 7])
def test_info_losses_match_float64_reference(batch):
    g = torch.Generator().manual_seed(batch)
    img = torch.randn(batch, 16, 8, generator=g)
    tok = torch.randn(batch, 1, 8, generator=g)
    rel_t = F.normalize(torch.randn(batch, 16, generator=g), dim=1)
    rel_s = F.normalize(rel_t + 0.3 * torch.randn(batch, 16, generator=g), dim=1)
    assert compression_loss(img, tok, rel_t).item() == pytest.approx(ref_loss_r(img, tok, rel_t), abs=1e-5)
    assert distillation_loss(rel_t, rel_s).item() == pytest.approx(ref_loss_d(rel_t, rel_s), abs=1e-5)


def test_identical_relations_give_minus_entropy_and_bounds():
    rel = F.normalize(torch.randn(4, 32), dim=1)
    # loss_d = H(G) + H(G) - H(G∘G) for identical relations: finite, matches reference
    assert distillation_loss(rel, rel).item() == pytest.approx(ref_loss_d(rel, rel), abs=1e-5)
    # H of a trace-normalised Gram lies in [-log2 B, 0]
    h = losses.matrix_entropy(losses.gram_matrix(rel)).item()
    assert -2.0 - 1e-6 <= h <= 1e-6


def test_batch_of_one_is_exactly_zero_and_warns_once(monkeypatch):
    monkeypatch.setattr(losses, "_warned_batch_of_one", False)
    rel = torch.randn(1, 10, requires_grad=True)
    with pytest.warns(UserWarning, match="batch of 1"):
        lr = compression_loss(torch.randn(1, 5, 4), torch.randn(1, 1, 4), rel)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ld = distillation_loss(rel, torch.randn(1, 10))
    assert lr.item() == 0.0 and ld.item() == 0.0
    (lr + ld).backward()
    assert torch.isfinite(rel.grad).all()


def test_zero_features_give_a_non_finite_loss_without_a_host_read():
    # undefined (zero trace): the loss comes out non-finite on the device, and the trainer masks it
    assert not torch.isfinite(distillation_loss(torch.zeros(3, 8), torch.randn(3, 8)))


def test_non_finite_features_give_a_non_finite_loss():
    bad = torch.randn(3, 8)
    bad[0, 0] = float("nan")
    assert not torch.isfinite(distillation_loss(bad, torch.randn(3, 8)))
    assert torch.isfinite(distillation_loss(torch.randn(3, 8), torch.randn(3, 8)))


def test_losses_run_in_float32_under_bf16_autocast():
    rel_t = torch.randn(4, 64).bfloat16()
    rel_s = torch.randn(4, 64).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = distillation_loss(rel_t, rel_s)
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref_loss_d(rel_t.float(), rel_s.float()), abs=1e-4)


def test_compression_loss_detaches_teacher_features():
    img = torch.randn(4, 9, 8, requires_grad=True)
    tok = torch.randn(4, 1, 8, requires_grad=True)
    rel = torch.randn(4, 9, requires_grad=True)
    compression_loss(img, tok, rel).backward()
    assert img.grad is None and tok.grad is None
    assert rel.grad is not None and rel.grad.abs().sum() > 0


# ---- structure loss --------------------------------------------------------------------------------
def ref_structure(logits, target, weighted=True):
    logits, target = logits.double(), target.double()
    weit = 1 + 5 * torch.abs(F.avg_pool2d(target, 31, 1, 15) - target)
    bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    wbce = (weit * bce).sum((2, 3)) / weit.sum((2, 3)) if weighted else bce.mean()
    pred = torch.sigmoid(logits)
    inter = (pred * target * weit).sum((2, 3))
    union = ((pred + target) * weit).sum((2, 3))
    return (wbce + 1 - (inter + 1) / (union - inter + 1)).mean()


def test_structure_loss_weighted_and_unweighted():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 40, 40, generator=g) * 3
    target = (torch.rand(3, 1, 40, 40, generator=g) > 0.6).float()
    assert structure_loss(logits, target).item() == pytest.approx(ref_structure(logits, target).item(), rel=1e-5)
    unweighted = structure_loss(logits, target, bce="unweighted").item()
    assert unweighted == pytest.approx(ref_structure(logits, target, weighted=False).item(), rel=1e-5)
    assert unweighted != pytest.approx(structure_loss(logits, target).item(), rel=1e-4)


def test_unweighted_reproduces_the_official_reduce_none_quirk():
    g = torch.Generator().manual_seed(1)
    pred = torch.randn(2, 1, 32, 32, generator=g)
    mask = (torch.rand(2, 1, 32, 32, generator=g) > 0.5).float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the official code: reduce='none' is a truthy legacy flag -> a scalar global mean
        wbce = F.binary_cross_entropy_with_logits(pred, mask, reduce="none")
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    p = torch.sigmoid(pred)
    inter = ((p * mask) * weit).sum(dim=(2, 3))
    union = ((p + mask) * weit).sum(dim=(2, 3))
    official = (wbce + 1 - (inter + 1) / (union - inter + 1)).mean()
    assert structure_loss(pred, mask, bce="unweighted").item() == pytest.approx(official.item(), rel=1e-6)


def test_structure_loss_rejects_unknown_mode():
    with pytest.raises(ValueError, match="structure_loss_bce"):
        structure_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4), bce="focal")
