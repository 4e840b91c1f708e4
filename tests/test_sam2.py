"""SAM 2 (Sam2Model) as the InfoSAM backbone: loading, feature taps, PEFT, data frame, training, reload."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from peft import AutoPeftModel
from PIL import Image
from transformers import Sam2Model

from infosam_hf import InfoSAMConfig, InfoSAMTrainer
from infosam_hf.data import DataArguments, build_datasets
from infosam_hf.data.transforms import SamSegmentationTransform
from infosam_hf.commands.export import main as export_main
from infosam_hf.evaluation.evaluate import evaluate_adapter
from infosam_hf.evaluation.predict import Prompt, predict_masks, scale_to_input
from infosam_hf.models import load_for_inference
from infosam_hf.models.sam import load_sam
from infosam_hf.models.sam2 import build_sam2_config
from infosam_hf.training.recipe import RecipeError
from infosam_hf.training.run import parse_train_args, run_training
from tests.testing_utils import (TINY_SAM2, assert_adapter_off_is_the_base, captured_over_two_calls, tiny_batch, tiny_sam,
                      tiny_sam2, tiny_sam2_student, tiny_student)

ROOT = Path(__file__).resolve().parents[1]
DEMO_SAM2 = str(ROOT / "recipes" / "demo_sam2.yaml")
FAST = ["--synthetic_num_train", "16", "--synthetic_num_eval", "4", "--synthetic_num_test", "8",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--logging_steps", "1"]


def _forward(model, batch):
    return model(pixel_values=batch["pixel_values"], input_boxes=batch["input_boxes"], multimask_output=False)


def test_sam2_is_detected_from_the_checkpoint_config(tmp_path):
    sam = tiny_sam2(seed=1)
    assert isinstance(sam, Sam2Model) and not sam.mask_decoder.dynamic_multimask_via_stability
    # the two random Fourier matrices agree, so prompts land where the image positions say
    assert torch.equal(sam.prompt_encoder.shared_embedding.positional_embedding,
                       sam.shared_image_embedding.positional_embedding)
    sam.mask_decoder.dynamic_multimask_via_stability = True
    sam.config.mask_decoder_config.dynamic_multimask_via_stability = True  # as a Hub checkpoint has it
    sam.save_pretrained(tmp_path / "tiny2")
    loaded = load_sam(str(tmp_path / "tiny2"))
    assert isinstance(loaded, Sam2Model) and not loaded.mask_decoder.dynamic_multimask_via_stability
    batch = tiny_batch(batch_size=2, seed=1)
    with torch.no_grad():
        torch.testing.assert_close(_forward(loaded.eval(), batch).pred_masks, _forward(sam.train(), batch).pred_masks)
    with pytest.raises(ValueError, match="input-size surgery is for SAM"):
        load_sam(str(tmp_path / "tiny2"), image_size=32)


def test_sam2_config_fields_are_checked():
    config = build_sam2_config(TINY_SAM2)
    assert config.vision_config.backbone_channel_list == [64, 32, 16, 8]
    assert config.vision_config.backbone_feature_sizes == [[16, 16], [8, 8], [4, 4]]
    assert config.prompt_encoder_config.patch_size == 16 and config.vision_config.fpn_hidden_size == 32
    with pytest.raises(ValueError, match="unknown keys"):
        build_sam2_config({**TINY_SAM2, "vision_size": 3})
    with pytest.raises(ValueError, match="first blocks of query-pool stages"):
        build_sam2_config({**TINY_SAM2, "backbone_config": {**TINY_SAM2["backbone_config"],
                                                            "global_attention_blocks": [2]}})


def test_capture_matches_a_manual_sam2_decoder_call():
    sam = tiny_sam2(seed=3).eval()
    batch = tiny_batch(batch_size=3, seed=3)
    feats = captured_over_two_calls(sam, batch, tiny_batch(batch_size=3, seed=4))  # the second must not overwrite
    with torch.no_grad():
        image_embeddings = sam.get_image_embeddings(batch["pixel_values"])  # high to low resolution
        sparse, dense = sam.prompt_encoder(input_points=None, input_labels=None,
                                           input_boxes=batch["input_boxes"], input_masks=None)
        decoder = sam.mask_decoder
        tokens = torch.cat([decoder.obj_score_token.weight, decoder.iou_token.weight, decoder.mask_tokens.weight], 0)
        tokens = torch.cat([tokens.repeat(3, 1, 1, 1), sparse], dim=2)
        pos = sam.get_image_wide_positional_embeddings().repeat(3, 1, 1, 1)
        queries, _ = decoder.transformer(point_embeddings=tokens, image_embeddings=image_embeddings[-1] + dense,
                                         image_positional_embeddings=pos, attention_similarity=None)
    assert feats["image_embeds"].shape == (3, 16, 32) and feats["mask_token"].shape == (3, 1, 32)
    torch.testing.assert_close(feats["image_embeds"], image_embeddings[-1].flatten(2).transpose(1, 2))
    torch.testing.assert_close(feats["mask_token"], queries[:, 0, 2:3, :])  # object score, IoU, then mask tokens
    assert not torch.allclose(feats["mask_token"], queries[:, 0, 1:2, :])  # the IoU token is another tensor


def test_sam2_student_lora_on_hiera_qkv_and_teacher_is_the_base():
    student = tiny_sam2_student(seed=0)
    lora_targets = {n.rsplit(".lora_A", 1)[0] for n, _ in student.named_parameters() if "lora_A" in n}
    assert lora_targets == {f"base_model.model.vision_encoder.backbone.blocks.{i}.attn.qkv" for i in range(5)}
    trainable = {n for n, p in student.named_parameters() if p.requires_grad}
    assert any("mask_decoder.modules_to_save" in n for n in trainable)
    assert not any("original_module" in n or "base_layer" in n for n in trainable)
    assert_adapter_off_is_the_base(student, tiny_sam2(seed=0), tiny_batch())


def _train_tiny_sam2(tmp_path, **config):
    """Three InfoSAM steps of a tiny SAM 2 student: (trainer log entries with a loss, parameter names that
    changed, the student)."""
    data_args = DataArguments(dataset_name_or_path="synthetic", synthetic_num_train=8, synthetic_num_eval=4,
                              synthetic_num_test=4, synthetic_image_size=64, train_prompt="box")
    splits = build_datasets(data_args, image_size=64, seed=0, keep_aspect_ratio=False)
    student = tiny_sam2_student()
    before = {n: p.detach().clone() for n, p in student.named_parameters()}
    args = InfoSAMConfig(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=4, learning_rate=1e-3,
                         logging_steps=1, save_strategy="no", report_to="none", seed=0, lambda_r=1.0, lambda_d=0.5,
                         use_cpu=True, disable_tqdm=True, **config)
    trainer = InfoSAMTrainer(model=student, args=args, train_dataset=splits.train)
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    changed = {n for n, p in student.named_parameters() if not torch.equal(p, before[n])}
    return logs, changed, student


def test_sam2_trains_with_the_infosam_losses(tmp_path):
    logs, changed, student = _train_tiny_sam2(tmp_path)
    assert len(logs) == 3 and all(np.isfinite([e["loss_seg"], e["loss_r"], e["loss_d"]]).all() for e in logs)
    assert all(e["loss_d"] != 0 and "loss_obj" not in e for e in logs)
    for part in ("lora_B", "mask_decoder", "relation_module"):
        assert any(part in n for n in changed), part
    assert not any("original_module" in n or "base_layer" in n for n in changed)
    heads = [n for n, _ in student.named_parameters() if "pred_obj_score_head" in n or "iou_prediction_head" in n]
    assert heads and not any(n in changed for n in heads)  # no loss reaches them: frozen


def test_object_score_loss_on_request(tmp_path):
    logs, changed, _ = _train_tiny_sam2(tmp_path, lambda_object_score=1.0)
    assert all(e["loss_obj"] > 0 for e in logs)
    assert any("pred_obj_score_head" in n and "modules_to_save" in n for n in changed)
    with pytest.raises(ValueError, match="only SAM 2 has an object-score head"):
        InfoSAMTrainer(model=tiny_student(), args=InfoSAMConfig(output_dir=str(tmp_path), lambda_object_score=1.0,
                                                                report_to="none", use_cpu=True))


def test_square_frame_for_sam2():
    image = Image.fromarray(np.zeros((40, 80, 3), dtype=np.uint8))  # H 40, W 80
    mask = np.zeros((40, 80), dtype=np.uint8)
    mask[10:20, 40:60] = 255
    transform = SamSegmentationTransform(64, prompt_mode="box", keep_aspect_ratio=False)
    out = transform.example(image, Image.fromarray(mask), index=0)
    assert out["reshaped_input_sizes"].tolist() == [64, 64] and out["labels"].shape == (64, 64)
    ys, xs = np.nonzero(out["labels"].numpy())
    assert (ys.min(), ys.max(), xs.min(), xs.max()) == (16, 31, 32, 47)  # stretched to the square, no padding
    coords = scale_to_input([[40.0, 10.0], [60.0, 20.0]], (40, 80), 64, resize=(64, 64))  # predict: SAM 2 frame
    np.testing.assert_allclose(coords, [[32.0, 16.0], [48.0, 32.0]])


@pytest.fixture(scope="module")
def sam2_run(tmp_path_factory):
    """recipes/demo_sam2.yaml at 3 steps: its output_dir, arguments and results."""
    out = tmp_path_factory.mktemp("sam2") / "demo_sam2"
    model_args, peft_args, data_args, args = parse_train_args([DEMO_SAM2, "--output_dir", str(out), "--max_steps", "3",
                                                               *FAST])
    results = run_training(model_args, peft_args, data_args, args)
    return SimpleNamespace(out=out, data_args=data_args, results=results)


def test_demo_sam2_recipe_end_to_end_and_exact_reload(sam2_run, monkeypatch):
    out = sam2_run.out
    monkeypatch.chdir(out)  # a run under an absolute output_dir records its base as "base_model" (see test_loading)
    assert {"before training", "box-fill baseline", "after training"} <= set(sam2_run.results["summary"])
    processor = json.loads((out / "preprocessor_config.json").read_text())
    assert processor["image_processor_type"] == "Sam2ImageProcessor"
    assert processor["size"] == {"height": 128, "width": 128}
    assert json.loads((out / "base_model" / "config.json").read_text())["model_type"] == "sam2"
    card = (out / "README.md").read_text()
    assert "Sam2Model.from_pretrained" in card and "Input size:** 128×128" in card
    batch = tiny_batch(batch_size=2, size=128, seed=5)
    ours = load_for_inference(str(out))
    auto = AutoPeftModel.from_pretrained(str(out)).eval()
    assert isinstance(auto.get_base_model(), Sam2Model)
    with torch.no_grad():
        expected = _forward(ours, batch)
        loaded = _forward(auto, batch)
    assert torch.equal(loaded.pred_masks, expected.pred_masks)


def test_sam2_evaluate_predict_and_export_follow_the_adapter(sam2_run, tmp_path):
    out = sam2_run.out
    scores = evaluate_adapter(str(out), sam2_run.data_args, split="test", metric_set="iou", progress=False)
    after = sam2_run.results["summary"]["after training"]
    assert scores["iou"] == pytest.approx(after["iou"], abs=1e-6)  # the training run's test score, reproduced

    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (96, 160, 3), dtype=np.uint8))
    image.save(tmp_path / "wide.png")
    results = predict_masks(load_for_inference(str(out)), [tmp_path / "wide.png"], Prompt(box=(20, 10, 120, 80)),
                            tmp_path / "preds", progress=False)
    assert results[0].error is None
    assert Image.open(results[0].mask_path).size == (160, 96)

    merged_dir = tmp_path / "merged"
    assert export_main([str(out), str(merged_dir)]) == 0
    assert json.loads((merged_dir / "preprocessor_config.json").read_text())["image_processor_type"] == \
        "Sam2ImageProcessor"
    merged, info = Sam2Model.from_pretrained(str(merged_dir), output_loading_info=True)
    assert not any(info[key] for key in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    assert not merged.config.mask_decoder_config.dynamic_multimask_via_stability
    batch = tiny_batch(batch_size=2, size=128, seed=6)
    with torch.no_grad():
        expected = _forward(load_for_inference(str(out)), batch).pred_masks
        got = _forward(merged.eval(), batch).pred_masks
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-5)


def test_sam2_only_and_sam_only_options_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="input-size surgery is for SAM"):
        run_training(*parse_train_args([DEMO_SAM2, "--output_dir", str(tmp_path), "--model_name_or_path",
                                        str(_saved_tiny_sam2(tmp_path)), "--image_size", "32", *FAST]))
    with pytest.raises(RecipeError, match="teacher must be of the student's family"):
        run_training(*parse_train_args([DEMO_SAM2, "--output_dir", str(tmp_path / "t"), "--teacher_model_name_or_path",
                                        str(_saved_tiny_sam(tmp_path)), "--max_steps", "1", *FAST]))
    assert not (tmp_path / "t").exists()  # nothing written before the error


def _saved_tiny_sam2(tmp_path):
    tiny_sam2().save_pretrained(tmp_path / "tiny_sam2")
    return tmp_path / "tiny_sam2"


def _saved_tiny_sam(tmp_path):
    tiny_sam().save_pretrained(tmp_path / "tiny_sam")
    return tmp_path / "tiny_sam"


@pytest.mark.parametrize("method", ["sam_adapter", "adaptformer"])
def test_block_adapters_follow_the_hiera_stage_widths(method):
    from infosam_hf.models import attach_relation_module
    from infosam_hf.tuners import build_student

    sam = tiny_sam2()
    attach_relation_module(sam)
    student = build_student(sam, method, {"block_indices": [0, 1, 2, 3, 4]} if method == "sam_adapter" else {})
    base = student.get_base_model()
    widths = {}
    for index, block in enumerate(base.vision_encoder.backbone.blocks):
        adapter = getattr(block.mlp, "sadapter_bottleneck" if method == "sam_adapter" else "adaptformer_bottleneck",
                          None)
        assert adapter is not None, f"block {index} not adapted"
        widths[index] = adapter["default"][2].out_features
    assert widths == {0: 8, 1: 16, 2: 32, 3: 32, 4: 64}  # TINY_SAM2's embed_dim_per_stage over blocks_per_stage
    pixels = torch.randn(2, 3, 64, 64)
    boxes = torch.tensor([[[8.0, 8.0, 40.0, 40.0]], [[4.0, 10.0, 30.0, 50.0]]])
    with torch.no_grad():
        for param in student.parameters():  # adapters away from zero, so disabling has something to undo
            if param.requires_grad and param.dim() > 1:
                param.add_(0.05)
        adapted = student(pixel_values=pixels, input_boxes=boxes, multimask_output=False).pred_masks
        with student.disable_adapter():
            plain = student(pixel_values=pixels, input_boxes=boxes, multimask_output=False).pred_masks
        reference = tiny_sam2()(pixel_values=pixels, input_boxes=boxes, multimask_output=False).pred_masks
    assert torch.equal(plain, reference) and not torch.allclose(adapted, plain)


def test_vit_only_tuners_refuse_sam2_in_one_line():
    from infosam_hf.models import attach_relation_module
    from infosam_hf.tuners import build_student

    sam = tiny_sam2()
    attach_relation_module(sam)
    with pytest.raises(ValueError, match="no SAM 2 \\(Hiera\\) form"):
        build_student(sam, "gsam_lora")
