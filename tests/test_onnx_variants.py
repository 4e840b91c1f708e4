"""ONNX export and ``predict --onnx`` of G-SAM / SAMUS variants, dynamic-size and multi-class adapters, and the ONNX
backend of tiled prediction and everything mode, against PyTorch, on tiny random SAMs.

The tiny models use a large ``initializer_range`` (0.3; 0.2 for the variants, whose float32 noise a larger one
amplifies past 1e-4) so that logits are O(0.1-10): with SAM's 0.02 they are ~1e-3 and any tolerance passes.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from infosam_hf.commands import export as export_cmd
from infosam_hf.commands import predict as predict_cmd
from infosam_hf.data import preprocess_image
from infosam_hf.evaluation.loop import sam_logits
from infosam_hf.evaluation.metrics import logits_to_original
from infosam_hf.evaluation.predict import Prompt, _prompt_tensors
from infosam_hf.evaluation.tiling import predict_tiled, tiled_logit_bands
from infosam_hf.models.inference import load_for_inference
from infosam_hf.models.processor import build_sam_image_processor
from infosam_hf.models.sam import load_sam
from tests.testing_utils import TINY_SAM, perturb_trainable, student_on

ort = pytest.importorskip("onnxruntime")

STRONG = {**TINY_SAM, "initializer_range": 0.3}
STRONG16 = {**TINY_SAM, "initializer_range": 0.2, "vision_config": {**TINY_SAM["vision_config"], "patch_size": 16}}
GSAM = {"resnet_depths": [1, 1, 1], "resnet_hidden_sizes": [16, 32, 64], "resnet_embedding_size": 8,
        "resnet_weights": None}
ATOL = 2e-4  # logits of magnitude ~1-10


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _adapter(tmp_path, method, *, sam=None, options=None, **processor):
    """A saved, perturbed adapter with the processor a run would save beside it."""
    sam = sam if sam is not None else load_sam(sam_config=STRONG16, seed=0)
    model = student_on(sam, method, options or {}, tmp_path / f"{method}_base")
    perturb_trainable(model, 0.05)
    folder = tmp_path / method
    model.save_pretrained(folder)
    build_sam_image_processor(64, **processor).save_pretrained(folder)
    return folder


def _torch_logits(model, image, prompt, resize=None, **settings):
    """What ``predict_masks`` computes for one image: (C, H, W) logits at the original size."""
    size = image.shape[:2]
    pixels, reshaped = preprocess_image(Image.fromarray(image), 64, resize=resize, **settings)
    batch = {"pixel_values": pixels[None]}
    if prompt is not None and not prompt.empty:
        batch.update(_prompt_tensors([prompt], [size], 64, resize))
    with torch.no_grad():
        logits = sam_logits(model, batch)
    return logits_to_original(logits[0], logits.shape[-2:], reshaped, size).numpy()


def _export(adapter, out, capsys):
    assert export_cmd.main([str(adapter), "--onnx", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "logits" in printed and "max abs difference" in printed
    record = json.loads((out / "onnx_config.json").read_text())
    assert max(record["validation_max_abs_diff"].values()) <= 1e-4
    return record


def _predict_both(tmp_path, adapter, onnx, image, extra):
    """Masks (or class maps) of ``infosam predict`` with the adapter and with the ONNX folder."""
    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    outputs = {}
    for name, source in (("torch", ["--adapter", str(adapter)]), ("onnx", ["--onnx", str(onnx)])):
        out = tmp_path / f"pred_{name}"
        assert predict_cmd.main([*source, "--images", str(path), "--out", str(out), "--no_progress", *extra]) == 0
        written = sorted(p for p in out.glob("photo_*.png") if "overlay" not in p.name)
        assert len(written) == 1, written
        outputs[name] = np.asarray(Image.open(written[0]))
    return outputs["torch"], outputs["onnx"]


def test_dynamic_size_gsam_adapter_exports_and_predicts_like_pytorch(tmp_path, capsys):
    """G-SAM at a fixed non-square resize with its own statistics and BGR channels; the encoder graph takes any
    multiple of the patch size."""
    settings = {"resize": (64, 96), "image_mean": [0.4, 0.5, 0.6], "image_std": [0.2, 0.25, 0.3],
                "channel_order": "bgr"}
    adapter = _adapter(tmp_path, "gsam", options=GSAM, dynamic_input_size=True, **settings)
    out = tmp_path / "onnx"
    record = _export(adapter, out, capsys)
    assert record["dynamic_input_size"] and record["variant"] == "gsam" and record["input_size"] == [64, 96]
    model = load_for_inference(str(adapter))

    from infosam_hf.evaluation.onnx_predict import OnnxSamPredictor

    predictor = OnnxSamPredictor(out)
    pixels = np.random.default_rng(1).standard_normal((2, 3, 96, 128)).astype(np.float32)  # another size
    with torch.no_grad():
        expected = model.get_image_embeddings(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(predictor.image_embeddings(pixels), expected, atol=1e-4)

    image = _image(90, 150)
    torch_settings = {"mean": settings["image_mean"], "std": settings["image_std"], "channel_order": "bgr"}
    for prompt in (Prompt(box=(10, 5, 100, 70)), Prompt(points=[(40, 30), (90, 60)], labels=[1, 0])):
        expected = _torch_logits(model, image, prompt, resize=(64, 96), **torch_settings)[0]
        assert np.abs(expected).max() > 0.1
        got = predictor.predict_logits(Image.fromarray(image), box=prompt.box, points=prompt.points,
                                       labels=prompt.labels)
        np.testing.assert_allclose(got, expected, atol=ATOL)

    torch_mask, onnx_mask = _predict_both(tmp_path, adapter, out, image, ["--box", "10,5,100,70"])
    expected = _torch_logits(model, image, Prompt(box=(10, 5, 100, 70)), resize=(64, 96), **torch_settings)[0]
    assert np.abs(expected[torch_mask != onnx_mask]).max(initial=0) < ATOL  # differ only where the logit is ~0


def test_samus_adapter_exports_and_predicts_like_pytorch(tmp_path, capsys):
    adapter = _adapter(tmp_path, "samus", dynamic_input_size=True)
    out = tmp_path / "onnx"
    record = _export(adapter, out, capsys)
    assert record["variant"] == "samus" and record["input_size"] == [64, 64]
    model = load_for_inference(str(adapter))

    from infosam_hf.evaluation.onnx_predict import OnnxSamPredictor

    predictor = OnnxSamPredictor(out)
    image = _image(80, 120, seed=2)
    prompt = Prompt(points=[(60, 40)], labels=[1])
    expected = _torch_logits(model, image, prompt)[0]
    assert np.abs(expected).max() > 0.1
    got = predictor.predict_logits(Image.fromarray(image), points=prompt.points, labels=prompt.labels)
    np.testing.assert_allclose(got, expected, atol=ATOL)


@pytest.mark.parametrize("head", ["project", "gsam"])
def test_multiclass_adapter_exports_and_predicts_the_torch_class_map(head, tmp_path, capsys):
    sam = load_sam(sam_config=STRONG, seed=0, num_labels=3, multiclass_head=head)
    adapter = _adapter(tmp_path, "lora", sam=sam, options={"r": 4, "lora_alpha": 4})
    out = tmp_path / "onnx"
    record = _export(adapter, out, capsys)
    assert record["num_classes"] == 3
    model = load_for_inference(str(adapter))

    from infosam_hf.evaluation.onnx_predict import OnnxSamPredictor

    image = _image(70, 110, seed=3)
    expected = _torch_logits(model, image, None)
    got = OnnxSamPredictor(out).predict_logits(Image.fromarray(image))
    assert got.shape == expected.shape == (3, 70, 110)
    np.testing.assert_allclose(got, expected, atol=ATOL)
    torch_map, onnx_map = _predict_both(tmp_path, adapter, out, image, [])
    assert len(np.unique(torch_map)) > 1
    np.testing.assert_array_equal(onnx_map, torch_map)


def test_onnx_tiled_predict_equals_torch_tiled_predict(tmp_path, capsys):
    """A fixed-size SAM (tiles resized to its input) and a dynamic-size G-SAM (tiles at their own 96 px, not the
    model's 64) and a multi-class head: the blended logits of both backends agree."""
    from infosam_hf.convert.onnx import export_onnx
    from infosam_hf.evaluation.onnx_predict import OnnxSamPredictor

    image = _image(150, 200, seed=4)
    fixed = load_sam(sam_config=STRONG, seed=0).eval()
    gsam = student_on(load_sam(sam_config=STRONG16, seed=0), "gsam", GSAM, tmp_path / "base")
    perturb_trainable(gsam, 0.05)
    multiclass = load_sam(sam_config=STRONG, seed=0, num_labels=3).eval()
    cases = [(fixed, Prompt(box=(-10, 20, 180, 120)), 64), (gsam.eval(), Prompt(points=[(120.0, 80.0)], labels=[1]), 96),
             (multiclass, None, 64)]
    for i, (model, prompt, tile) in enumerate(cases):
        export_onnx(model, tmp_path / f"onnx{i}")
        predictor = OnnxSamPredictor(tmp_path / f"onnx{i}")
        options = {"tile": tile, "overlap": 16, "batch_size": 3}
        expected = np.concatenate([b for _, b in tiled_logit_bands(model, image, prompt, **options)], axis=1)
        got = np.concatenate([b for _, b in tiled_logit_bands(predictor, image, prompt, **options)], axis=1)
        assert np.abs(expected).max() > 0.1
        np.testing.assert_allclose(got, expected, atol=ATOL)
        if i == 2:
            np.testing.assert_array_equal(predict_tiled(predictor, image, None, tile=64, overlap=16),
                                          predict_tiled(model, image, None, tile=64, overlap=16))
    path = tmp_path / "field.png"  # the CLI: --onnx with --tile writes the mask predict_tiled gives
    Image.fromarray(image).save(path)
    assert predict_cmd.main(["--onnx", str(tmp_path / "onnx0"), "--images", str(path), "--out", str(tmp_path / "p"),
                             "--box", "-10,20,180,120", "--tile", "64", "--overlap", "16", "--no_progress"]) == 0
    mask = np.asarray(Image.open(tmp_path / "p" / "field_mask.png")) > 0
    expected = np.concatenate([b for _, b in tiled_logit_bands(fixed, image, Prompt(box=(0, 20, 180, 120)), tile=64,
                                                               overlap=16)], axis=1)[0]
    assert mask.shape == (150, 200) and mask.any()
    assert np.abs(expected[mask != (expected > 0)]).max(initial=0) < ATOL


@pytest.mark.parametrize("kind", ["sam", "gsam"])
def test_onnx_everything_mode_finds_the_torch_instances(kind, tmp_path):
    """Same masks in the same order (each at most a few pixels apart, where a logit is ~0) and the same scores
    within 1e-4, whole and tiled (a dynamic-size G-SAM: tiles at 96, not its 64); then the CLI writes the COCO
    results from the ONNX folder."""
    from infosam_hf.convert.onnx import export_onnx
    from infosam_hf.evaluation.everything import MaskGeneratorSettings, generate_masks
    from infosam_hf.evaluation.onnx_predict import OnnxSamPredictor

    if kind == "sam":
        model, tile = load_sam(sam_config=STRONG, seed=0).eval(), 64
    else:
        model, tile = student_on(load_sam(sam_config=STRONG16, seed=0), "gsam", GSAM, tmp_path / "base"), 96
        perturb_trainable(model, 0.05)
        model.eval()
    export_onnx(model, tmp_path / "onnx")
    predictor = OnnxSamPredictor(tmp_path / "onnx")
    image = _image(100, 150, seed=5)
    settings = MaskGeneratorSettings(points_per_side=4, pred_iou_thresh=-10, stability_score_thresh=0.0,
                                     box_nms_thresh=0.99)
    for options in ({}, {"tile": tile, "overlap": 16}):
        expected = generate_masks(model, image, settings, **options)
        got = generate_masks(predictor, image, settings, **options)
        assert len(expected) > 3 and len(got) == len(expected)
        for a, b in zip(expected, got):
            assert abs(a["predicted_iou"] - b["predicted_iou"]) < 1e-4
            assert (a["segmentation"] != b["segmentation"]).sum() <= 3
            assert a["crop_box"] == b["crop_box"]
    if kind == "gsam":
        return
    path = tmp_path / "a.png"
    Image.fromarray(image).save(path)
    out = tmp_path / "everything"
    assert predict_cmd.main(["--onnx", str(tmp_path / "onnx"), "--images", str(path), "--out", str(out),
                             "--everything", "--points_per_side", "4", "--pred_iou_thresh", "-10",
                             "--stability_score_thresh", "0", "--no_progress"]) == 0
    coco = json.loads((out / "everything_coco.json").read_text())
    default_nms = MaskGeneratorSettings(points_per_side=4, pred_iou_thresh=-10, stability_score_thresh=0.0)
    assert len(coco["annotations"]) == len(generate_masks(model, image, default_nms)) > 0


def test_dynamic_size_sam_at_a_resize_off_the_patch_grid_pads_as_pytorch(tmp_path, capsys):
    """A dynamic-size SAM run at ``resize`` 60x90 (not a multiple of its patch 8): PyTorch pads the input and
    crops the logits; the ONNX predictor does the same around the dynamic-size encoder graph."""
    sam = load_sam(sam_config=STRONG, seed=0, dynamic_input_size=True)
    adapter = _adapter(tmp_path, "lora", sam=sam, options={"r": 4, "lora_alpha": 4}, resize=(60, 90),
                       dynamic_input_size=True)
    out = tmp_path / "onnx"
    record = _export(adapter, out, capsys)
    assert record["pads_to_patch"] and record["input_size"] == [60, 90]
    model = load_for_inference(str(adapter))

    from infosam_hf.evaluation.onnx_predict import OnnxSamPredictor

    image = _image(100, 130, seed=6)
    prompt = Prompt(box=(20, 10, 110, 80))
    expected = _torch_logits(model, image, prompt, resize=(60, 90))[0]
    assert np.abs(expected).max() > 0.1
    got = OnnxSamPredictor(out).predict_logits(Image.fromarray(image), box=prompt.box)
    np.testing.assert_allclose(got, expected, atol=ATOL)
