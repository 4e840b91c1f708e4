"""Multi-class segmentation: the C-class head, cross-entropy, per-class InfoSAM losses, argmax evaluation,
save/reload, the CLI (train / evaluate / predict) and CamVid."""

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from peft import AutoPeftModel
from PIL import Image
from transformers import SamModel

from infosam_hf import InfoSAMConfig, InfoSAMTrainer
from infosam_hf.commands import evaluate as evaluate_cli
from infosam_hf.commands import predict as predict_cli
from infosam_hf.commands.train import main as train_main
from infosam_hf.data import DataArguments, SamPromptCollator, build_datasets
from infosam_hf.data.synthetic import SYNTHETIC_NUM_CLASSES, make_synthetic_split
from infosam_hf.evaluation.class_map import class_palette
from infosam_hf.evaluation.loop import evaluate_segmentation, make_metrics, sam_logits
from infosam_hf.losses import class_cross_entropy, compression_loss, distillation_loss
from infosam_hf.models import ModelArguments, load_for_inference
from infosam_hf.models.merge import export_merged
from infosam_hf.models.multiclass import class_token_slice, sam_num_classes
from infosam_hf.models.sam import load_sam
from infosam_hf.training.run import build_models, parse_train_args, run_training
from infosam_hf.tuners import PeftArguments
from tests.testing_utils import TINY_SAM, tiny_sam

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "recipes" / "demo.yaml")
# the checkout's sibling shared/data (a helper worktree sits one level deeper)
CAMVID = next((p / "shared" / "data" / "camvid" for p in (ROOT.parent, ROOT.parents[1])
               if (p / "shared" / "data" / "camvid").is_dir()), ROOT.parent / "shared" / "data" / "camvid")
C = SYNTHETIC_NUM_CLASSES
TINY = ["--synthetic_num_train", "16", "--synthetic_num_eval", "4", "--synthetic_num_test", "8",
        "--synthetic_image_size", "96", "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8",
        "--logging_steps", "1", "--disable_tqdm", "true", "--eval_before_training", "false"]
MULTICLASS = ["--num_labels", str(C), "--train_prompt", "none", "--eval_prompt", "none"]


def tiny_multiclass_student(tmp_path, num_labels=C, seed=0):
    """A LoRA student with a multi-class head (base saved under tmp_path/base_model), trainable weights perturbed."""
    model_args = ModelArguments(sam_config=TINY_SAM)
    student, _, _ = build_models(model_args, PeftArguments(peft_config={"r": 4, "lora_alpha": 4}), str(tmp_path),
                                 seed=seed, num_labels=num_labels)
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in student.named_parameters():
            if "lora_B" in name or ("modules_to_save" in name and "mask_tokens" in name):
                param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return student


# ------------------------------------------------------------------------------------------ the head
@pytest.mark.parametrize("num_classes", [2, 6])
def test_head_shapes_and_mlp_init_follow_gsam(num_classes):
    base = tiny_sam(seed=0)
    model = load_sam(sam_config=TINY_SAM, seed=0, num_labels=num_classes)
    head, old = model.mask_decoder, base.mask_decoder
    assert model.config.infosam_num_classes == num_classes == sam_num_classes(model)
    assert head.mask_tokens.weight.shape == (num_classes + 1, 32)
    assert len(head.output_hypernetworks_mlps) == num_classes + 1
    assert head.iou_prediction_head.proj_out.out_features == num_classes + 1

    def same(a, b):
        sa, sb = a.state_dict(), b.state_dict()
        return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)

    # class c (token c + 1) starts from SAM's MLP c for c < 4; token 0 keeps SAM's MLP 0
    assert same(head.output_hypernetworks_mlps[0], old.output_hypernetworks_mlps[0])
    for c in range(num_classes):
        copied = same(head.output_hypernetworks_mlps[1 + c], old.output_hypernetworks_mlps[min(c, 3)])
        assert copied == (c < 4), c
    assert same(head.transformer, old.transformer) and same(head.upscale_conv1, old.upscale_conv1)
    assert not torch.equal(head.mask_tokens.weight[:4], old.mask_tokens.weight)  # random, as in G-SAM
    assert not torch.equal(head.iou_token.weight, old.iou_token.weight)
    with torch.no_grad():
        out = model(pixel_values=torch.randn(2, 3, 64, 64), multimask_output=True)  # no prompt at all
    assert out.pred_masks.shape == (2, 1, num_classes, 32, 32)
    assert class_token_slice(num_classes) == slice(2, 2 + num_classes) and class_token_slice(1) == slice(1, 2)


