"""G-SAM's table and protocol: recipe ``extends``, the 84 table recipes, ``protocol: gsam`` and the faithful options,
each checked against a re-implementation of the official G-SAM code's computation (usagisukisuki/G-SAM)."""

import io
import json
import math
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from infosam_hf.data import DataArguments, augmenter_from_args
from infosam_hf.data.decoding import decode_mask
from infosam_hf.data.transforms import SamSegmentationTransform
from infosam_hf.evaluation.gsam_metrics import (
    GsamScores,
    gsam_class_iou,
    soft_batch_iou,
)
from infosam_hf.training.recipe import RecipeError, load_recipe_file
from infosam_hf.training.run import check_protocol, parse_train_args, run_training
from tests.testing_utils import TINY_SAM

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ROOT / "recipes" / "gsam"
SHARED = ROOT.parent / "shared" / "data"
DATASETS = ("isbi", "camvid", "kvasir", "mbuilding", "synapse", "cityscapes", "trans10k")
METHODS = {"sam": ("decoder_only", None), "sam_lora": ("gsam_lora", None), "sam_convlora": ("gsam_conv_lora", None),
           "sam_adaptformer": ("adaptformer", None), "samus": ("samus", "samus"), "gsam": ("gsam", "gsam")}
# G-SAM's loader/Mydataloader.py: (resize, crop) of GSAM per dataset; the baselines take 1024x1024, SAMUS 256x256
GSAM_SIZES = {"isbi": ([256, 256], [128, 128]), "camvid": ([360, 480], [256, 256]), "kvasir": ([224, 224], None),
              "mbuilding": ([1024, 1024], [512, 512]), "synapse": ([224, 224], None),
              "cityscapes": ([512, 1024], [512, 512]), "trans10k": ([520, 520], [256, 256])}
MEAN, STD = (0.466, 0.471, 0.380), (0.195, 0.194, 0.192)
TINY16 = json.dumps({**TINY_SAM, "vision_config": {**TINY_SAM["vision_config"], "patch_size": 16}})
TINY_GSAM = {"resnet_depths": [1, 1, 1], "resnet_hidden_sizes": [16, 32, 64], "resnet_embedding_size": 8,
             "resnet_weights": None, "train_peg": False}


