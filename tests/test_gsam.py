"""G-SAM protocol: the seven recipes, per-epoch cosine, BCE, crops + full-size evaluation, ISBI on real data."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from infosam_hf.data import build_datasets
from infosam_hf.training import InfoSAMConfig, InfoSAMTrainer
from infosam_hf.training.recipe import RecipeError
from infosam_hf.training.run import parse_train_args, run_training
from tests.testing_utils import TINY_SAM, tiny_student

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "gsam"
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
# (resize, crop, classes, ignore) from G-SAM's loader and the table
TABLE = {
    "isbi": ([256, 256], [128, 128], 1, None),
    "camvid": ([360, 480], [256, 256], 11, 11),
    "kvasir": ([224, 224], None, 1, None),
    "mbuilding": ([1024, 1024], [512, 512], 1, None),
    "synapse": ([224, 224], None, 9, None),
    "cityscapes": ([512, 1024], [512, 512], 19, 19),
    "trans10k": ([520, 520], [256, 256], 3, None),
}
# patch 16 so that a 128 crop is an 8x8 grid, as for ViT-B at 128
TINY16 = json.dumps({**TINY_SAM, "vision_config": {**TINY_SAM["vision_config"], "patch_size": 16}})
TINY_RUN = ["--model_name_or_path", "null", "--sam_config", TINY16, "--report_to", "none", "--use_cpu", "true",
            "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--save_total_limit", "1"]


@pytest.mark.parametrize("name", sorted(TABLE))
def test_recipe_matches_gsam_protocol(name, tmp_path):
    model, peft, data, args = parse_train_args([str(RECIPES / name / "gsam.yaml"), "--output_dir", str(tmp_path)])
    resize, crop, classes, ignore = TABLE[name]
    assert (data.resize, data.random_crop, data.num_labels) == (resize, crop, classes)
    if ignore is not None:
        assert data.ignore_index == ignore
    assert model.dynamic_input_size and model.model_name_or_path == "facebook/sam-vit-base"
    assert model.model_variant == "gsam"
    assert data.image_mean == [0.466, 0.471, 0.380] and data.image_std == [0.195, 0.194, 0.192]
    assert data.train_prompt == data.eval_prompt == "none"
    assert set(data.augment) == {"rotate", "hflip"} and data.rotate_prob == 1.0
    assert data.rotate_interpolation == "nearest" and data.rotate_degrees == 90
    assert (args.learning_rate, args.weight_decay, args.num_train_epochs, args.seed) == (1e-4, 0.0, 200, 0)
    assert args.lr_scheduler_type == "cosine" and args.lr_scheduler_per_epoch
    assert (args.per_device_train_batch_size, args.per_device_eval_batch_size) == (8, 4)
    assert args.load_best_model_at_end and args.metric_for_best_model == "miou" and args.greater_is_better
    if classes == 1:
        assert args.seg_loss == "bce"
    assert data.invert_mask is (name in ("isbi", "mbuilding"))
    assert data.mask_value_map == ({85: 1, 255: 2} if name == "trans10k" else None)


def test_per_epoch_cosine_changes_only_at_epoch_boundaries(tmp_path):
    args = InfoSAMConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, learning_rate=1e-4,
                         num_train_epochs=4, lr_scheduler_type="cosine", lr_scheduler_per_epoch=True)
    trainer = InfoSAMTrainer(model=tiny_student(), args=args)
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(num_training_steps=12)  # 3 steps per epoch
    rates = []
    for _ in range(12):
        rates.append(scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        scheduler.step()
    expected = [1e-4 * 0.5 * (1 + math.cos(math.pi * (step // 3) / 4)) for step in range(12)]
    np.testing.assert_allclose(rates, expected, rtol=1e-6, atol=1e-12)


def test_bce_and_structure_losses_differ(tmp_path):
    from infosam_hf.losses import binary_segmentation_loss

    logits = torch.randn(2, 1, 16, 16)
    target = (torch.rand(2, 1, 16, 16) > 0.5).float()
    bce = binary_segmentation_loss(logits, target, "bce")
    torch.testing.assert_close(bce, torch.nn.functional.binary_cross_entropy_with_logits(logits, target))
    assert not torch.allclose(bce, binary_segmentation_loss(logits, target, "structure"))
    with pytest.raises(ValueError, match="seg_loss"):
        InfoSAMConfig(output_dir=str(tmp_path), seg_loss="dice")


def test_crops_need_dynamic_input_size(tmp_path):
    argv = [str(RECIPES / "isbi" / "sam_lora.yaml"), *TINY_RUN, "--dynamic_input_size", "false",
            "--dataset_name_or_path", "synthetic", "--output_dir", str(tmp_path / "run")]
    with pytest.raises(RecipeError, match="dynamic_input_size"):
        run_training(*parse_train_args(argv))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["isbi", "kvasir", "mbuilding"])
def test_binary_recipes_train_on_crops_and_evaluate_full_images(name, tmp_path):
    """The binary G-SAM recipes run end to end on a tiny SAM (synthetic 96x96 images; mbuilding's
    1024/512 sizes scaled to 256/128 to stay fast on CPU)."""
    out = tmp_path / name
    sizes = ["--resize", "[128, 128]", "--random_crop", "[64, 64]",  # the 1024 baselines scaled down
             "--eval_split", "validation"]  # the synthetic data's name for mbuilding's val
    argv = [str(RECIPES / name / "sam_lora.yaml"), *TINY_RUN, *sizes, "--output_dir", str(out),
            "--dataset_name_or_path", "synthetic", "--synthetic_num_train", "16", "--synthetic_num_eval", "4",
            "--synthetic_num_test", "4", "--synthetic_image_size", "96", "--max_steps", "2",
            "--per_device_train_batch_size", "8"]
    results = run_training(*parse_train_args(argv))
    assert math.isfinite(results["test"]["test_miou"]) and math.isfinite(results["test"]["test_loss"])
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["best_metric"] is not None  # the best-validation-mIoU checkpoint was tracked
    run_args = json.loads((out / "run_args.json").read_text())
    assert run_args["model"]["dynamic_input_size"] is True
    assert json.loads((out / "base_model" / "config.json").read_text())["infosam_dynamic_input_size"] is True


def test_train_crops_and_eval_full_resized_images():
    from infosam_hf.data import DataArguments

    data = DataArguments(dataset_name_or_path="synthetic", synthetic_num_train=4, synthetic_num_eval=2,
                         synthetic_num_test=2, synthetic_image_size=96, resize=[96, 160], random_crop=[64, 48],
                         augment=["rotate", "hflip"], train_prompt="box", eval_prompt="box",
                         image_mean=[0.466, 0.471, 0.380], image_std=[0.195, 0.194, 0.192])
    splits = build_datasets(data, image_size=64)
    train = splits.train[0]
    assert tuple(train["pixel_values"].shape) == (3, 64, 48) and tuple(train["labels"].shape) == (64, 48)
    if train["has_foreground"]:
        x0, y0, x1, y1 = train["prompt_box"].tolist()
        assert 0 <= x0 <= x1 < 48 and 0 <= y0 <= y1 < 64  # prompts come from the crop
    test = splits.test[0]
    assert tuple(test["pixel_values"].shape) == (3, 96, 160)
    assert test["reshaped_input_sizes"].tolist() == [96, 160]
    assert test["original_sizes"].tolist() == list(test["original_labels"].shape)


@pytest.mark.skipif(not (SHARED / "isbi2012").exists(), reason=f"{SHARED / 'isbi2012'} not present")
def test_isbi2012_trains_on_128_crops_with_membrane_foreground(tmp_path):
    out = tmp_path / "isbi"
    argv = [str(RECIPES / "isbi" / "sam_lora.yaml"), *TINY_RUN, "--output_dir", str(out),
            "--dataset_name_or_path", str(SHARED / "isbi2012"), "--max_steps", "3", "--max_eval_samples", "4",
            "--per_device_train_batch_size", "4", "--resize", "[256, 256]", "--random_crop", "[128, 128]"]
    model_args, peft_args, data_args, args = parse_train_args(argv)
    train = build_datasets(data_args, image_size=64, seed=0).train
    example = train[0]
    assert tuple(example["pixel_values"].shape) == (3, 128, 128)
    # G-SAM's polarity: the membrane (the dark minority, about a fifth of the pixels) is the foreground
    membrane = np.mean([float(train[i]["labels"].mean()) for i in range(4)])
    assert 0.08 < membrane < 0.4
    results = run_training(model_args, peft_args, data_args, args)
    test = results["test"]
    assert test["test_miou"] > 0 and math.isfinite(test["test_loss"])
    assert json.loads((out / "run_args.json").read_text())["data"]["invert_mask"] is True


def _png(array: np.ndarray) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.mark.parametrize("name", ["isbi2012", "camvid", "kvasir_seg"])
def test_gsam_download_writes_split_csvs(name, tmp_path):
    import zipfile

    from infosam_hf.data import DataArguments, select_splits
    from infosam_hf.data.download import download_dataset

    image, mask = _png(np.full((32, 48, 3), 90, np.uint8)), _png(np.eye(32, 48, dtype=np.uint8) * 255)
    if name == "isbi2012":
        files = {f"unet-x/data/membrane/train/{kind}/{i}.png": image if kind == "image" else mask
                 for i in range(30) for kind in ("image", "label")}
        expected = {"train": 20, "test": 10}
    elif name == "camvid":
        files = {f"SegNet-x/CamVid/{split}{suffix}/f{i}.png": image if not suffix else mask
                 for split, count in (("train", 3), ("val", 2), ("test", 2)) for i in range(count)
                 for suffix in ("", "annot")}
        expected = {"train": 3, "val": 2, "test": 2}
    else:
        files = {f"Kvasir-SEG/{kind}/c{i}.jpg": image if kind == "images" else mask
                 for i in range(20) for kind in ("images", "masks")}
        expected = {"train": 16, "val": 2, "test": 2}
    source = tmp_path / "mirror.zip"
    with zipfile.ZipFile(source, "w") as archive:
        for path, data in files.items():
            archive.writestr(path, data)
    folder = download_dataset(name, tmp_path / "data", progress=False, url=source.as_uri())
    for split, count in expected.items():
        rows = (folder / f"{split}.csv").read_text().strip().splitlines()
        assert rows[0] == "image,label" and len(rows) - 1 == count
    eval_split = "val" if "val" in expected else None
    splits = select_splits(DataArguments(dataset_name_or_path=str(folder), eval_split=eval_split,
                                         validation_split_percentage=0), need_eval=False)
    assert len(splits.train) == expected["train"] and len(splits.test) == expected["test"]


def test_predict_with_a_fixed_resize_on_a_dynamic_model(tmp_path):
    from PIL import Image

    from infosam_hf.evaluation.predict import Prompt, predict_masks, scale_to_input
    from infosam_hf.models.sam import load_sam

    np.testing.assert_allclose(scale_to_input([[50, 30], [99, 59]], (60, 100), 64, resize=(48, 80)),
                               [[40, 24], [79.2, 47.2]], rtol=1e-6)
    path = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (60, 100, 3), dtype=np.uint8)).save(path)
    model = load_sam(sam_config=TINY_SAM, seed=0, dynamic_input_size=True).eval()
    results = predict_masks(model, [path], Prompt(box=(10, 5, 60, 40)), tmp_path / "out", progress=False,
                            resize=(48, 80), image_mean=[0.466, 0.471, 0.380], image_std=[0.195, 0.194, 0.192])
    assert results[0].error is None
    assert Image.open(results[0].mask_path).size == (100, 60)