def test_saved_multiclass_sam_keeps_its_head(tmp_path):
    model = load_sam(sam_config=TINY_SAM, seed=0, num_labels=C)
    model.save_pretrained(tmp_path)
    again = load_sam(str(tmp_path), num_labels=C)
    for key, value in model.state_dict().items():
        assert torch.equal(again.state_dict()[key], value), key
    with pytest.raises(ValueError, match="already has a 5-class head"):
        load_sam(str(tmp_path), num_labels=3)


# ------------------------------------------------------------------------------------------ loss
def test_cross_entropy_skips_ignored_pixels():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, 8, generator=g, requires_grad=True)
    labels = torch.randint(0, 4, (2, 8, 8), generator=g)
    labels[0, :3] = 255
    labels[1] = 255
    expected = F.cross_entropy(logits, labels, ignore_index=255)
    torch.testing.assert_close(class_cross_entropy(logits, labels, 255), expected)
    per_image = class_cross_entropy(logits, labels, 255, reduction="none")
    torch.testing.assert_close(per_image[0], F.cross_entropy(logits[:1], labels[:1], ignore_index=255))
    assert per_image[1] == 0  # nothing valid in image 1
    empty = class_cross_entropy(logits, torch.full_like(labels, 255), 255)
    empty.backward()
    assert empty == 0 and torch.count_nonzero(logits.grad) == 0