def _png(array: np.ndarray) -> dict:
    """An in-memory PNG as a datasets Image value."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": None}


# ----------------------------------------------------------------------------------------------- extends
def test_extends_merges_parents_in_order_and_the_child_wins(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.yaml").write_text("seed: 1\nlearning_rate: 1e-3\n")
    (tmp_path / "sub" / "b.yaml").write_text("extends: ../a.yaml\nseed: 2\nnum_labels: 3\n")
    (tmp_path / "c.yaml").write_text("extends: [a.yaml, sub/b.yaml]\nnum_labels: 5\n")
    assert load_recipe_file(tmp_path / "c.yaml") == {"seed": 2, "learning_rate": "1e-3", "num_labels": 5}
    _, _, data, args = parse_train_args([str(tmp_path / "c.yaml"), "--seed", "7", "--output_dir", str(tmp_path)])
    assert (data.num_labels, args.seed, args.learning_rate) == (5, 7, 1e-3)  # the command line wins over all


@pytest.mark.parametrize("files, message", [
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "extends cycle"),
    ({"a.yaml": "extends: a.yaml\n"}, "extends cycle"),
    ({"a.yaml": "extends: missing.yaml\n"}, "missing.yaml is not a recipe file"),
    ({"a.yaml": "extends: {x: 1}\n"}, "extends must be a recipe path"),
    ({"a.yaml": "extends: b.yaml\n", "b.yaml": "bogus_key: 1\n"}, "unknown key 'bogus_key'"),
])
def test_extends_problems_are_one_line(files, message, tmp_path):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(RecipeError, match=message) as err:
        parse_train_args([str(tmp_path / "a.yaml")])
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ the table
def _parse(path, tmp_path):
    return parse_train_args([str(path), "--output_dir", str(tmp_path)])


@pytest.mark.parametrize("dataset", DATASETS)
def test_every_cell_of_the_table_is_a_recipe_with_g_sam_settings(dataset, tmp_path):
    rows = {}
    for method, (peft_method, variant) in METHODS.items():
        model, peft, data, args = _parse(RECIPES / dataset / f"{method}.yaml", tmp_path)
        rows[method] = (model, peft, data, args)
        assert (model.model_variant, model.model_name_or_path) == (variant, "facebook/sam-vit-base")
        assert variant is not None or peft.peft_method == peft_method
        assert (args.lambda_r, args.lambda_d) == (0.0, 0.0)
        resize, crop = GSAM_SIZES[dataset] if method == "gsam" else (([256, 256] if method == "samus" else
                                                                        [1024, 1024]), None)
        assert (data.resize, data.random_crop) == (resize, crop)
        assert (args.protocol, data.eval_resolution, data.jpeg_draft) == ("gsam", "input", False)
        assert (args.max_grad_norm, args.dataloader_drop_last) == (0.0, True)
        assert (args.learning_rate, args.weight_decay, args.num_train_epochs, args.seed) == (1e-4, 0.0, 200, 0)
        assert (args.per_device_train_batch_size, args.per_device_eval_batch_size) == (8, 4)
        assert args.lr_scheduler_type == "cosine" and args.lr_scheduler_per_epoch and args.warmup_steps == 0
        assert args.load_best_model_at_end and args.metric_for_best_model == "miou"
        assert (data.image_mean, data.image_std) == (list(MEAN), list(STD))
        assert set(data.augment) == {"rotate", "hflip"} and data.rotate_prob == 1.0
        assert data.rotate_interpolation == "nearest" and data.train_prompt == data.eval_prompt == "none"
        assert data.num_labels > 1 or args.seg_loss == "bce"  # multi-class: cross-entropy
        assert args.output_dir == str(tmp_path)
        twin = _parse(RECIPES / dataset / f"{method}_infosam.yaml", tmp_path)
        assert (twin[3].lambda_r, twin[3].lambda_d) == (1.0, 0.5)
        assert twin[:3] == (model, peft, data)
        assert {**twin[3].to_dict(), "lambda_r": 0.0, "lambda_d": 0.5} == {**args.to_dict(), "lambda_d": 0.5}
    assert rows["gsam"][1].peft_config["train_peg"] is False
    assert rows["samus"][1].peft_config == {}  # SAMUS's mask decoder stays frozen (its default)
    assert {"mbuilding": True, "isbi": True}.get(dataset, False) is rows["sam"][2].invert_mask
    assert rows["sam"][2].channel_order == ("bgr" if dataset == "cityscapes" else "rgb")
    assert rows["sam"][0].multiclass_head == ("gsam" if rows["sam"][2].num_labels > 1 else "project")
    assert rows["sam"][2].rotate_fill_label == ("0" if rows["sam"][2].num_labels > 1 else "ignore")
    # the old names still run: <dataset>_gsam.yaml is GSAM with InfoSAM's losses
    assert _parse(RECIPES / f"{dataset}_gsam.yaml", tmp_path) == _parse(RECIPES / dataset / "gsam_infosam.yaml",
                                                                       tmp_path)


def test_the_readme_table_names_every_recipe_and_g_sam_s_numbers():
    text = (RECIPES / "README.md").read_text()
    for dataset in DATASETS:
        for method in METHODS:
            assert f"{dataset}/{method}.yaml" in text
    for number in ("80.53", "72.15", "67.21", "74.80", "87.83", "88.53", "80.69", "72.78", "74.10", "87.08"):
        assert number in text


# ------------------------------------------------------------------------------------- data options
def _transform(**kwargs):
    defaults = dict(image_size=64, prompt_mode="none", resize=(24, 32), image_mean=MEAN, image_std=STD,
                    jpeg_draft=False)
    return SamSegmentationTransform(**{**defaults, **kwargs})


def test_channel_order_bgr_is_opencv_s_unconverted_read():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    mask = _png((rng.random((24, 32)) > 0.5).astype(np.uint8) * 255)
    pixels = _transform(channel_order="bgr").example(_png(rgb), mask)["pixel_values"]
    # G-SAM: cv2.imread (BGR) -> ToPILImage -> ToTensor -> Normalize(mean, std) by position
    official = (rgb[..., ::-1].astype(np.float32) / 255 - np.array(MEAN, np.float32)) / np.array(STD, np.float32)
    np.testing.assert_allclose(pixels.numpy(), official.transpose(2, 0, 1), atol=1e-5)
    rgb_pixels = _transform().example(_png(rgb), mask)["pixel_values"]
    assert not torch.allclose(rgb_pixels, pixels)
    from infosam_hf.data.transforms import preprocess_image

    predicted, _ = preprocess_image(Image.fromarray(rgb), 64, MEAN, STD, resize=(24, 32), channel_order="bgr")
    torch.testing.assert_close(predicted, pixels)  # infosam predict feeds what the run trained on
    with pytest.raises(ValueError, match="channel_order"):
        DataArguments(channel_order="gbr")


@pytest.mark.parametrize("raw, kwargs, official", [
    # Kvasir (PolypeDataset): np.where(label > 200, 1, 0)
    (np.array([[0, 127, 200, 201, 255]], np.uint8), {"threshold": 200}, lambda a: a > 200),
    # ISBI / M-Building: np.where(label[:, :, 0] >= 150, 0, 1)
    (np.array([[0, 127, 149, 150, 255]], np.uint8), {"threshold": 149, "invert": True}, lambda a: ~(a >= 150)),
])
def test_mask_threshold_and_invert_follow_g_sam_s_loaders(raw, kwargs, official):
    np.testing.assert_array_equal(decode_mask(_png(raw), **kwargs), official(raw))


def test_rgb_masks_map_through_the_channel_mean_as_g_sam_s_trans10k():
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[0] = 85
    rgb[1] = 255
    rgb[2, :, 0] = 255  # a pure red pixel: mean 85 as well
    rgb[3, :, 0] = 100  # mean 33.33: no class
    ids = decode_mask(_png(rgb), num_labels=3, ignore_index=255, value_map={85: 1, 255: 2})
    official = rgb[:, :, :3].mean(-1)  # TransSegmentation.__getitem__
    official[official == 85.0] = 1
    official[official == 255.0] = 2
    np.testing.assert_array_equal(ids[:3], official[:3])
    assert (ids[3] == 255).all()  # G-SAM asserts max <= 2 here; the project ignores the pixel


@pytest.mark.parametrize("fill, expected", [("ignore", 11), ("0", 0), ("3", 3)])
def test_rotate_fill_label_labels_the_rotated_in_corners(fill, expected):
    data = DataArguments(num_labels=11, ignore_index=11, augment=["rotate"], rotate_prob=1.0, rotate_degrees=45,
                         rotate_interpolation="nearest", rotate_fill_label=fill)
    augment = augmenter_from_args(data)
    image = np.full((32, 32, 3), 200, np.uint8)
    labels = np.full((32, 32), 5, np.int64)
    for seed in range(20):  # some angle of +-45 degrees rotates the corner in
        _, rotated = augment(image, labels, np.random.default_rng(seed))
        if rotated[0, 0] != 5:
            break
    assert rotated[0, 0] == expected and set(np.unique(rotated)) == {5, expected}


def test_rotate_fill_label_refuses_a_class_out_of_range():
    with pytest.raises(ValueError, match="rotate_fill_label='19' must be 'ignore' or a class id in 0..18"):
        DataArguments(num_labels=19, ignore_index=19, rotate_fill_label="19")


def test_eval_resolution_input_scores_against_the_nearest_resized_mask():
    rng = np.random.default_rng(1)
    image, ids = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8), rng.integers(0, 4, (50, 70)).astype(np.uint8)
    at_input = _transform(num_labels=4, eval_resolution="input").example(_png(image), _png(ids))
    official = np.asarray(Image.fromarray(ids).resize((32, 24), Image.NEAREST))  # ExtResize: labels NEAREST
    np.testing.assert_array_equal(at_input["original_labels"].numpy(), official)
    assert at_input["original_sizes"].tolist() == [24, 32]
    at_original = _transform(num_labels=4).example(_png(image), _png(ids))
    assert at_original["original_sizes"].tolist() == [50, 70]
    np.testing.assert_array_equal(at_original["original_labels"].numpy(), ids)
    with pytest.raises(ValueError, match="eval_resolution"):
        DataArguments(eval_resolution="native")


# ------------------------------------------------------------------------------------------- metrics
def _official_hard_iou(outputs, targets, label):
    """G-SAM train.py's IoU(), verbatim in substance."""
    output, target = torch.stack(outputs), torch.stack(targets)
    if label == 2:
        seg = torch.where(torch.sigmoid(output) >= 0.5, 1, 0)[:, 0].numpy()
        target = target[:, 0].numpy()
    else:
        seg = F.softmax(output, dim=1).max(dim=1)[1].numpy()
        target = target.numpy()
    confusion = np.zeros((label, label))
    for lt, lp in zip(target, seg):
        lt, lp = lt.flatten(), lp.flatten()
        mask = (lt >= 0) & (lt < label)
        confusion += np.bincount(label * lt[mask].astype(int) + lp[mask], minlength=label ** 2).reshape(label, label)
    diag = np.diag(confusion)
    return (diag + 1e-7) / np.array(confusion.sum(axis=1) + confusion.sum(axis=0) - (diag + 1e-7), dtype=np.float32)


