"""Tiled inference, ONNX export and the ONNX predictor on tiny random SAMs."""

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
from infosam_hf.evaluation.tiling import (
    BACKGROUND_LOGIT,
    predict_tiled,
    tile_grid,
    tiled_logit_bands,
)
from infosam_hf.models.sam import load_sam
from tests.testing_utils import (
    TINY_SAM,
    perturb_trainable,
    student_on,
    tiny_sam,
    tiny_student,
)

pytest.importorskip("onnxruntime")


def _image(height, width, seed=0):
    return np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)


def _logits(model, image, prompt=None, **options):
    return np.concatenate([band for _, band in tiled_logit_bands(model, image, prompt, **options)], axis=1)


def _untiled_logits(model, image, prompt):
    """The ordinary (whole image, one forward) prediction, as ``predict_masks`` computes it."""
    pixels, reshaped = preprocess_image(Image.fromarray(image), 64)
    batch = {"pixel_values": pixels[None], **_prompt_tensors([prompt], [image.shape[:2]], 64)}
    with torch.no_grad():
        logits = sam_logits(model, batch)
    return logits_to_original(logits[0, 0], logits.shape[-2:], reshaped, image.shape[:2]).numpy()


def test_tile_grid_covers_the_image_with_the_requested_overlap():
    rows = tile_grid(150, 200, 64, 16)
    assert [row[0].y0 for row in rows] == [0, 48, 86]  # the last row aligned to the bottom edge
    assert [t.x0 for t in rows[0]] == [0, 48, 96, 136]
    covered = np.zeros((150, 200), dtype=int)
    for row in rows:
        for t in row:
            assert (t.y1 - t.y0, t.x1 - t.x0) == (64, 64)
            covered[t.y0:t.y1, t.x0:t.x1] += 1
    assert covered.min() >= 1
    assert tile_grid(40, 50, 64, 16) == [[tile_grid(40, 50, 64, 16)[0][0]]]  # a small image is one tile


def test_a_tile_holding_the_whole_object_predicts_what_the_untiled_model_does():
    model = tiny_student(0).eval()
    image = _image(150, 200)
    box = (8, 6, 40, 44)  # inside the first tile only (the next ones start at 48)
    tiled = _logits(model, image, Prompt(box=box), tile=64, overlap=16)[0]
    expected = _untiled_logits(model, image[:64, :64], Prompt(box=box))
    np.testing.assert_allclose(tiled[:64, :64], expected, atol=1e-5)
    assert (tiled[64:] == BACKGROUND_LOGIT).all() and (tiled[:, 64:] == BACKGROUND_LOGIT).all()  # untouched tiles
    mask = predict_tiled(model, image, Prompt(box=box), tile=64, overlap=16)
    assert mask.shape == (150, 200) and mask.dtype == np.uint8
    np.testing.assert_array_equal(mask[:64, :64], expected > 0)


def test_seams_leave_no_lines():
    """Across the overlap the blend moves from one tile's prediction to the other's by at most |A-B|/overlap per
    pixel on top of their own gradients; a hard cut (one tile, then the other) jumps by |A-B| and breaks that."""
    model = load_sam(sam_config={**TINY_SAM, "initializer_range": 0.3}, seed=0).eval()  # strongly varying logits
    image, overlap = _image(64, 112), 16  # two tiles: x in [0, 64) and [48, 112)
    blended = _logits(model, image, tile=64, overlap=overlap)[0]
    left = _logits(model, image[:, :64], tile=64, overlap=overlap)[0]
    right = _logits(model, image[:, 48:], tile=64, overlap=overlap)[0]
    np.testing.assert_allclose(blended[:, :48], left[:, :48], atol=1e-5)
    np.testing.assert_allclose(blended[:, 64:], right[:, 16:], atol=1e-5)

    def within_bound(result):
        ok = []
        for x in range(49, 64):
            a, b = left[:, x - 1:x + 1], right[:, x - 49:x - 47]
            own = np.maximum(np.abs(a[:, 1] - a[:, 0]), np.abs(b[:, 1] - b[:, 0]))
            bound = own + 2 * np.abs(a - b).max(1) / overlap + 1e-4
            ok.append(np.abs(result[:, x] - result[:, x - 1]) <= bound)
        return np.all(ok)

    assert within_bound(blended)
    hard_cut = np.concatenate([left[:, :56], right[:, 8:]], axis=1)
    assert not within_bound(hard_cut)