# ------------------------------------------------------------------------------------------ InfoSAM
def test_info_losses_average_one_relation_per_class_token(tmp_path):
    student = tiny_multiclass_student(tmp_path)
    args = InfoSAMConfig(output_dir=str(tmp_path / "run"), use_cpu=True, report_to="none", save_strategy="no",
                         per_device_train_batch_size=4)
    trainer = InfoSAMTrainer(model=student, args=args)
    assert trainer.num_labels == C
    inputs = {"pixel_values": torch.randn(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))}
    teacher = trainer.teacher_features(student, inputs)
    with trainer.student_capture.record() as captured:
        logits = sam_logits(student, inputs)
    assert logits.shape == (4, C, 64, 64)
    assert teacher["mask_token"].shape == captured["mask_token"].shape == (4, C, 32)
    assert not torch.allclose(teacher["mask_token"], captured["mask_token"])  # teacher: the untrained head
    loss_r, loss_d = trainer.information_losses(teacher, captured)
    relation = trainer.relation_module
    manual_r, manual_d = [], []
    for k in range(C):
        rel_t = relation(teacher["image_embeds"], teacher["mask_token"][:, k:k + 1])
        rel_s = relation(captured["image_embeds"], captured["mask_token"][:, k:k + 1])
        manual_r.append(compression_loss(teacher["image_embeds"], teacher["mask_token"][:, k:k + 1], rel_t))
        manual_d.append(distillation_loss(rel_t, rel_s))
    assert math.isfinite(loss_r.item()) and math.isfinite(loss_d.item())
    torch.testing.assert_close(loss_r, torch.stack(manual_r).mean())
    torch.testing.assert_close(loss_d, torch.stack(manual_d).mean())
    assert len({round(v.item(), 6) for v in manual_d}) > 1  # the class tokens give different relations
    student.zero_grad()
    (loss_r + loss_d).backward()
    grads = [p.grad for p in relation.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    # the student's class tokens are reached by loss_d
    token = next(p for n, p in student.named_parameters() if "modules_to_save.default.mask_tokens" in n)
    assert token.grad is not None and token.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------ evaluation
def test_argmax_evaluation_gives_per_class_iou_over_the_split():
    data_args = DataArguments(dataset_name_or_path="synthetic", num_labels=C, train_prompt="none",
                              eval_prompt="none", synthetic_num_train=1, synthetic_num_eval=1, synthetic_num_test=6,
                              synthetic_image_size=64)
    test = build_datasets(data_args, image_size=64, seed=0, need_eval=False).test
    batches = list(torch.utils.data.DataLoader(test, batch_size=4, collate_fn=SamPromptCollator()))

    def oracle(batch):  # the ground truth as one-hot logits
        return F.one_hot(batch["labels"].clamp(0, C - 1), C).permute(0, 3, 1, 2).float() * 10

    perfect = evaluate_segmentation(oracle, batches, make_metrics(C, 255), structure_loss_bce="weighted")
    assert perfect["miou"] == 1.0 and all(perfect[f"iou_class_{c}"] == 1.0 for c in range(C))
    assert perfect["loss"] < 1e-3  # cross-entropy of the (near) certain right answer

    def background(batch):
        logits = torch.zeros(batch["labels"].shape[0], C, *batch["labels"].shape[-2:])
        logits[:, 0] = 1.0
        return logits

    scores = evaluate_segmentation(background, batches, make_metrics(C, 255), structure_loss_bce=None)
    gts = np.concatenate([np.asarray(label).ravel() for batch in batches for label in batch["original_labels"]])
    assert scores["iou_class_0"] == pytest.approx((gts == 0).mean())  # one confusion matrix over the split
    assert all(scores[f"iou_class_{c}"] == 0.0 for c in range(1, C))
    assert scores["miou"] == pytest.approx((gts == 0).mean() / C)


def test_save_reload_gives_identical_predictions(tmp_path):
    student = tiny_multiclass_student(tmp_path).eval()
    student.save_pretrained(tmp_path / "adapter")
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert Path(config["base_model_name_or_path"]) == (tmp_path / "base_model").resolve()
    saved_base = json.loads((tmp_path / "base_model" / "config.json").read_text())
    assert saved_base["infosam_num_classes"] == C
    assert saved_base["mask_decoder_config"]["num_multimask_outputs"] == C
    batch = {"pixel_values": torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(3))}
    with torch.no_grad():
        expected = sam_logits(student, batch)
        for model in (load_for_inference(str(tmp_path / "adapter")),
                      AutoPeftModel.from_pretrained(str(tmp_path / "adapter")).eval()):
            torch.testing.assert_close(sam_logits(model, batch), expected, rtol=0, atol=0)
    # merged into a plain SamModel (infosam export): still C channels, same predictions up to rounding
    merged = SamModel.from_pretrained(export_merged(str(tmp_path / "adapter"), tmp_path / "merged")).eval()
    assert sam_num_classes(merged) == C
    with torch.no_grad():
        torch.testing.assert_close(sam_logits(merged, batch), expected, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------------------ the CLI
@pytest.fixture(scope="module")
def multiclass_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("multiclass") / "run"
    code = train_main([DEMO, "--output_dir", str(out), "--max_steps", "4", *TINY, *MULTICLASS,
                       "--eval_strategy", "steps", "--eval_steps", "2", "--save_strategy", "steps", "--save_steps", "2",
                       "--metric_for_best_model", "miou", "--load_best_model_at_end", "true"])
    assert code == 0
    return out


def test_cli_train_reports_per_class_iou(multiclass_run, capsys):
    out = multiclass_run
    test = json.loads((out / "test_results.json").read_text())
    assert {f"test_iou_class_{c}" for c in range(C)} <= set(test) and 0 < test["test_miou"] <= 1
    assert "test_loss" in test  # cross-entropy on the test split
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["best_metric"] is not None and state["best_model_checkpoint"]  # picked by eval_miou
    card = (out / "README.md").read_text()
    assert "IoU per class" in card and f"| {C - 1} ring |" in card and "multimask_output=True" in card  # named


def test_cli_evaluate_reproduces_the_test_metrics(multiclass_run, tmp_path, capsys):
    out = multiclass_run
    # num_labels and eval_prompt follow the model: the command line names the data only
    code = evaluate_cli.main(["--adapter", str(out), "--recipe", DEMO, *TINY, "--output", str(tmp_path / "e.json")])
    assert code == 0
    printed = capsys.readouterr().out
    results = json.loads((tmp_path / "e.json").read_text())
    test = json.loads((out / "test_results.json").read_text())
    for c in range(C):
        assert f"iou_class_{c}" in printed
        assert results[f"iou_class_{c}"] == pytest.approx(test[f"test_iou_class_{c}"], nan_ok=True)
    assert results["miou"] == pytest.approx(test["test_miou"]) and results["eval_prompt"] == "none"
    binary = tiny_sam(seed=0)
    binary.save_pretrained(tmp_path / "binary")
    code = evaluate_cli.main(["--adapter", "none", "--base_model", str(tmp_path / "binary"), "--recipe", DEMO, *TINY,
                              *MULTICLASS, "--output", str(tmp_path / "b.json")])
    assert code == 2 and "num_labels=5, but the model predicts 1 class" in capsys.readouterr().err


def test_cli_predict_writes_class_maps(multiclass_run, tmp_path, capsys):
    images = tmp_path / "images"
    images.mkdir()
    for i, row in enumerate(make_synthetic_split(2, 80, seed=7)):
        (images / f"im{i}.png").write_bytes(row["image"]["bytes"])
    code = predict_cli.main(["--adapter", str(multiclass_run), "--images", str(images), "--out", str(tmp_path / "p"),
                             "--no_progress"])
    assert code == 0
    class_map = Image.open(tmp_path / "p" / "im0_classes.png")
    assert class_map.mode == "P" and class_map.size == (80, 80)
    ids = np.asarray(class_map)
    assert ids.max() < C
    palette = np.asarray(class_map.getpalette()[: 3 * C]).reshape(C, 3)
    assert np.array_equal(palette, class_palette(C)) and len({tuple(p) for p in palette}) == C
    overlay = Image.open(tmp_path / "p" / "im0_overlay.png")
    assert overlay.size == (80, 80) and overlay.mode == "RGB"
    # the command's class map is the argmax of the reloaded model
    model = load_for_inference(str(multiclass_run))
    image = Image.open(images / "im0.png").convert("RGB")
    from infosam_hf.data import preprocess_image
    pixels, _ = preprocess_image(image, 128)
    with torch.no_grad():
        logits = sam_logits(model, {"pixel_values": pixels[None]})
    expected = F.interpolate(logits[:, :, :128, :128], size=(80, 80), mode="bilinear").argmax(1)[0].numpy()
    assert (expected == ids).mean() > 0.99
    code = predict_cli.main(["--adapter", str(multiclass_run), "--images", str(images), "--out", str(tmp_path / "q"),
                             "--box", "1,1,20,20"])
    assert code == 2 and "multi-class model" in capsys.readouterr().err


def test_binary_training_without_prompts(tmp_path):
    argv = [DEMO, "--output_dir", str(tmp_path / "b"), "--max_steps", "2", *TINY, "--train_prompt", "none",
            "--eval_prompt", "none", "--eval_strategy", "no", "--save_strategy", "no"]
    results = run_training(*parse_train_args(argv))
    assert math.isfinite(results["test"]["test_iou"]) and "test_iou_class_0" not in results["test"]


@pytest.mark.parametrize("extra, message", [
    (["--num_labels", "5", "--eval_prompt", "none"], "train_prompt='box': num_labels=5 trains a semantic head"),
    ([*MULTICLASS, "--teacher_model_name_or_path", "x"], "teacher_model_name_or_path: a separate teacher"),
    (["--num_labels", "3", "--train_prompt", "none", "--eval_prompt", "none"], "the synthetic set is binary"),
])
def test_multiclass_recipe_errors_are_one_line(tmp_path, capsys, extra, message):
    code = train_main([DEMO, "--output_dir", str(tmp_path / "x"), "--max_steps", "1", *TINY, *extra])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------------------ CamVid
def test_camvid_multiclass_trains_and_reports_per_class_iou(tmp_path):
    if not (CAMVID / "train.csv").is_file():
        pytest.skip(f"{CAMVID} is absent")
    argv = [DEMO, "--output_dir", str(tmp_path / "camvid"), "--dataset_name_or_path", str(CAMVID),
            "--num_labels", "11", "--ignore_index", "11", "--train_prompt", "none", "--eval_prompt", "none",
            "--eval_split", "val", "--max_train_samples", "8", "--max_eval_samples", "4", "--max_steps", "2",
            "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "4", "--eval_strategy", "no",
            "--save_strategy", "no", "--eval_before_training", "false", "--disable_tqdm", "true"]
    results = run_training(*parse_train_args(argv))
    test = results["test"]
    per_class = [test[f"test_iou_class_{c}"] for c in range(11)]
    assert "test_iou_class_11" not in test  # void is ignored, not a class
    present = [v for v in per_class if not math.isnan(v)]
    assert present and all(0 <= v <= 1 for v in present)
    assert test["test_miou"] == pytest.approx(float(np.mean(present)))
    print("CamVid per-class IoU", [round(v, 4) for v in per_class], "mIoU", round(test["test_miou"], 4))


def test_the_multiclass_demo_recipe_has_its_own_output_dir():
    from pathlib import Path

    from infosam_hf.training.run import parse_train_args

    recipes = Path(__file__).resolve().parents[1] / "recipes"
    _, _, data, args = parse_train_args([str(recipes / "demo_multiclass.yaml")])
    _, _, _, binary = parse_train_args([str(recipes / "demo.yaml")])
    assert data.num_labels == 5 and data.train_prompt == data.eval_prompt == "none"
    assert Path(args.output_dir) != Path(binary.output_dir)