def _official_soft_iou(y_pred, y_true, num_classes):
    """G-SAM test.py's IoU_10k()."""
    y_pred = F.softmax(y_pred, dim=1)
    y_true = torch.permute(F.one_hot(y_true, num_classes), (0, 3, 1, 2)).float()
    ious = []
    for i in range(num_classes):
        inter = torch.sum(y_pred[:, i] * y_true[:, i])
        union = torch.sum(y_pred[:, i] * y_pred[:, i]) + torch.sum(y_true[:, i] * y_true[:, i]) - inter
        ious.append((inter + 1e-7) / (union + 1e-7))
    return torch.mean(torch.stack(ious))


def _confusion(labels, preds, classes):
    return np.bincount(classes * labels.ravel() + preds.ravel(), minlength=classes ** 2).reshape(classes, classes)


def test_hard_iou_equals_train_py_and_absent_classes_are_minus_one_only_when_asked():
    torch.manual_seed(0)
    logits = torch.randn(4, 5, 8, 8)
    logits[:, 4] = -100  # class 4 never predicted ...
    labels = torch.randint(0, 4, (4, 8, 8))  # ... nor labelled: train.py scores it -1
    official = _official_hard_iou(list(logits), list(labels), 5)
    confusion = _confusion(labels.numpy(), logits.argmax(1).numpy(), 5)
    ours = gsam_class_iou(confusion, absent_minus_one=True)
    np.testing.assert_allclose(ours, official, rtol=1e-6)
    assert official[4] == pytest.approx(-1.0)
    skipped = gsam_class_iou(confusion)
    assert np.isnan(skipped[4]) and np.allclose(skipped[:4], official[:4])
    binary = torch.randn(3, 1, 8, 8)
    target = (torch.rand(3, 1, 8, 8) > 0.5).float()
    official = _official_hard_iou(list(binary), list(target), 2)
    confusion = _confusion(target.long().numpy()[:, 0], (torch.sigmoid(binary) >= 0.5).long().numpy()[:, 0], 2)
    np.testing.assert_allclose(gsam_class_iou(confusion), official, rtol=1e-6)


