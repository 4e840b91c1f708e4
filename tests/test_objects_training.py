"""``objects_per_image``: several objects of an image per example, one image-encoder pass for all of them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from infosam_hf import InfoSAMConfig, InfoSAMTrainer
from infosam_hf.data import DataArguments, SamPromptCollator, build_datasets
from infosam_hf.data.collator import OBJECTS_VALID_KEY
from tests.testing_utils import tiny_student

pytest.importorskip("pycocotools")
from tests.testing_utils import BOXES, make_coco_set, make_instance_mask_set, make_objects_dataset  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class ObjectsOfOne(SamPromptCollator):
    """Today's single-object batches, handed to the trainer in the several-objects form with K = 1."""

    def __call__(self, examples):
        batch = super().__call__(examples)
        batch["labels"] = batch["labels"].unsqueeze(1)
        batch[OBJECTS_VALID_KEY] = torch.ones(batch["labels"].shape[:2], dtype=torch.bool)
        return batch


def _train(tmp_path, name, dataset, collator=None, steps=3, **config):
    config.setdefault("teacher_cache", "off")  # each run computes its teacher (a shared cache would hand it over)
    args = InfoSAMConfig(output_dir=str(tmp_path / name), max_steps=steps, per_device_train_batch_size=4,
                         learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                         lambda_r=1.0, lambda_d=0.5, use_cpu=True, disable_tqdm=True, **config)
    trainer = InfoSAMTrainer(model=tiny_student(), args=args, train_dataset=dataset, data_collator=collator)
    trainer.train()
    logs = [{k: v for k, v in entry.items() if k.startswith("loss") or k == "grad_norm"}
            for entry in trainer.state.log_history if "loss" in entry]
    return logs, {n: p.detach().clone() for n, p in trainer.model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("prompt", ["box", "point"])
def test_objects_path_with_one_object_equals_todays_path_bit_for_bit(tmp_path, prompt):
    data_args = DataArguments(dataset_name_or_path="synthetic", synthetic_num_train=12, synthetic_num_eval=2,
                              synthetic_num_test=2, synthetic_image_size=64, train_prompt=prompt)
    train = build_datasets(data_args, image_size=64, seed=0).train
    logs, params = _train(tmp_path, "single", train, SamPromptCollator())
    object_logs, object_params = _train(tmp_path, "objects", train, ObjectsOfOne())
    assert logs == object_logs and len(logs) == 3 and all(entry["loss_r"] != 0 for entry in logs)
    assert params.keys() == object_params.keys()
    for name, value in params.items():
        assert torch.equal(value, object_params[name]), name


def test_objects_per_image_one_is_the_default_path(tmp_path):
    root = make_coco_set(tmp_path / "coco")
    runs = []
    for k in (None, 1):
        extra = {} if k is None else {"objects_per_image": k}
        data_args = DataArguments(dataset_name_or_path=str(root), validation_split_percentage=0, **extra)
        runs.append(_train(tmp_path, f"k{k}", build_datasets(data_args, 64, need_eval=False).train, steps=2))
    assert runs[0][0] == runs[1][0]
    for name, value in runs[0][1].items():
        assert torch.equal(value, runs[1][1][name]), name


def _count_encoder_calls(model) -> list[int]:
    calls = []
    sam = model.get_base_model() if hasattr(model, "get_base_model") else model
    sam.vision_encoder.register_forward_hook(lambda module, args, output: calls.append(args[0].shape[0]))
    return calls


@pytest.mark.parametrize("kind", ["coco", "masks", "objects"])
def test_four_objects_per_image_one_encoder_pass_with_infosam(tmp_path, kind):
    make = {"coco": make_coco_set, "masks": lambda p: make_instance_mask_set(p, csv=True),
            "objects": make_objects_dataset}[kind]
    data_args = DataArguments(dataset_name_or_path=str(make(tmp_path / "data")), objects_per_image=4,
                              validation_split_percentage=0, train_prompt="mixed")
    train = build_datasets(data_args, 64, need_eval=False).train
    assert len(train) == 2  # two images of three objects each
    batch = SamPromptCollator()([train[0], train[1]])
    assert batch["labels"].shape == (2, len(BOXES), 64, 64) and batch[OBJECTS_VALID_KEY].all()
    args = InfoSAMConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                         learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                         lambda_r=1.0, lambda_d=0.5, use_cpu=True, disable_tqdm=True, teacher_cache="off")
    student = tiny_student()
    calls = _count_encoder_calls(student)
    trainer = InfoSAMTrainer(model=student, args=args, train_dataset=train)
    trainer.train()
    # per step: the student's encoder once over the 2 images, the teacher's once (adapters off): never per object
    assert calls == [2, 2, 2, 2]
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(e["loss"])) and e["loss_r"] != 0 for e in logs)


