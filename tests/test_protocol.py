"""protocol: official (save and score the last epochs on test) and report_metrics; the paper recipes' settings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infosam_hf.training.protocol import (
    BEST_ON_TEST_LABEL,
    best_on_test,
    leading_columns,
    official_epochs,
)

ROOT = Path(__file__).resolve().parents[1]
PAPER = {  # recipe: (leading paper columns, eval prompt, (fg, bg) points, train epochs)
    "leaf": (["iou", "dice"], "box", None, 10),
    "road": (["iou", "dice"], "points", (2, 3), 20),
    "isic": (["iou", "dice"], "box", None, 10),
    "kvasir": (["s_measure", "e_measure", "weighted_f_measure"], "box", None, 10),
    "camo": (["s_measure", "e_measure", "weighted_f_measure"], "box", None, 10),
}


def test_official_epochs_are_the_last_five_as_the_scripts():
    assert official_epochs(10) == [6, 7, 8, 9, 10]
    assert official_epochs(20) == [16, 17, 18, 19, 20]
    assert official_epochs(3) == [1, 2, 3]
    assert official_epochs(10, [10, 8]) == [8, 10]
    with pytest.raises(ValueError, match="must lie in 1..num_train_epochs=10"):
        official_epochs(10, [11])


def test_best_on_test_and_leading_columns():
    per_epoch = {6: {"iou": 0.5, "mae": 0.2}, 7: {"iou": 0.7, "mae": 0.3}, 8: {"iou": 0.7, "mae": 0.1}}
    assert best_on_test(per_epoch, "iou")[0] == 7  # ties: the earlier epoch
    assert best_on_test(per_epoch, "mae")[0] == 8  # lower is better
    assert leading_columns(["dice", "iou", "s_measure", "miou"], ["s_measure", "nope"]) == ["s_measure", "iou", "dice", "miou"]


def test_official_protocol_refuses_validation_settings():
    from infosam_hf.training.config import InfoSAMConfig

    with pytest.raises(ValueError, match="set eval_strategy: no and load_best_model_at_end: false"):
        InfoSAMConfig(output_dir="x", protocol="official", eval_strategy="epoch", save_strategy="epoch")
    with pytest.raises(ValueError, match=r"protocol='paper' is not one of \[default, official, gsam\]"):
        InfoSAMConfig(output_dir="x", protocol="paper")


@pytest.mark.parametrize("recipe", sorted(PAPER))
def test_paper_recipes_set_the_official_protocol(recipe):
    from infosam_hf.training.run import parse_train_args

    _, _, data_args, args = parse_train_args([str(ROOT / "recipes" / f"{recipe}.yaml")])
    columns, prompt, points, epochs = PAPER[recipe]
    assert data_args.preprocessing == "official" and args.protocol == "official"
    assert args.structure_loss_bce == "unweighted" and args.max_grad_norm == 0 and args.dataloader_drop_last
    assert args.report_metrics[:len(columns)] == columns
    assert data_args.eval_prompt == prompt and args.num_train_epochs == epochs
    if points:
        assert (data_args.prompt_fg_points, data_args.prompt_bg_points) == points
    assert args.metric_input == "official_logits" and args.seed == 42


def test_official_protocol_trains_on_all_of_train_and_scores_each_epoch(tmp_path, capsys):
    from infosam_hf.training.run import parse_train_args, run_training

    out = tmp_path / "run"
    argv = [str(ROOT / "recipes" / "demo.yaml"), "--protocol", "official", "--max_steps", "-1",
            "--num_train_epochs", "3", "--protocol_epochs", "[2, 3]", "--output_dir", str(out),
            "--eval_before_training", "false", "--synthetic_num_train", "6", "--synthetic_num_test", "4",
            "--per_device_train_batch_size", "4", "--dataloader_drop_last", "true", "--logging_steps", "1",
            "--report_metrics", "[dice, iou]", "--warmup_steps", "0"]
    results = run_training(*parse_train_args(argv))
    printed = capsys.readouterr().out
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 3  # 6 train images, batch 4, last batch dropped: nothing carved out
    saved = json.loads((out / "protocol_results.json").read_text())
    assert sorted(saved["epochs"]) == ["2", "3"] and saved["selection_metric"] == "dice"
    assert saved["best_on_test"]["label"] == BEST_ON_TEST_LABEL
    assert (out / "epoch_2" / "adapter_config.json").is_file() and (out / "epoch_3" / "adapter_model.safetensors").is_file()
    assert results["test"]["test_dice"] == saved["epochs"]["3"]["dice"]  # the final model is epoch 3
    assert BEST_ON_TEST_LABEL in printed and "epoch 2" in printed
    header = [line for line in printed.splitlines() if "dice" in line and "iou" in line][-1].split()
    assert header[:2] == ["dice", "iou"]


def test_drop_last_drops_training_batches_only(tmp_path):
    from infosam_hf.data import SamPromptCollator
    from infosam_hf.training import InfoSAMConfig, InfoSAMTrainer
    from tests.testing_utils import tiny_student

    args = InfoSAMConfig(output_dir=str(tmp_path), per_device_train_batch_size=4, per_device_eval_batch_size=4,
                         dataloader_drop_last=True, report_to="none", use_cpu=True)
    trainer = InfoSAMTrainer(model=tiny_student(), args=args, data_collator=SamPromptCollator())
    data = [{"x": i} for i in range(6)]
    assert len(trainer.get_eval_dataloader(data)) == 2 and len(trainer.get_test_dataloader(data)) == 2
    trainer.train_dataset = data
    assert len(trainer.get_train_dataloader()) == 1 and args.dataloader_drop_last


DATA = ROOT.parent / "shared" / "data"


@pytest.mark.skipif(not (DATA / "leaf_disease").is_dir(), reason="real data not available")
def test_leaf_recipe_runs_the_official_protocol_on_real_data(tmp_path, capsys):
    """The leaf recipe as it is (official pre-processing, protocol, columns) on a tiny SAM and a few leaf images."""
    from infosam_hf.training.run import parse_train_args, run_training
    from tests.testing_utils import TINY_SAM

    model_args, peft_args, data_args, args = parse_train_args(
        [str(ROOT / "recipes" / "leaf.yaml"), "--dataset_name_or_path", str(DATA / "leaf_disease"),
         "--output_dir", str(tmp_path / "leaf"), "--num_train_epochs", "2", "--per_device_train_batch_size", "2",
         "--per_device_eval_batch_size", "2", "--max_train_samples", "5", "--max_eval_samples", "3",
         "--dataloader_num_workers", "0", "--report_to", "none", "--use_cpu", "true", "--logging_steps", "1",
         "--peft_config.block_indices", "[1]", "--metric_set", "iou"])
    model_args.model_name_or_path, model_args.sam_config, model_args.image_size = None, TINY_SAM, 64
    results = run_training(model_args, peft_args, data_args, args)
    assert sorted(results["protocol"]["epochs"]) == ["1", "2"]  # the last five of two epochs
    state = json.loads((tmp_path / "leaf" / "trainer_state.json").read_text())
    assert state["global_step"] == 4  # 5 images, batch 2, last dropped, all of train (no carve-out)
    table = capsys.readouterr().out.split("Official protocol:")[1]
    assert table.splitlines()[1].split()[:2] == ["iou", "dice"] and BEST_ON_TEST_LABEL in table


def test_evaluate_table_leads_with_report_metrics():
    from infosam_hf.evaluation.evaluate import format_results_table

    results = {"iou": 0.5, "dice": 0.6, "s_measure": 0.7, "e_measure": 0.8, "mae": 0.1, "num_images": 3,
               "split": "test", "dataset": "d", "eval_prompt": "box", "adapter": "a", "base_model": "b",
               "metric_input": "official_logits", "metric_set": "paper"}
    lines = format_results_table(results, ["s_measure", "e_measure"]).splitlines()[3:]
    assert [line.split()[0] for line in lines] == ["s_measure", "e_measure", "iou", "dice", "mae"]


def test_a_resumed_run_keeps_the_epochs_scored_before(tmp_path):
    from types import SimpleNamespace

    from infosam_hf.training.protocol import OfficialProtocolCallback

    first = OfficialProtocolCallback(None, [6, 7, 8], metric="iou")
    first.per_epoch = {6: {"iou": 0.4}, 7: {"iou": 0.6}}
    first.write(tmp_path)
    resumed = OfficialProtocolCallback(None, [6, 7, 8], metric="iou")
    args = SimpleNamespace(output_dir=str(tmp_path))
    resumed.on_train_begin(args, SimpleNamespace(global_step=0), None)
    assert resumed.per_epoch == {}  # a fresh run ignores an old file
    resumed.on_train_begin(args, SimpleNamespace(global_step=70), None)
    assert resumed.per_epoch == first.per_epoch