def test_soft_iou_equals_test_py_per_batch():
    torch.manual_seed(1)
    logits, labels = torch.randn(4, 3, 16, 16), torch.randint(0, 3, (4, 16, 16))
    assert soft_batch_iou(logits, labels) == pytest.approx(float(_official_soft_iou(logits, labels, 3)), rel=1e-6)
    # binary: the two classes background / foreground, as softmax over [0, logit] gives
    binary = torch.randn(4, 1, 16, 16)
    two = torch.cat([torch.zeros_like(binary), binary], dim=1)
    target = torch.randint(0, 2, (4, 16, 16))
    assert soft_batch_iou(binary, target) == pytest.approx(float(_official_soft_iou(two, target, 2)), rel=1e-5)
    # ignore pixels are left out (test.py's one_hot would fail on them)
    ignored = labels.clone()
    ignored[:, :4] = 11
    kept = soft_batch_iou(logits[..., 4:, :], labels[:, 4:])
    assert soft_batch_iou(logits, ignored, ignore_index=11) == pytest.approx(kept, rel=1e-6)
    scores = GsamScores()
    scores.add_batch(logits[:2], labels[:2])
    scores.add_batch(logits[2:], labels[2:])
    expected = (soft_batch_iou(logits[:2], labels[:2]) + soft_batch_iou(logits[2:], labels[2:])) / 2
    assert scores.compute(np.eye(3))["gsam_soft_iou"] == pytest.approx(expected)