def test_objects_sampled_per_epoch_and_padded(tmp_path):
    root = make_coco_set(tmp_path / "coco")
    data_args = DataArguments(dataset_name_or_path=str(root), objects_per_image=2, validation_split_percentage=0,
                              train_prompt="points", prompt_fg_points=2)
    train = build_datasets(data_args, 64, need_eval=False).train
    transform = train.format["format_kwargs"]["transform"]
    drawn = []
    for epoch in range(4):
        transform.set_epoch(epoch)
        drawn.append(tuple(int(o["labels"].sum()) for o in train[0]["objects"]))
    assert all(len(d) == 2 for d in drawn) and len(set(drawn)) > 1  # two of three objects, re-drawn per epoch
    transform.set_epoch(0)
    assert tuple(int(o["labels"].sum()) for o in train[0]["objects"]) == drawn[0]  # seeded
    short = dict(train[1], objects=train[1]["objects"][:1])
    batch = SamPromptCollator()([train[0], short])
    assert batch[OBJECTS_VALID_KEY].tolist() == [[True, True], [True, False]]
    assert batch["input_points"].shape[:3] == (2, 2, 2) and (batch["input_labels"][1, 1] == -10).all()


@pytest.mark.parametrize("mode", ["all", "one_per_image"])
def test_relation_rows_span_objects(mode):
    from infosam_hf.training.trainer import InfoSAMTrainer as Trainer

    valid = torch.tensor([[True, True, False], [True, False, False]])
    features = {"image_embeds": torch.arange(2.0).view(2, 1, 1).expand(2, 4, 8),
                "object_tokens": torch.arange(6.0).view(2, 3, 1, 1).expand(2, 3, 1, 8)}
    fake = type("T", (), {"args": type("A", (), {"info_loss_objects": mode})()})()
    teacher, _ = Trainer.object_relation_features(fake, features, features, valid)
    tokens = teacher["mask_token"][:, 0, 0].tolist()
    images = teacher["image_embeds"][:, 0, 0].tolist()
    assert (tokens, images) == (([0.0, 1.0, 3.0], [0.0, 0.0, 1.0]) if mode == "all" else ([0.0, 3.0], [0.0, 1.0]))


def test_train_command_with_objects_per_image(tmp_path):
    from infosam_hf.commands.train import main

    data = make_instance_mask_set(tmp_path / "data", csv=True)
    argv = [str(ROOT / "recipes" / "demo.yaml"), "--dataset_name_or_path", str(data), "--output_dir",
            str(tmp_path / "out"), "--max_steps", "2", "--per_device_train_batch_size", "2",
            "--per_device_eval_batch_size", "3", "--eval_before_training", "false", "--logging_steps", "1",
            "--objects_per_image", "4", "--info_loss_objects", "one_per_image"]
    assert main(argv) == 0


@pytest.mark.parametrize("prompt", ["box", "points"])
def test_per_object_scores_identical_at_any_eval_batch_size(tmp_path, prompt):
    root = make_coco_set(tmp_path / "coco")
    data_args = DataArguments(dataset_name_or_path=str(root), validation_split_percentage=0, eval_prompt=prompt,
                              prompt_fg_points=2, prompt_bg_points=1, test_split="train")
    test = build_datasets(data_args, 64, need_eval=False).test  # 2 images x 3 objects, categories leaf and stem
    student = tiny_student()
    scores = []
    for batch_size in (1, 3, 8):
        args = InfoSAMConfig(output_dir=str(tmp_path / f"eval{batch_size}"), per_device_eval_batch_size=batch_size,
                             report_to="none", use_cpu=True, disable_tqdm=True, metric_set="iou")
        scores.append(InfoSAMTrainer(model=student, args=args).evaluate(test))
    keys = {"eval_iou", "eval_dice", "eval_image_iou", "eval_image_dice", "eval_iou_cat_leaf", "eval_iou_cat_stem",
            "eval_dice_cat_leaf", "eval_dice_cat_stem"}
    assert keys <= set(scores[0]) and scores[0]["eval_num_objects"] == 6 and scores[0]["eval_num_object_images"] == 2
    for other in scores[1:]:
        assert {k: v for k, v in other.items() if "runtime" not in k and "per_second" not in k} == \
               {k: v for k, v in scores[0].items() if "runtime" not in k and "per_second" not in k}


