import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import TrainerCallback

from infosam_hf import InfoSAMConfig, InfoSAMTrainer
from infosam_hf.training.run import parse_train_args, run_training
from tests.testing_utils import DEMO, FAST, free_port, tiny_data, tiny_student

ROOT = Path(__file__).resolve().parents[1]


class GradRecorder(TrainerCallback):
    def __init__(self):
        self.grads = None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def one_step(tmp_path, batch_size, accumulation, lambda_r=0.0, lambda_d=0.0):
    splits = tiny_data()
    recorder = GradRecorder()
    args = InfoSAMConfig(output_dir=str(tmp_path / f"run_{batch_size}_{accumulation}"), max_steps=1,
                         per_device_train_batch_size=batch_size, gradient_accumulation_steps=accumulation,
                         learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                         lambda_r=lambda_r, lambda_d=lambda_d, use_cpu=True, disable_tqdm=True)
    trainer = InfoSAMTrainer(model=tiny_student(), args=args, train_dataset=splits.train, callbacks=[recorder])
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry][0]
    return logs, recorder.grads


def test_gradient_accumulation_matches_the_full_batch(tmp_path):
    full_logs, full_grads = one_step(tmp_path, batch_size=4, accumulation=1)
    ga_logs, ga_grads = one_step(tmp_path, batch_size=2, accumulation=2)
    assert ga_logs["loss"] == pytest.approx(full_logs["loss"], rel=1e-4)
    assert ga_logs["loss_seg"] == pytest.approx(full_logs["loss_seg"], rel=1e-4)
    assert full_grads.keys() == ga_grads.keys() and full_grads
    for name, grad in full_grads.items():
        torch.testing.assert_close(ga_grads[name], grad, rtol=1e-3, atol=1e-6, msg=name)


def test_logged_loss_is_the_weighted_sum_of_components_under_accumulation(tmp_path):
    logs, _ = one_step(tmp_path, batch_size=2, accumulation=2, lambda_r=1.0, lambda_d=0.5)
    expected = logs["loss_seg"] + 1.0 * logs["loss_r"] + 0.5 * logs["loss_d"]
    assert logs["loss"] == pytest.approx(expected, abs=2e-4)