def test_dynamic_size_and_multiclass_models_tile(tmp_path):
    image = _image(100, 150)
    dynamic = load_sam(sam_config=TINY_SAM, seed=0, dynamic_input_size=True).eval()
    point = Prompt(points=[(120.0, 80.0)], labels=[1])
    logits = _logits(dynamic, image, point, tile=96, overlap=24)[0]  # tiles at 96x96, not the model's 64
    assert logits.shape == (100, 150)
    assert (logits[:, :54] == BACKGROUND_LOGIT).all()  # the tile at x < 54 holds no point: skipped
    assert (logits[:, 96:] != BACKGROUND_LOGIT).all()
    multiclass = load_sam(sam_config=TINY_SAM, seed=0, num_labels=3).eval()
    classes = predict_tiled(multiclass, image, None, tile=64, overlap=16)
    assert classes.shape == (100, 150) and set(np.unique(classes)) <= {0, 1, 2}


def _saved_adapter(tmp_path, method):
    sam = tiny_sam(0)
    student = student_on(sam, method, {"r": 4, "lora_alpha": 4} if method == "lora" else {}, base_dir=tmp_path / "base")
    perturb_trainable(student)
    student.save_pretrained(tmp_path / method)
    return student.eval(), tmp_path / method


@pytest.mark.parametrize("method", ["lora", "sam_adapter"])
def test_onnx_export_and_predict_match_pytorch(method, tmp_path, capsys):
    student, adapter = _saved_adapter(tmp_path, method)
    out = tmp_path / "onnx"
    assert export_cmd.main([str(adapter), "--onnx", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max abs difference" in printed and "logits" in printed
    record = json.loads((out / "onnx_config.json").read_text())
    assert max(record["validation_max_abs_diff"].values()) <= 1e-4

    from infosam_hf.evaluation.onnx_predict import OnnxSamPredictor

    predictor = OnnxSamPredictor(out)
    pixels = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    embeddings = predictor.image_embeddings(pixels)  # a batch of three: the batch axis is dynamic
    with torch.no_grad():
        expected = student.get_image_embeddings(torch.from_numpy(pixels)).numpy()
    np.testing.assert_allclose(embeddings, expected, atol=1e-4)
    image = _image(90, 150)
    for prompt in (Prompt(box=(10, 5, 100, 70)), Prompt(points=[(40, 30), (90, 60), (20, 80)], labels=[1, 0, 1])):
        logits = predictor.predict_logits(Image.fromarray(image), box=prompt.box, points=prompt.points,
                                          labels=prompt.labels)
        np.testing.assert_allclose(logits, _untiled_logits(student, image, prompt), atol=1e-4)

    path = tmp_path / "photo.png"
    Image.fromarray(image).save(path)
    assert predict_cmd.main(["--onnx", str(out), "--images", str(path), "--out", str(tmp_path / "pred"),
                             "--box", "10,5,100,70", "--no_progress"]) == 0
    mask = np.asarray(Image.open(tmp_path / "pred" / "photo_mask.png")) > 0
    expected = _untiled_logits(student, image, Prompt(box=(10, 5, 100, 70)))
    assert mask.shape == (90, 150)
    assert np.abs(expected[mask != (expected > 0)]).max(initial=0) < 1e-4  # differ only where the logit is ~0


def test_onnx_export_of_a_dynamic_size_model_at_a_chosen_input(tmp_path):
    from infosam_hf.evaluation.onnx_predict import OnnxSamPredictor
    from infosam_hf.convert.onnx import export_onnx

    model = load_sam(sam_config=TINY_SAM, seed=0, dynamic_input_size=True).eval()
    diffs = export_onnx(model, tmp_path / "onnx", input_size=(48, 96))
    assert max(diffs.values()) <= 1e-4
    predictor = OnnxSamPredictor(tmp_path / "onnx")
    pixels, reshaped, _ = predictor.preprocess(Image.fromarray(_image(60, 120)))
    assert pixels.shape == (1, 3, 48, 96) and reshaped == (48, 96)
    assert export_cmd.main([str(tmp_path / "missing"), "--onnx", str(tmp_path / "x")]) == 2


def test_predict_cli_tiles_large_images(tmp_path, capsys):
    _, adapter = _saved_adapter(tmp_path, "lora")
    path = tmp_path / "field.png"
    Image.fromarray(_image(130, 210)).save(path)
    out = tmp_path / "pred"
    argv = ["--adapter", str(adapter), "--images", str(path), "--out", str(out), "--box", "-20,10,150,120",
            "--tile", "64", "--overlap", "16", "--no_progress"]
    assert predict_cmd.main(argv) == 0
    assert Image.open(out / "field_mask.png").size == (210, 130)
    assert Image.open(out / "field_overlay.png").size == (210, 130)
    assert predict_cmd.main(argv[:-2] + ["64", "--no_progress"]) == 2  # --overlap 64 with --tile 64
    assert "--overlap" in capsys.readouterr().err
    assert predict_cmd.main(argv[:-3] + ["--no_progress"]) == 0  # default overlap: a quarter of a small tile


def test_box_nms_keeps_the_best_of_overlapping_boxes():
    from infosam_hf.evaluation.everything import box_nms

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30], [0, 0, 10, 9]])
    kept = box_nms(boxes, torch.tensor([0.5, 0.9, 0.3, 0.1]), 0.7)
    assert kept.tolist() == [1, 2]