# ------------------------------------------------------------------------------------------ protocol
def test_protocol_checks_are_one_line(tmp_path):
    data = DataArguments()
    official = types.SimpleNamespace(protocol="official", world_size=2, per_device_eval_batch_size=4)
    with pytest.raises(RecipeError, match="protocol=official reproduces the official single-process run; 2"):
        check_protocol(official, data)
    gsam = types.SimpleNamespace(protocol="gsam", world_size=1, per_device_eval_batch_size=4)
    with pytest.raises(RecipeError, match="set eval_resolution: input"):
        check_protocol(gsam, data)
    splits = types.SimpleNamespace(eval=list(range(4)), test=list(range(3)))
    with pytest.raises(RecipeError, match="the test split has 3 images, fewer than one batch of 4"):
        check_protocol(gsam, DataArguments(eval_resolution="input"), splits)
    with pytest.raises(RecipeError, match="gsam_absent_class_iou is an option of protocol: gsam"):
        parse_train_args(["--gsam_absent_class_iou", "minus_one", "--output_dir", str(tmp_path)])


def _tiny_run(recipe, out, *extra):
    return [str(recipe), "--model_name_or_path", "null", "--sam_config", TINY16, "--report_to", "none",
            "--use_cpu", "true", "--disable_tqdm", "true", "--dataloader_num_workers", "0", "--save_total_limit", "1",
            "--output_dir", str(out), "--dataset_name_or_path", str(SHARED / "isbi2012"), "--num_train_epochs", "2",
            "--max_train_samples", "4", "--max_eval_samples", "6", "--per_device_train_batch_size", "2",
            "--logging_steps", "1", *extra]


@pytest.mark.skipif(not (SHARED / "camvid").exists(), reason=f"{SHARED / 'camvid'} not present")
def test_camvid_lora_recipe_trains_with_g_sam_s_head(tmp_path):
    out = tmp_path / "camvid"
    argv = _tiny_run(RECIPES / "camvid" / "sam_lora.yaml", out, "--resize", "[64, 80]")
    argv[argv.index("--dataset_name_or_path") + 1] = str(SHARED / "camvid")
    results = run_training(*parse_train_args(argv))
    assert math.isfinite(results["test"]["test_miou"]) and 0 < results["test"]["test_gsam_soft_iou"] < 1
    config = json.loads((out / "base_model" / "config.json").read_text())
    assert config["infosam_multiclass_head"] == "gsam" and config["mask_decoder_config"]["num_multimask_outputs"] == 54
    from infosam_hf.models.inference import load_for_inference

    model = load_for_inference(str(out))  # the evaluate / predict route: base + adapter, 11 class channels
    with torch.no_grad():
        assert model(pixel_values=torch.randn(1, 3, 48, 64), multimask_output=True).pred_masks.shape[2] == 11


