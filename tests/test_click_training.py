"""``eval_clicks: N``: click-by-click scores of every evaluation of a training run, click_results.json and its curve."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from infosam_hf import InfoSAMConfig
from infosam_hf.files import CLICK_CURVE_NAME, CLICK_RESULTS_NAME, TEST_RESULTS_NAME
from infosam_hf.training.recipe import RecipeError
from infosam_hf.training.run import parse_train_args, run_training

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "recipes" / "demo.yaml")
CLICKS = 3
TINY = ["--synthetic_num_train", "8", "--synthetic_num_eval", "3", "--synthetic_num_test", "5",
        "--per_device_train_batch_size", "4", "--max_steps", "2", "--logging_steps", "1", "--warmup_steps", "0",
        "--eval_before_training", "true", "--eval_strategy", "steps", "--eval_steps", "2", "--metric_set", "iou",
        "--disable_tqdm", "true", "--eval_clicks", str(CLICKS), "--save_strategy", "steps", "--save_steps", "2",
        "--load_best_model_at_end", "true", "--metric_for_best_model", "noc@90", "--greater_is_better", "false"]


def _train(folder: Path, eval_batch: int) -> dict:
    return run_training(*parse_train_args([DEMO, *TINY, "--output_dir", str(folder),
                                           "--per_device_eval_batch_size", str(eval_batch)]))


def test_eval_clicks_scores_every_evaluation_equally_at_any_batch_size(tmp_path, capsys):
    one = _train(tmp_path / "one", 1)
    out = capsys.readouterr().out
    three = _train(tmp_path / "three", 3)
    folder = tmp_path / "one"
    flat = [f"test_click_iou_{k}" for k in range(1, CLICKS + 1)] + [f"test_click_dice_{k}" for k in range(1, CLICKS + 1)]
    flat += ["test_noc@85", "test_noc@90", "test_noc_failures@85", "test_noc_failures@90", "test_click_images"]
    saved = json.loads((folder / TEST_RESULTS_NAME).read_text())
    assert set(flat) <= saved.keys() and f"test_click_iou_{CLICKS + 1}" not in saved
    assert saved["test_click_images"] == 5 and 1 <= saved["test_noc@85"] <= CLICKS
    state = json.loads((folder / "trainer_state.json").read_text())
    evals = [entry for entry in state["log_history"] if "eval_iou" in entry]
    assert evals and all(f"eval_click_iou_{CLICKS}" in entry and "eval_noc@90" in entry for entry in evals)
    assert state["best_metric"] == evals[-1]["eval_noc@90"]  # checkpoints can be picked by clicks

    results = json.loads((folder / CLICK_RESULTS_NAME).read_text())
    assert results["schema_version"] == 1 and results["split"] == "test" and results["step"] == 2
    assert results["num_clicks"] == CLICKS and results["click_images"] == 5
    assert len(results["click_iou"]) == CLICKS and len(results["click_dice"]) == CLICKS
    assert results["click_iou"] == [saved[f"test_click_iou_{k}"] for k in range(1, CLICKS + 1)]
    assert results["noc@90"] == saved["test_noc@90"]
    before = results["before_training"]
    assert before.keys() == {k for k in results if k not in ("schema_version", "split", "step", "before_training")}
    assert (folder / CLICK_CURVE_NAME).stat().st_size > 1000
    assert f"IoU after each of {CLICKS} clicks (5 images)" in out

    # the same numbers at eval batch 1 and 3 (before, during and after training)
    clicked = lambda metrics: {k: v for k, v in metrics.items() if "click" in k or "noc" in k}  # noqa: E731
    assert clicked(one["test"]) == clicked(three["test"]) and len(clicked(one["test"])) == len(flat)
    assert json.loads((tmp_path / "three" / CLICK_RESULTS_NAME).read_text()) == results
    other = json.loads((tmp_path / "three" / "trainer_state.json").read_text())["log_history"]
    evaluations = lambda history: [clicked(e) for e in history if "eval_iou" in e]  # noqa: E731
    assert evaluations(other) == evaluations(state["log_history"]) and evaluations(other)[0]


def test_eval_clicks_off_writes_nothing_and_bad_values_fail(tmp_path):
    with pytest.raises(ValueError, match="eval_clicks must be >= 0"):
        InfoSAMConfig(output_dir="unused", eval_clicks=-1, report_to="none", use_cpu=True)
    with pytest.raises(RecipeError, match="eval_clicks=2: .*num_labels=3"):
        run_training(*parse_train_args([DEMO, "--output_dir", str(tmp_path / "multi"), "--num_labels", "3",
                                        "--train_prompt", "none", "--eval_prompt", "none", "--eval_clicks", "2"]))


def test_dry_run_with_eval_clicks(tmp_path, monkeypatch, capsys):
    from infosam_hf.commands.cli import main

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the rehearsal's output folder
    assert main(["train", DEMO, "--eval_clicks", "10", "--dry_run"]) == 0
    out = capsys.readouterr().out
    assert "eval_clicks: 10 -> 2" in out and "IoU after each of 2 clicks" in out
    (run,) = tmp_path.glob("infosam-dry-run-*")
    assert len(json.loads((run / CLICK_RESULTS_NAME).read_text())["click_iou"]) == 2


@pytest.mark.skipif(sys.platform != "linux", reason="gloo DDP test runs on Linux CI")
def test_eval_clicks_over_two_processes_equal_one(tmp_path):
    """5 test images over 2 processes x batch 2 (accelerate repeats samples to even out the last batches): the
    click scores equal a single-process ``evaluate --clicks`` of the saved adapter."""
    from infosam_hf.evaluation.evaluate import evaluate_adapter
    from tests.testing_utils import free_port

    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    data = ["--synthetic_num_train", "8", "--synthetic_num_eval", "3", "--synthetic_num_test", "5",
            "--per_device_eval_batch_size", "2", "--metric_set", "iou"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(ROOT / "scripts" / "train.py"), DEMO, "--output_dir", str(out), "--max_steps", "1",
           "--per_device_train_batch_size", "2", "--eval_before_training", "false", "--ddp_backend", "gloo",
           "--disable_tqdm", "true", "--eval_clicks", str(CLICKS), *data]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((out / CLICK_RESULTS_NAME).read_text())
    data_args = parse_train_args([DEMO, "--output_dir", str(tmp_path / "unused"), *data])[2]
    single = evaluate_adapter(str(out), data_args, split="test", batch_size=3, metric_set="iou", device="cpu",
                              progress=False, clicks=CLICKS)
    assert ddp["click_images"] == single["click_images"] == 5
    for key in ("click_iou", "click_dice", "noc@85", "noc@90", "noc_failures@90"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6), key
