"""Iterative prompting in training (``iterative_rounds``): corrective clicks, mask prompt, loss over rounds."""

from __future__ import annotations

import pytest
import torch

from infosam_hf import InfoSAMConfig, InfoSAMTrainer
from infosam_hf.data import DataArguments, build_datasets
from infosam_hf.data.collator import PAD_POINT_LABEL
from infosam_hf.training.iterative import add_corrective_clicks
from tests.testing_utils import tiny_student


def test_corrective_clicks_are_appended_per_row():
    labels = torch.zeros(3, 16, 16)
    labels[:, 4:12, 4:12] = 1
    logits = torch.full((3, 1, 16, 16), -5.0)
    logits[1, 0] = 5.0  # everything predicted: the background is the larger error
    logits[2, 0, 4:12, 4:12] = 5.0  # perfect
    sizes = torch.tensor([[16, 16]] * 3)
    first = torch.tensor([[[[1.0, 1.0]]]] * 3), torch.ones(3, 1, 1, dtype=torch.long)
    points, labels_out = add_corrective_clicks(logits, labels, sizes, *first)
    assert points.shape == (3, 1, 2, 2) and labels_out.shape == (3, 1, 2)
    assert points[0, 0, 1].tolist() == [7.0, 7.0] and labels_out[0, 0, 1] == 1  # the object's interior
    assert labels_out[1, 0, 1] == 0  # a negative click on the background
    assert labels_out[2, 0, 1] == PAD_POINT_LABEL  # nothing to correct
    assert torch.equal(points[:, :, :1], first[0])


def _train(tmp_path, name, seed_weights=None, **options):
    data_args = DataArguments(dataset_name_or_path="synthetic", synthetic_num_train=8, synthetic_num_eval=4,
                              synthetic_num_test=4, synthetic_image_size=64, train_prompt="box")
    splits = build_datasets(data_args, image_size=64, seed=0)
    student = tiny_student(seed=0)
    args = InfoSAMConfig(output_dir=str(tmp_path / name), max_steps=2, per_device_train_batch_size=4,
                         learning_rate=1e-3, save_strategy="no", report_to="none", seed=0, use_cpu=True,
                         disable_tqdm=True, teacher_cache="off", logging_steps=1, **options)
    sam = student.get_base_model()
    calls = {"encoder": 0, "decoder": 0}
    sam.vision_encoder.register_forward_hook(lambda *a: calls.__setitem__("encoder", calls["encoder"] + 1))
    sam.mask_decoder.register_forward_hook(lambda *a: calls.__setitem__("decoder", calls["decoder"] + 1))
    trainer = InfoSAMTrainer(model=student, args=args, train_dataset=splits.train)
    trainer.train()
    weights = {n: p.detach().clone() for n, p in student.named_parameters() if p.requires_grad}
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return weights, losses, calls


def test_zero_rounds_is_todays_training_and_rounds_reuse_the_encoder(tmp_path):
    today, today_losses, today_calls = _train(tmp_path, "today")
    zero, zero_losses, _ = _train(tmp_path, "zero", iterative_rounds=0)
    assert today_losses == zero_losses
    assert all(torch.equal(today[n], zero[n]) for n in today)
    rounds, round_losses, calls = _train(tmp_path, "rounds", iterative_rounds=2)
    assert all(torch.isfinite(torch.tensor(round_losses)))
    assert calls["encoder"] == today_calls["encoder"]  # the image encoder runs once per step (student, teacher)
    assert calls["decoder"] == 3 * today_calls["decoder"]  # 1 + 2 rounds, student and teacher
    assert any(not torch.equal(today[n], rounds[n]) for n in today)
    relation = [n for n in today if "relation_module" in n]
    assert relation and any(not torch.equal(today[n], rounds[n]) for n in relation)


def test_iterative_rounds_is_checked():
    with pytest.raises(ValueError, match="iterative_rounds must be >= 0"):
        InfoSAMConfig(output_dir="unused", iterative_rounds=-1, report_to="none", use_cpu=True)