@pytest.mark.skipif(not (SHARED / "isbi2012").exists(), reason=f"{SHARED / 'isbi2012'} not present")
@pytest.mark.parametrize("method, extra", [
    ("sam", ["--resize", "[64, 64]"]),  # the SAM row (decoder only), scaled from 1024 to stay fast
    ("gsam", ["--peft_config", json.dumps(TINY_GSAM)]),  # GSAM at G-SAM's own 256 resize / 128 crops
])
def test_table_recipes_train_under_protocol_gsam_on_isbi2012(method, extra, tmp_path, capsys):
    out = tmp_path / method
    results = run_training(*parse_train_args(_tiny_run(RECIPES / "isbi" / f"{method}.yaml", out, *extra,
                                                       "--gsam_absent_class_iou", "minus_one")))
    test = results["test"]
    for key in ("test_miou", "test_gsam_soft_iou", "test_gsam_miou_absent_minus_one"):
        assert math.isfinite(test[key]), key
    assert 0 < test["test_gsam_soft_iou"] < 1
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["best_metric"] is not None  # best-on-validation kept (ISBI's validation is the test fold)
    assert all("loss_d" not in entry for entry in state["log_history"])  # InfoSAM's losses off
    assert json.loads((out / "run_args.json").read_text())["training"]["max_grad_norm"] == 0
    printed = capsys.readouterr().out
    assert "soft IoU (G-SAM test.py: per batch" in printed and "mIoU, hard (G-SAM train.py" in printed


def test_train_peg_false_keeps_gsam_s_peg_at_its_init():
    from infosam_hf.models.sam import load_sam
    from tests.testing_utils import student_on

    for train_peg in (True, False):
        student = student_on(load_sam(sam_config=json.loads(TINY16), seed=0), "gsam",
                             {**TINY_GSAM, "train_peg": train_peg})
        out = student(pixel_values=torch.randn(1, 3, 64, 64), multimask_output=False).pred_masks
        out.float().pow(2).mean().backward()
        grads = {n: p.grad is not None for n, p in student.named_parameters() if p.requires_grad}
        peg = [n for n, p in student.named_parameters() if ".peg." in n]
        assert len(peg) == 2 and all((n in grads) is train_peg for n in peg)
        assert any("mlp_adapters" in n for n in grads)  # the rest of GSAM trains
        assert any(".peg." in key for key in student.state_dict())  # saved with the adapter either way


# ---------------------------------------------------------------------------------- InfoSAM protocol
def test_official_protocol_runs_the_cosine_over_the_official_horizon(tmp_path):
    from infosam_hf.training import InfoSAMConfig, InfoSAMTrainer
    from tests.testing_utils import tiny_student

    args = InfoSAMConfig(output_dir=str(tmp_path), report_to="none", use_cpu=True, learning_rate=2e-4,
                         num_train_epochs=3, lr_scheduler_type="cosine_with_min_lr",
                         lr_scheduler_kwargs={"min_lr_rate": 0.1}, protocol="official", eval_strategy="no")
    trainer = InfoSAMTrainer(model=tiny_student(), args=args)
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(num_training_steps=12)  # N // 4 = 4 steps per epoch, 3 epochs
    # train_attention.py: CosineAnnealingLR(T_max=epochs * (len(train_ds) // batch_size + 1), eta_min=lr / 10)
    reference = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2e-4)
    official = torch.optim.lr_scheduler.CosineAnnealingLR(reference, T_max=3 * (4 + 1), eta_min=2e-5)
    for _ in range(12):
        assert scheduler.get_last_lr()[0] == pytest.approx(official.get_last_lr()[0], rel=1e-6)
        trainer.optimizer.step()
        scheduler.step()
        reference.step()
        official.step()


