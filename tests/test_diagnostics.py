"""Relation diagnostics (info/...): values, the one-time collapse warning, no host sync, trainer logs, plot."""

from __future__ import annotations

import logging
import math

import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from infosam_hf import InfoSAMConfig, InfoSAMTrainer
from infosam_hf.evaluation.visualization import plot_training_curves
from infosam_hf.losses import distillation_loss, gram_matrix, matrix_entropy
from infosam_hf.training import diagnostics
from infosam_hf.training.diagnostics import RelationDiagnostics, collapse_bound, relation_diagnostics
from tests.testing_utils import tiny_data
from tests.testing_utils import HISTORY
from tests.testing_utils import tiny_student


def _features(batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(batch, 16, 8, generator=g), torch.randn(batch, 1, 8, generator=g),
            F.normalize(torch.randn(batch, 16, generator=g), dim=-1), F.normalize(torch.randn(batch, 16, generator=g), dim=-1))


def test_values_match_their_definitions():
    image, token, rel_t, rel_s = _features()
    values = relation_diagnostics(image, token, rel_t, rel_s)
    pairs = [(i, j) for i in range(4) for j in range(4) if i != j]
    cos = lambda x, i, j: float(F.cosine_similarity(x[i].flatten(), x[j].flatten(), dim=0))  # noqa: E731  (pytest 9.2's approx rejects 0-d tensors)
    assert values["info/teacher_a2"] == pytest.approx(sum((cos(image, i, j) * cos(token, i, j)) ** 2 for i, j in pairs) / 12, rel=1e-5)
    assert values["info/teacher_relation_cos2"] == pytest.approx(sum(cos(rel_t, i, j) ** 2 for i, j in pairs) / 12, rel=1e-5)
    assert values["info/student_relation_cos2"] == pytest.approx(sum(cos(rel_s, i, j) ** 2 for i, j in pairs) / 12, rel=1e-5)
    assert values["info/teacher_entropy"] == pytest.approx(-float(matrix_entropy(gram_matrix(rel_t))), rel=1e-5)
    assert values["info/mutual_information"] == pytest.approx(-float(distillation_loss(rel_t, rel_s)), rel=1e-4, abs=1e-6)


def test_collapsed_and_orthogonal_extremes():
    image, token, _, _ = _features()
    same = F.normalize(torch.ones(4, 16), dim=-1)
    collapsed = relation_diagnostics(image, token, same, same)
    assert collapsed["info/teacher_relation_cos2"] == pytest.approx(1.0)
    assert collapsed["info/teacher_entropy"] == pytest.approx(0.0, abs=1e-6)
    assert collapsed["info/mutual_information"] == pytest.approx(0.0, abs=1e-6)  # loss_d = 0: nothing to distil
    eye = torch.eye(4, 16)
    orthogonal = relation_diagnostics(image, token, eye, eye)
    assert orthogonal["info/teacher_relation_cos2"] == 0.0
    assert orthogonal["info/teacher_entropy"] == pytest.approx(2.0) and orthogonal["info/mutual_information"] == pytest.approx(2.0)
    assert collapse_bound(4, 1.0, 0.5) == pytest.approx(1 / 3)
    assert collapse_bound(16, 1.0, 0.5) == pytest.approx(3 / 15) and collapse_bound(4, 0.5, 0.5) == 0.0


def test_update_never_synchronises_with_the_host(monkeypatch):
    tracker = RelationDiagnostics()
    for name in ("item", "tolist", "__float__", "__int__", "__bool__", "cpu", "numpy"):
        monkeypatch.setattr(torch.Tensor, name, lambda *a, **k: (_ for _ in ()).throw(AssertionError("host sync")))
    for seed in range(3):
        tracker.update(*_features(seed=seed))
    monkeypatch.undo()
    assert tracker.steps == 3 and all(isinstance(v, torch.Tensor) for v in tracker.sums.values())
    means = tracker.pop()
    expected = sum(float(relation_diagnostics(*_features(seed=s))["info/teacher_a2"]) for s in range(3)) / 3
    assert means["info/teacher_a2"] == pytest.approx(expected, abs=1e-6)
    assert tracker.pop() == {} and tracker.steps == 0


def test_collapse_warning_once_in_one_line(caplog):
    caplog.set_level(logging.WARNING, logger=diagnostics.__name__)
    image, token, rel_t, rel_s = _features()
    tracker = RelationDiagnostics(lambda_r=1.0, lambda_d=0.5)
    tracker.update(image, token, rel_t, rel_s)
    tracker.pop()
    assert not caplog.records  # random relations: no collapse
    same = F.normalize(torch.ones(4, 16), dim=-1) + 0.01 * rel_t
    for _ in range(2):
        tracker.update(image, token, same, rel_s)
        tracker.pop()
    assert len(caplog.records) == 1
    message = caplog.records[0].getMessage()
    assert "\n" not in message and "collapsed" in message and "plain PEFT" in message
    assert "larger batch" in message and "lower lambda_r" in message and "0.333" in message


@pytest.mark.parametrize("enabled", [True, False])
def test_trainer_logs_info_beside_the_losses_only_when_enabled(tmp_path, monkeypatch, enabled):
    if not enabled:  # off: the diagnostics are never computed
        monkeypatch.setattr("infosam_hf.training.diagnostics.relation_diagnostics",
                            lambda *a: (_ for _ in ()).throw(AssertionError("computed while off")))
    args = InfoSAMConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, save_strategy="no",
                         report_to="none", use_cpu=True, disable_tqdm=True, logging_steps=1, info_diagnostics=enabled)
    trainer = InfoSAMTrainer(model=tiny_student(), args=args, train_dataset=tiny_data().train)
    trainer.train()
    logged = [entry for entry in trainer.state.log_history if "loss_d" in entry]
    assert len(logged) == 2
    info = [{k: v for k, v in entry.items() if k.startswith("info/")} for entry in logged]
    if not enabled:
        assert trainer.info_diagnostics is None and info == [{}, {}]
        return
    assert all(len(entry) == 6 and all(math.isfinite(v) for v in entry.values()) for entry in info)
    for entry in logged:  # MI of the relation Grams is -loss_d
        assert entry["info/mutual_information"] == pytest.approx(-entry["loss_d"], abs=1e-4)


def test_plot_has_a_diagnostics_panel(tmp_path):
    pytest.importorskip("matplotlib")
    with_info = [dict(entry, **{"info/teacher_a2": 0.2, "info/teacher_relation_cos2": 0.5}) if "loss_d" in entry
                 else entry for entry in HISTORY]
    plain, panel = plot_training_curves(HISTORY, tmp_path / "a.png"), plot_training_curves(with_info, tmp_path / "b.png")
    with Image.open(plain) as a, Image.open(panel) as b:
        assert b.width == pytest.approx(a.width * 3 / 2, rel=0.02)