def test_object_scores_per_image_and_category():
    import numpy as np

    from infosam_hf.evaluation.object_scores import ObjectScores

    scores = ObjectScores(["leaf", "stem"])
    scores.add(np.array([[0, 0, 1.0, 1.0], [0, 1, 0.0, 0.0], [0, 0, 0.5, 0.5], [7, 1, 1.0, 1.0]]))
    out = scores.compute()
    assert out["image_iou"] == pytest.approx((0.5 + 1.0) / 2)  # image 0: mean of 1, 0, 0.5
    assert out["iou_cat_leaf"] == pytest.approx(0.75) and out["iou_cat_stem"] == pytest.approx(0.5)


def test_four_objects_per_image_with_the_teacher_cache(tmp_path):
    data_args = DataArguments(dataset_name_or_path=str(make_coco_set(tmp_path / "coco")), objects_per_image=4,
                              validation_split_percentage=0, train_prompt="box")
    train = build_datasets(data_args, 64, need_eval=False).train
    args = InfoSAMConfig(output_dir=str(tmp_path / "out"), max_steps=2, per_device_train_batch_size=2,
                         learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to="none", seed=0,
                         lambda_r=1.0, lambda_d=0.5, use_cpu=True, disable_tqdm=True, teacher_cache="on",
                         teacher_cache_dir=str(tmp_path / "cache"))
    student = tiny_student()
    calls = _count_encoder_calls(student)
    InfoSAMTrainer(model=student, args=args, train_dataset=train).train()
    assert calls == [2, 2, 2]  # epoch 1: student + teacher (stored per image); epoch 2: the student, the cache


@pytest.mark.parametrize("extra, message", [
    (["--num_labels", "3"], r"objects_per_image=4 trains binary objects .* num_labels=3"),
    (["--iterative_rounds", "1"], r"it does not take iterative_rounds=1"),
    (["--info_loss_batch", "global"], r"info_loss_batch=global .* info_loss_objects: one_per_image"),
    (["--info_loss_objects", "some"], r"info_loss_objects='some' is not one of \[all, one_per_image\]"),
])
def test_objects_per_image_option_errors(tmp_path, extra, message):
    from infosam_hf.training.recipe_checks import check_recipe_values
    from infosam_hf.training.run import parse_train_args

    with pytest.raises(ValueError, match=message):  # RecipeError is a ValueError
        check_recipe_values(*parse_train_args([str(ROOT / "recipes" / "demo.yaml"), "--objects_per_image", "4",
                                               "--output_dir", str(tmp_path), *extra]))


def test_validation_carved_from_an_instance_set_holds_whole_images(tmp_path):
    from infosam_hf.data import select_splits

    root = make_instance_mask_set(tmp_path / "inst", csv=False)  # 3 images x 3 objects, train only
    splits = select_splits(DataArguments(dataset_name_or_path=str(root), test_split=None,
                                         validation_split_percentage=34))
    train_ids, eval_ids = set(splits.train["image_id"]), set(splits.eval["image_id"])
    assert len(eval_ids) == 1 and len(train_ids) == 2 and not train_ids & eval_ids
    assert len(splits.eval) == len(BOXES) and len(splits.train) == 2 * len(BOXES)


def test_padded_object_slots_count_nowhere(tmp_path):
    data_args = DataArguments(dataset_name_or_path=str(make_coco_set(tmp_path / "coco")), objects_per_image=3,
                              validation_split_percentage=0, train_prompt="box")
    train = build_datasets(data_args, 64, need_eval=False).train
    short = dict(train[1], objects=train[1]["objects"][:1])
    batch = SamPromptCollator()([train[0], short])
    assert batch[OBJECTS_VALID_KEY].tolist() == [[True, True, True], [True, False, False]]
    args = InfoSAMConfig(output_dir=str(tmp_path / "out"), report_to="none", use_cpu=True, lambda_r=1.0,
                         lambda_d=0.5, teacher_cache="off", disable_tqdm=True)
    trainer = InfoSAMTrainer(model=tiny_student(), args=args)
    trainer.model.train()
    changed = dict(batch, labels=batch["labels"].clone(), input_boxes=batch["input_boxes"].clone())
    changed["labels"][1, 1:] = 1.0
    changed["input_boxes"][1, 1:] = torch.tensor([3.0, 5.0, 40.0, 50.0])
    with torch.no_grad():
        losses = [trainer.compute_loss(trainer.model, inputs) for inputs in (batch, changed)]
    assert torch.equal(losses[0], losses[1]) and torch.isfinite(losses[0])