def test_remove_small_regions_drops_islands_and_fills_holes():
    from infosam_hf.evaluation.everything import remove_small_regions

    mask = np.zeros((20, 20), dtype=bool)
    mask[2:12, 2:12] = True
    mask[5, 5] = False  # a one-pixel hole
    mask[16:18, 16:18] = True  # a 4-pixel island
    cleaned = remove_small_regions(mask, 5)
    expected = np.zeros((20, 20), dtype=bool)
    expected[2:12, 2:12] = True
    np.testing.assert_array_equal(cleaned, expected)
    np.testing.assert_array_equal(remove_small_regions(mask, 1), mask)


@pytest.mark.parametrize("method", ["lora", "sam_adapter"])
def test_generate_masks_on_a_loaded_adapter_whole_and_tiled(method, tmp_path):
    from infosam_hf.evaluation.everything import MaskGeneratorSettings
    from infosam_hf.models.inference import load_for_inference

    _, adapter = _saved_adapter(tmp_path, method)
    model = load_for_inference(str(adapter))
    image = _image(100, 150)
    loose = MaskGeneratorSettings(points_per_side=4, pred_iou_thresh=-10, stability_score_thresh=0.0)
    for options in ({}, {"tile": 64, "overlap": 16}):
        records = model.generate_masks(image, loose, **options)
        assert records, options
        scores = [r["predicted_iou"] for r in records]
        assert scores == sorted(scores, reverse=True)
        for record in records:
            mask = record["segmentation"]
            assert mask.shape == (100, 150) and record["area"] == mask.sum() > 0
            ys, xs = np.nonzero(mask)
            assert record["bbox"] == [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()]
            x, y, w, _ = record["crop_box"]
            assert not mask[:, :x].any() and not mask[:, x + w:].any() and not mask[:y].any()
    strict = MaskGeneratorSettings(points_per_side=4, pred_iou_thresh=10.0)
    assert model.generate_masks(image, strict) == []
    big = MaskGeneratorSettings(points_per_side=4, pred_iou_thresh=-10, stability_score_thresh=0.0,
                                min_mask_region_area=10**6)
    assert model.generate_masks(image, big) == []