def test_decoder_layer_norm_eps_is_applied_and_saved_with_the_base(tmp_path):
    from transformers import SamModel

    from infosam_hf.models import ModelArguments
    from infosam_hf.models.sam import load_sam
    from infosam_hf.training.run import build_models
    from infosam_hf.tuners import PeftArguments

    load_sam(sam_config=TINY_SAM, seed=0).save_pretrained(tmp_path / "hub_like")
    model_args = ModelArguments(model_name_or_path=str(tmp_path / "hub_like"), decoder_layer_norm_eps=1e-5)
    student, _, _ = build_models(model_args, PeftArguments(peft_method="decoder_only"), str(tmp_path / "run"),
                                 need_teacher=False)
    norms = [m for m in student.base_model.model.mask_decoder.transformer.modules()
             if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(m.eps == 1e-5 for m in norms)
    saved = SamModel.from_pretrained(tmp_path / "run" / "base_model")  # the adapter's base keeps the eps
    assert saved.config.mask_decoder_config.layer_norm_eps == 1e-5
    assert student.base_model.model.name_or_path == str((tmp_path / "run" / "base_model").resolve())
    for recipe in ("leaf", "camo", "isic", "kvasir", "road"):
        assert parse_train_args([str(ROOT / "recipes" / f"{recipe}.yaml")])[0].decoder_layer_norm_eps == 1e-5


def _official_box(mask, noise_x, noise_y):
    """util/utils.py get_single_box_from_mask with the drawn noise given: clipped at 0 only."""
    coords = np.argwhere(mask > 0)
    (y_min, x_min), (y_max, x_max) = coords.min(axis=0), coords.max(axis=0)
    return [max(0, x_min + noise_x), max(0, y_min + noise_y), max(0, x_max + noise_x), max(0, y_max + noise_y)]


def test_official_box_jitter_may_run_into_the_padding():
    from infosam_hf.data.prompts import sample_box

    mask = np.zeros((20, 30), bool)
    mask[5:20, 10:30] = True  # touches the bottom-right of the content
    for seed in range(50):
        rng = np.random.default_rng(seed)
        dx, dy = np.random.default_rng(seed).integers(-5, 5, size=2)  # the same draw sample_box makes
        assert sample_box(mask, rng, clip_upper=False).tolist() == _official_box(mask, int(dx), int(dy))
        clipped = sample_box(mask, np.random.default_rng(seed))
        assert clipped[2] <= 29 and clipped[3] <= 19
    boxes = np.array([sample_box(mask, np.random.default_rng(s), clip_upper=False) for s in range(50)])
    assert boxes[:, 2].max() > 29 and boxes[:, 3].max() > 19  # past the content, into the padding (<= 4 px)


def test_official_raw_value_masks_train_on_raw_values_with_points_only_on_value_one():
    mask = np.zeros((24, 32), np.uint8)
    mask[4:20, 6:26] = 200  # max is neither 255 nor 1: the official loader keeps the raw values
    mask[10:12, 10:12] = 1
    transform = SamSegmentationTransform(32, prompt_mode="mixed", preprocessing="official", train=True)
    for index in range(5):
        out = transform.example(_png(np.zeros((24, 32, 3), np.uint8)), _png(mask), index=index)
        assert out["labels"].max() == 200 and set(out["labels"].unique().tolist()) == {0, 1, 200}
        x, y = out["prompt_points"][0].tolist()
        assert out["prompt_point_labels"].tolist() == [1] and mask[int(y), int(x)] == 1  # init_point_sampling
        x0, y0, x1, y1 = out["prompt_box"].tolist()
        assert abs(x0 - 6) <= 5 and abs(x1 - 25) <= 5  # the box wraps > 0
    only_raw = np.where(mask == 1, 200, mask).astype(np.uint8)  # no value 1: one background point, label 0
    out = transform.example(_png(np.zeros((24, 32, 3), np.uint8)), _png(only_raw), index=0)
    x, y = out["prompt_points"][0].tolist()
    assert out["prompt_point_labels"].tolist() == [0] and only_raw[int(y), int(x)] == 0  # from mask == 0
    assert out["has_foreground"]


# ------------------------------------------------------------------------------------ G-SAM's head
def _gsam_official_logits(model, pixels, num_classes):
    """G-SAM's MaskDecoder.predict_masks for C classes, with its tokens taken from ``model``'s head: tokens
    cat([iou_token (C rows), mask_tokens (4C + 1 rows)]); class i reads output i + 1 through MLP i."""
    decoder = model.mask_decoder
    ours = decoder.mask_tokens.weight
    iou_rows = torch.cat([decoder.iou_token.weight, ours[1:num_classes]])  # G-SAM iou_token rows 0..C-1
    mask_rows = torch.cat([ours[num_classes:num_classes + 1], ours[:1], ours[num_classes + 1:]])  # rows 0..4C
    tokens = torch.cat([iou_rows, mask_rows])[None, None]
    assert tokens.shape[2] == 5 * num_classes + 1
    with torch.no_grad():
        embeddings = model.get_image_embeddings(pixels)
        dense = model.prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(embeddings)
        pe = model.get_image_wide_positional_embeddings().repeat(embeddings.shape[0], 1, 1, 1)
        hs, src = decoder.transformer(point_embeddings=tokens.expand(embeddings.shape[0], -1, -1, -1),
                                      image_embeddings=embeddings + dense, image_positional_embeddings=pe,
                                      attention_similarity=None)
        b, c, h, w = embeddings.shape
        src = src.transpose(2, 3).reshape(b, c, h, w)
        up = decoder.activation(decoder.upscale_layer_norm(decoder.upscale_conv1(src)))
        up = decoder.activation(decoder.upscale_conv2(up))
        hyper = torch.stack([decoder.output_hypernetworks_mlps[1 + i](hs[:, 0, 1 + i]) for i in range(num_classes)], 1)
        return (hyper @ up.flatten(2)).reshape(b, num_classes, *up.shape[-2:])


def test_gsam_multiclass_head_computes_g_sam_s_forward_and_reloads(tmp_path):
    from transformers import SamModel

    from infosam_hf.models.multiclass import freeze_unused_head, sam_num_classes
    from infosam_hf.models.sam import load_sam

    model = load_sam(sam_config=TINY_SAM, seed=0, num_labels=3, multiclass_head="gsam").eval()
    decoder = model.mask_decoder
    assert decoder.mask_tokens.weight.shape[0] + 1 == 5 * 3 + 1  # 5C + 1 tokens with the IoU token
    assert 0.8 < float(decoder.mask_tokens.weight.std()) < 1.2  # N(0, 1) as nn.Embedding's default
    pixels = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        logits = model(pixel_values=pixels, multimask_output=True).pred_masks[:, 0]
    assert logits.shape[1] == 3
    torch.testing.assert_close(logits, _gsam_official_logits(model, pixels, 3), rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path / "base")
    reloaded = load_sam(str(tmp_path / "base")).eval()
    assert sam_num_classes(reloaded) == 3
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values=pixels, multimask_output=True).pred_masks[:, 0], logits)
        bare = SamModel.from_pretrained(tmp_path / "base")(pixel_values=pixels, multimask_output=True).pred_masks
    torch.testing.assert_close(bare[:, 0, :3], logits)  # without the hook: 5C - 1 channels, the classes first
    frozen = freeze_unused_head(model)
    assert any("output_hypernetworks_mlps.14." in n for n in frozen)
    assert not any(f"output_hypernetworks_mlps.{i}." in n for n in frozen for i in (1, 2, 3))
    default = load_sam(sam_config=TINY_SAM, seed=0, num_labels=3)
    assert default.mask_decoder.mask_tokens.weight.shape[0] == 3 + 1  # the project's head stays the default
    with pytest.raises(ValueError, match="multiclass_head"):
        parse_train_args(["--multiclass_head", "wide"])