def test_info_losses_reach_the_right_parameters(tmp_path):
    splits = tiny_data()
    from infosam_hf.data import SamPromptCollator
    batch = SamPromptCollator()([splits.train[i] for i in range(4)])
    for lambda_r, lambda_d, expect_lora in ((1.0, 0.0, False), (0.0, 1.0, True)):
        student = tiny_student()
        args = InfoSAMConfig(output_dir=str(tmp_path), lambda_r=lambda_r, lambda_d=lambda_d, report_to="none",
                             use_cpu=True)
        trainer = InfoSAMTrainer(model=student, args=args)
        student.train()
        with trainer.student_capture.record() as feats:
            student(pixel_values=batch["pixel_values"], input_boxes=batch["input_boxes"], multimask_output=False)
        teacher = trainer.teacher_features(student, batch)
        from infosam_hf.losses import compression_loss, distillation_loss
        from infosam_hf.relation import get_relation_module
        relation = get_relation_module(student)
        rel_t = relation(teacher["image_embeds"], teacher["mask_token"])
        rel_s = relation(feats["image_embeds"], feats["mask_token"])
        loss = (lambda_r * compression_loss(teacher["image_embeds"], teacher["mask_token"], rel_t)
                + lambda_d * distillation_loss(rel_t, rel_s))
        loss.backward()
        grads = {n for n, p in student.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        assert any("relation_module.modules_to_save" in n for n in grads)
        lora_or_decoder = {n for n in grads if "lora_" in n or "mask_decoder" in n}
        assert bool(lora_or_decoder) is expect_lora, (lambda_r, lambda_d, sorted(grads))
        assert not any("original_module" in n or "base_layer" in n for n in grads)


def test_evaluation_skips_the_teacher(tmp_path):
    """No forward of evaluate() runs the teacher (the student with its adapters disabled): a hook on the mask
    decoder records, for every call, whether the adapters were off. A training loss on the same trainer shows the
    hook sees a teacher pass when there is one."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    splits = tiny_data()
    args = InfoSAMConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, metric_set="iou",
                         per_device_eval_batch_size=4, disable_tqdm=True, teacher_cache="off")
    student = tiny_student()
    trainer = InfoSAMTrainer(model=student, args=args, train_dataset=splits.train, eval_dataset=splits.eval)
    adapters = [m for m in student.modules() if isinstance(m, BaseTunerLayer)]
    teacher_calls = []  # per mask-decoder call: True when it ran as the teacher (adapters disabled)
    student.get_base_model().mask_decoder.register_forward_pre_hook(
        lambda *_: teacher_calls.append(all(layer.disable_adapters for layer in adapters)))

    trainer.model.train()
    trainer.compute_loss(trainer.model, next(iter(trainer.get_train_dataloader())))
    assert teacher_calls == [False, True], "the training loss runs the student, then the teacher"

    teacher_calls.clear()
    metrics = trainer.evaluate()
    assert teacher_calls and not any(teacher_calls), "evaluate() ran the teacher"
    assert {"eval_loss", "eval_iou", "eval_dice", "eval_iou@0.5", "eval_miou"} <= set(metrics)


def test_demo_recipe_end_to_end(tmp_path):
    out = tmp_path / "demo"
    argv = [DEMO, "--output_dir", str(out), "--max_steps", "3", *FAST]
    results = run_training(*parse_train_args(argv))
    assert {"before training", "box-fill baseline", "after training"} <= set(results["summary"])
    for name in ("adapter_config.json", "adapter_model.safetensors", "preprocessor_config.json",
                 "trainer_state.json", "test_results.json", "base_model/config.json"):
        assert (out / name).is_file(), name
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "base_model"  # beside the adapter: the run folder can move
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert any("relation_module" in k for k in weights) and any("lora_A" in k for k in weights)
    assert any("mask_decoder" in k for k in weights)
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    train_logs = [h for h in history if "loss" in h]
    assert train_logs and all({"loss_seg", "loss_r", "loss_d"} <= set(h) for h in train_logs)


@pytest.mark.parametrize("logging_dir", [None, "elsewhere"])
def test_tensorboard_logs_land_under_output_dir_or_logging_dir(tmp_path, monkeypatch, logging_dir):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # a writer opened before training used to land in ./runs/
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    out = tmp_path / "tb"
    argv = [DEMO, "--output_dir", str(out), "--max_steps", "2", "--report_to", "tensorboard",
            "--eval_before_training", "true", "--metric_set", "iou", *FAST]
    if logging_dir:
        argv += ["--logging_dir", str(tmp_path / logging_dir)]
    run_training(*parse_train_args(argv))
    assert list(cwd.iterdir()) == []
    folder = tmp_path / logging_dir if logging_dir else out / "runs"
    tags = set()
    for path in folder.rglob("events.out.tfevents.*"):
        for event in EventFileLoader(str(path)).Load():
            tags |= {value.tag for value in event.summary.value}
    assert {"train/loss", "train/loss_seg", "train/loss_r", "train/loss_d", "test/iou"} <= tags
    assert not any("flos" in tag for tag in tags)
    if logging_dir:
        assert not (out / "runs").exists()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform != "linux", reason="gloo DDP test runs on Linux CI")
def test_ddp_two_processes_gloo(tmp_path):
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    # 5 test images over 2 processes x batch 2: accelerate pads the last batches with repeats
    data = [*FAST, "--synthetic_num_test", "5", "--per_device_eval_batch_size", "2", "--metric_set", "iou"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "scripts" / "train.py"), DEMO, "--output_dir", str(out), "--max_steps", "2",
           "--eval_before_training", "false", "--ddp_backend", "gloo", "--teacher_cache", "on",
           "--teacher_cache_dir", str(tmp_path / "cache"), *data]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2 and (out / "adapter_model.safetensors").is_file()
    # each process filled the teacher-embedding cache with its own shard: one folder, every example once
    cached = sorted(int(p.stem) for p in (tmp_path / "cache").glob("*/*.safetensors"))
    assert cached == list(range(16)), cached
    # the distributed test metrics equal a single-process evaluation of the saved adapter
    ddp_metrics = json.loads((out / "test_results.json").read_text())
    from infosam_hf.evaluation.evaluate import evaluate_adapter

    data_args = parse_train_args([DEMO, "--output_dir", str(tmp_path / "unused"), *data])[2]
    single = evaluate_adapter(str(out), data_args, split="test", batch_size=3, metric_input="probability",
                              metric_set="iou", seed=42, device="cpu", num_workers=0, progress=False)
    assert single["num_images"] == 5
    for key in ("iou", "dice", "iou@0.5", "miou"):
        assert ddp_metrics[f"test_{key}"] == pytest.approx(single[key], abs=1e-6), key


def test_separate_teacher_is_frozen_on_device_and_not_prepared(tmp_path):
    from tests.testing_utils import tiny_sam

    splits = tiny_data()
    teacher = tiny_sam(seed=7)
    args = InfoSAMConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, save_strategy="no",
                         report_to="none", use_cpu=True, disable_tqdm=True)
    trainer = InfoSAMTrainer(model=tiny_student(), args=args, teacher_model=teacher, train_dataset=splits.train)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert next(teacher.parameters()).device == trainer.accelerator.device
    calls = []
    teacher.register_forward_hook(lambda *a: calls.append(1))
    trainer.train()
    assert calls, "the separate teacher was not used"
    assert all(m is not teacher for m in trainer.accelerator._models)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_non_finite_info_loss_is_skipped_with_a_warning(tmp_path, monkeypatch):
    import infosam_hf.training.trainer as trainer_module

    real = trainer_module.distillation_loss

    def broken(relation_t, relation_s):  # a zero-trace Gram: NaN, still attached to both relations
        return real(relation_t * 0.0, relation_s)

    monkeypatch.setattr(trainer_module, "distillation_loss", broken)
    splits = tiny_data()
    student = tiny_student()
    before = {n: p.detach().clone() for n, p in student.named_parameters() if p.requires_grad}
    args = InfoSAMConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=4, save_strategy="no",
                         report_to="none", use_cpu=True, disable_tqdm=True, logging_steps=1)
    trainer = InfoSAMTrainer(model=student, args=args, train_dataset=splits.train)
    with pytest.warns(UserWarning, match="information losses were non-finite on 1 .* first at step 1: they were left out"):
        trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h][0]
    assert logs["loss_r"] == 0.0 and logs["loss_d"] == 0.0 and logs["loss"] == pytest.approx(logs["loss_seg"])
    after = dict(student.named_parameters())
    assert all(torch.isfinite(after[n]).all() for n in before)
    # the NaN of the masked branch reached no weight: the relation module (only trained by it) did not move
    assert all(torch.equal(after[n], before[n]) for n in before if "relation_module" in n)


def test_frozen_parameters_stay_frozen_after_teacher_passes(tmp_path):
    from infosam_hf.relation import get_relation_module

    splits = tiny_data()
    student = tiny_student()
    get_relation_module(student).requires_grad_(False)  # as freeze_relation does
    args = InfoSAMConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, save_strategy="no",
                         report_to="none", use_cpu=True, disable_tqdm=True)
    InfoSAMTrainer(model=student, args=args, train_dataset=splits.train).train()
    leaked = [n for n, p in student.named_parameters()
              if p.requires_grad and ("iou_prediction_head" in n or "relation_module" in n)]
    assert not leaked


def test_best_checkpoint_is_picked_on_an_eval_metric(tmp_path):
    out = tmp_path / "best"
    argv = [DEMO, "--output_dir", str(out), "--max_steps", "4", "--eval_strategy", "steps", "--eval_steps", "2",
            "--save_strategy", "steps", "--save_steps", "2", "--load_best_model_at_end", "true",
            "--metric_for_best_model", "iou", "--eval_before_training", "false", "--test_split", "null", *FAST]
    run_training(*parse_train_args(argv))
    state = json.loads((out / "trainer_state.json").read_text())
    evals = {h["step"]: h["eval_iou"] for h in state["log_history"] if "eval_iou" in h}
    assert set(evals) == {2, 4}
    best_step = max(evals, key=evals.get)
    assert state["best_metric"] == pytest.approx(evals[best_step])
    assert state["best_model_checkpoint"].endswith(f"checkpoint-{best_step}")


def test_bf16_autocast_training_step(tmp_path):
    out = tmp_path / "bf16"
    argv = [DEMO, "--output_dir", str(out), "--max_steps", "2", "--bf16", "true", "--eval_before_training", "false",
            "--test_split", "null", *FAST]
    run_training(*parse_train_args(argv))
    logs = [h for h in json.loads((out / "trainer_state.json").read_text())["log_history"] if "loss" in h]
    assert logs and all(math.isfinite(h[k]) for h in logs for k in ("loss", "loss_r", "loss_d"))


def test_non_finite_relations_never_reach_the_weights(tmp_path, monkeypatch):
    from infosam_hf.relation import RelationModule

    original = RelationModule.forward
    monkeypatch.setattr(RelationModule, "forward", lambda self, *a: original(self, *a) * float("nan"))
    splits = tiny_data()
    student = tiny_student()
    args = InfoSAMConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, save_strategy="no",
                         report_to="none", use_cpu=True, disable_tqdm=True, logging_steps=1)
    with pytest.warns(UserWarning, match="information losses were non-finite"):
        InfoSAMTrainer(model=student, args=args, train_dataset=splits.train).train()
    assert all(torch.isfinite(p).all() for p in student.parameters())


def test_empty_masks_in_box_evaluation(tmp_path):
    from infosam_hf.data import SamPromptCollator
    from infosam_hf.evaluation.loop import box_fill_logits, evaluate_segmentation
    from infosam_hf.evaluation.metrics import SegmentationMetrics

    splits = tiny_data()
    examples = [splits.test[i] for i in range(2)]
    empty = dict(examples[1], has_foreground=False, labels=torch.zeros_like(examples[1]["labels"]),
                 original_labels=torch.zeros_like(examples[1]["original_labels"]),
                 prompt_points=torch.tensor([[3.0, 3.0]]), prompt_point_labels=torch.tensor([0]))
    batch = SamPromptCollator()([examples[0], empty])
    assert "input_points" in batch and batch["input_labels"][1, 0, 0] == 0  # background point, no crash
    scores = evaluate_segmentation(box_fill_logits, [batch], SegmentationMetrics(sod_metrics=False),
                                   structure_loss_bce=None)
    # the empty example's baseline predicts background: a perfect score for it
    single = evaluate_segmentation(box_fill_logits, [SamPromptCollator()([examples[0]])],
                                   SegmentationMetrics(sod_metrics=False), structure_loss_bce=None)
    assert scores["iou@0.5"] == pytest.approx((single["iou@0.5"] + 1.0) / 2)