def test_predict_everything_writes_instances_and_coco_json(tmp_path):
    from pycocotools.coco import COCO

    _, adapter = _saved_adapter(tmp_path, "sam_adapter")
    for name, size in (("a", (90, 120)), ("b", (70, 200))):
        Image.fromarray(_image(*size)).save(tmp_path / f"{name}.png")
    out = tmp_path / "everything"
    argv = ["--adapter", str(adapter), "--images", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "--out",
            str(out), "--everything", "--points_per_side", "4", "--pred_iou_thresh", "-10",
            "--stability_score_thresh", "0", "--tile", "64", "--overlap", "16", "--no_progress"]
    assert predict_cmd.main(argv) == 0
    coco = COCO(str(out / "everything_coco.json"))
    assert sorted(img["file_name"] for img in coco.dataset["images"]) == ["a.png", "b.png"]
    assert len(coco.getAnnIds()) > 0
    for image_id in coco.getImgIds():
        info = coco.imgs[image_id]
        ids = np.asarray(Image.open(out / info["file_name"].replace(".png", "_instances.png")))
        assert ids.shape == (info["height"], info["width"])
        assert 0 < ids.max() <= len(coco.getAnnIds(imgIds=image_id))
    assert predict_cmd.main(argv[:-1] + ["--box", "1,1,5,5", "--no_progress"]) == 2


def test_gsam_variant_tiles_segments_everything_and_exports_onnx(tmp_path, capsys):
    """G-SAM's variant (dynamic size, tokens at stride 8, logits at H/2) on tiles of its own size."""
    from infosam_hf.evaluation.everything import MaskGeneratorSettings, generate_masks

    tiny16 = {**TINY_SAM, "vision_config": {**TINY_SAM["vision_config"], "patch_size": 16}}
    gsam = {"resnet_depths": [1, 1, 1], "resnet_hidden_sizes": [16, 32, 64], "resnet_embedding_size": 8,
            "resnet_weights": None}
    model = student_on(load_sam(sam_config=tiny16, seed=0), "gsam", gsam, tmp_path / "base")
    perturb_trainable(model, 0.05)
    model.eval()
    image = _image(150, 200)
    box = Prompt(box=(10, 10, 70, 50))  # tiles start at x 0, 80, 104 and y 0, 54: only the first one holds it
    tiled = _logits(model, image, box, tile=96, overlap=16)[0]
    whole_tile = image[:96, :96]
    pixels, _ = preprocess_image(Image.fromarray(whole_tile), 96, resize=(96, 96))
    batch = {"pixel_values": pixels[None], **_prompt_tensors([box], [(96, 96)], 96, (96, 96))}
    with torch.no_grad():
        expected = sam_logits(model, batch)[0, 0].numpy()
    np.testing.assert_allclose(tiled[:96, :96], expected, atol=1e-5)
    assert (tiled[96:] == BACKGROUND_LOGIT).all()
    settings = MaskGeneratorSettings(points_per_side=3, pred_iou_thresh=-10, stability_score_thresh=0.0)
    assert all(r["segmentation"].shape == (150, 200) for r in generate_masks(model, image, settings, tile=96))
    model.save_pretrained(tmp_path / "gsam")
    assert export_cmd.main([str(tmp_path / "gsam"), "--onnx", str(tmp_path / "onnx")]) == 0  # tests/test_onnx_variants.py
    assert "logits" in capsys.readouterr().out
    assert (tmp_path / "onnx" / "decoder_multimask.onnx").is_file()
