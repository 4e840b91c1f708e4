"""End-to-end tests of scripts/eval.py and scripts/predict.py on a tiny adapter trained here."""

import json
import logging
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infosam_hf.commands import evaluate as evaluate_cli
from infosam_hf.commands import predict
from infosam_hf.errors import UsageError
from infosam_hf.evaluation import predict as predict_lib
from infosam_hf.models.inference import load_for_inference
from infosam_hf.training.run import parse_train_args, run_training
from tests.testing_utils import tiny_sam

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "recipes" / "demo.yaml")
SHARED_DATA = ROOT.parent / "shared" / "data"
FAST = ["--synthetic_num_train", "16", "--synthetic_num_eval", "4", "--synthetic_num_test", "8",
        "--per_device_train_batch_size", "4", "--per_device_eval_batch_size", "8", "--logging_steps", "1"]
METRIC_KEYS = {"iou", "dice", "iou@0.5", "dice@0.5", "s_measure", "e_measure", "weighted_f_measure", "mae", "miou"}
META_KEYS = {"num_images", "split", "adapter", "base_model", "metric_input"}
# (width, height) of the evaluation images: different sizes and aspect ratios on purpose
SIZES = [(96, 64), (150, 100), (64, 128)]


@pytest.fixture(scope="session")
def demo_adapter(tmp_path_factory):
    """A demo-recipe adapter trained for 3 steps, and its run_training results."""
    out = tmp_path_factory.mktemp("adapter") / "demo"
    argv = [DEMO, "--output_dir", str(out), "--max_steps", "3", "--eval_before_training", "false",
            "--disable_tqdm", "true", *FAST]
    results = run_training(*parse_train_args(argv))
    return out, results


def _write_pair(root: Path, name: str, size: tuple[int, int], mask_size: tuple[int, int] | None = None,
                seed: int = 0) -> tuple[str, str]:
    rng = np.random.default_rng(seed)
    width, height = size
    pixels = rng.integers(0, 60, (height, width, 3), dtype=np.uint8)
    mw, mh = mask_size or size
    mask = np.zeros((mh, mw), np.uint8)
    mask[mh // 4: 3 * mh // 4, mw // 5: 3 * mw // 5] = 255
    pixels[: min(height, mh), : min(width, mw)][mask[:height, :width] > 0] = (230, 200, 40)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(root / "images" / f"{name}.png")
    Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return f"images/{name}.png", f"masks/{name}.png"


def _write_csv(root: Path, split: str, rows: list[tuple[str, str]]) -> None:
    lines = ["image,label"] + [f"{image},{label}" for image, label in rows]
    (root / f"{split}.csv").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="session")
def csv_folder(tmp_path_factory):
    """A Conv-LoRA-style folder: images/, masks/, test.csv (image,label) with images of different sizes."""
    root = tmp_path_factory.mktemp("convlora")
    _write_csv(root, "test", [_write_pair(root, f"img{i}", size, seed=i) for i, size in enumerate(SIZES)])
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """Images for predict.py: two readable ones of different sizes and one corrupt file."""
    root = tmp_path_factory.mktemp("predict_in")
    _write_pair(root, "wide", (120, 80), seed=1)
    _write_pair(root, "tall", (60, 90), seed=2)
    (root / "images" / "broken.png").write_bytes(b"this is not a png")
    return root / "images"


def _evaluate(argv, capsys):
    status = evaluate_cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _numbers(results: dict) -> dict:
    return {key: value for key, value in results.items() if isinstance(value, float)}


# ----------------------------------------------------------------------------- evaluate.py


def test_evaluate_writes_json_next_to_the_adapter(demo_adapter, csv_folder, capsys):
    adapter, _ = demo_adapter
    status, out, err = _evaluate(["--adapter", adapter, "--dataset_name_or_path", csv_folder, "--batch_size", 2],
                                 capsys)
    assert status == 0, err
    results = json.loads((adapter / "eval_results.json").read_text())
    assert METRIC_KEYS | META_KEYS <= set(results)
    assert results["num_images"] == len(SIZES) and results["split"] == "test"
    assert results["adapter"] == str(adapter)
    assert results["base_model"] == str((adapter / "base_model").resolve())
    assert results["metric_input"] == "probability"
    assert all(math.isfinite(results[key]) for key in METRIC_KEYS)
    assert "iou@0.5" in out and "weighted_f_measure" in out  # the printed table


def test_evaluate_is_deterministic_and_follows_recipe_keys(demo_adapter, csv_folder, tmp_path, capsys):
    adapter, _ = demo_adapter
    runs = []
    for name, batch_size in (("a", 2), ("b", 2), ("c", 1)):
        output = tmp_path / f"{name}.json"
        argv = ["--adapter", adapter, "--dataset_name_or_path", csv_folder, "--output", output,
                "--batch_size", batch_size, "--metric_input", "official_logits", "--eval_prompt", "points",
                "--prompt_fg_points", "3", "--max_eval_samples", "2"]
        status, _, err = _evaluate(argv, capsys)
        assert status == 0, err
        runs.append(json.loads(output.read_text()))
    assert _numbers(runs[0]) == _numbers(runs[1])  # identical runs: identical numbers
    assert _numbers(runs[2]) == pytest.approx(_numbers(runs[0]), rel=1e-6, abs=1e-9)  # batching: float noise only
    assert runs[0]["num_images"] == 2 and runs[0]["metric_input"] == "official_logits"
    assert runs[0]["eval_prompt"] == "points"


def test_evaluate_reproduces_the_training_test_metrics(demo_adapter, tmp_path, capsys):
    adapter, results = demo_adapter
    output = tmp_path / "synthetic.json"
    status, _, err = _evaluate(["--adapter", adapter, "--recipe", DEMO, *FAST, "--output", output], capsys)
    assert status == 0, err
    evaluated = json.loads(output.read_text())
    assert evaluated["num_images"] == 8 and evaluated["dataset"] == "synthetic"
    for key in ("iou", "dice", "iou@0.5", "miou"):  # the demo recipe's metric_set: iou
        assert evaluated[key] == pytest.approx(results["test"][f"test_{key}"], abs=1e-6), key
    assert "s_measure" not in evaluated


def test_evaluate_defaults_to_the_runs_recorded_settings(demo_adapter, tmp_path, capsys):
    adapter, results = demo_adapter
    output = tmp_path / "recorded.json"
    status, _, err = _evaluate(["--adapter", adapter, "--output", output], capsys)  # no --recipe, no dataset
    assert status == 0, err
    evaluated = json.loads(output.read_text())
    assert evaluated["dataset"] == "synthetic" and evaluated["num_images"] == 8 and "s_measure" not in evaluated
    for key in ("iou", "dice", "iou@0.5", "miou"):
        assert evaluated[key] == pytest.approx(results["test"][f"test_{key}"], abs=1e-6), key


def test_evaluate_zero_shot_needs_an_output_file(demo_adapter, csv_folder, tmp_path, capsys, monkeypatch):
    adapter, _ = demo_adapter
    monkeypatch.chdir(tmp_path)
    status, _, err = _evaluate(["--adapter", "none", "--base_model", adapter / "base_model",
                                "--dataset_name_or_path", csv_folder], capsys)
    assert status == 2 and "give --output" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_evaluate_zero_shot_base(demo_adapter, csv_folder, tmp_path, capsys):
    adapter, _ = demo_adapter
    output = tmp_path / "zero_shot.json"
    status, _, err = _evaluate(["--adapter", "none", "--base_model", adapter / "base_model", "--dataset_name_or_path",
                                csv_folder, "--output", output], capsys)
    assert status == 0, err
    results = json.loads(output.read_text())
    assert results["adapter"] == "none" and results["base_model"] == str(adapter / "base_model")
    assert METRIC_KEYS <= set(results) and results["num_images"] == len(SIZES)


def test_evaluate_reports_bad_input_in_one_line(demo_adapter, csv_folder, tmp_path, capsys):
    adapter, _ = demo_adapter
    mismatched = tmp_path / "mismatched"
    _write_csv(mismatched, "test", [_write_pair(mismatched, "odd", (80, 60), mask_size=(60, 80))])
    cases = {
        "size mismatch": ["--adapter", adapter, "--dataset_name_or_path", mismatched],
        "needs --base_model": ["--adapter", "none", "--dataset_name_or_path", csv_folder],
        "not a PEFT adapter": ["--adapter", tmp_path, "--dataset_name_or_path", csv_folder],
        "split 'nope' not found": ["--adapter", adapter, "--dataset_name_or_path", csv_folder, "--split", "nope"],
        "unknown key 'eval_promt'": ["--adapter", adapter, "--dataset_name_or_path", csv_folder,
                                     "--eval_promt", "box"],
    }
    for expected, argv in cases.items():
        status, _, err = _evaluate(argv, capsys)
        assert status == 2, expected
        errors = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and expected in errors[0], err
        assert "Traceback" not in err


@pytest.mark.slow
def test_evaluate_script_base_model_mismatch(demo_adapter, csv_folder, tmp_path):
    adapter, _ = demo_adapter
    other = tmp_path / "other_base"
    tiny_sam().save_pretrained(other)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "eval.py"), "--adapter", str(adapter),
                           "--base_model", str(other), "--dataset_name_or_path", str(csv_folder)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "was trained on base model" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------- predict.py


def test_predict_writes_masks_and_overlays_and_lists_unreadable_images(demo_adapter, image_folder, tmp_path, capsys):
    adapter, _ = demo_adapter
    out = tmp_path / "pred"
    status = predict.main(["--adapter", str(adapter), "--images", str(image_folder), "--box", "10,10,50,40",
                           "--out", str(out), "--batch_size", "2", "--no_progress"])
    captured = capsys.readouterr()
    assert status == 1
    assert "broken.png" in captured.err and "could not be read" in captured.err
    for stem in ("wide", "tall"):
        original = Image.open(image_folder / f"{stem}.png")
        mask = Image.open(out / f"{stem}_mask.png")
        overlay = Image.open(out / f"{stem}_overlay.png")
        assert mask.size == overlay.size == original.size
        assert mask.mode == "L" and set(np.unique(np.asarray(mask))) <= {0, 255}
        assert overlay.mode == "RGB"
    assert not list(out.glob("broken*"))


def test_predict_points_auto_and_missing_prompt(demo_adapter, image_folder, tmp_path, capsys):
    adapter, _ = demo_adapter
    image = str(image_folder / "wide.png")
    common = ["--adapter", str(adapter), "--images", image, "--no_progress"]
    assert predict.main([*common, "--points", "30,20;5,5,0", "--out", str(tmp_path / "points")]) == 0
    assert predict.main([*common, "--auto", "--out", str(tmp_path / "auto")]) == 0
    glob_pattern = str(image_folder / "t*.png")
    assert predict.main([*common[:2], "--images", glob_pattern, "--no_progress", "--box", "1,1,20,20", "--out",
                         str(tmp_path / "glob")]) == 0
    assert sorted(p.name for p in (tmp_path / "glob").iterdir()) == ["tall_mask.png", "tall_overlay.png"]
    capsys.readouterr()
    assert predict.main([*common, "--out", str(tmp_path / "none")]) == 2
    assert "give a prompt" in capsys.readouterr().err
    assert predict.main([*common, "--box", "5,5,1,1", "--out", str(tmp_path / "bad")]) == 2
    assert "x0 < x1" in capsys.readouterr().err


def test_predict_maps_prompts_from_original_pixels(demo_adapter, image_folder, tmp_path, monkeypatch):
    adapter, _ = demo_adapter
    model = load_for_inference(str(adapter))
    seen = []

    def fake_logits(model, batch):
        seen.append(batch)
        size = batch["pixel_values"].shape[-1]
        return torch.zeros(batch["pixel_values"].shape[0], 1, size, size)

    monkeypatch.setattr(predict_lib, "sam_logits", fake_logits)
    prompt = predict_lib.Prompt(box=(12.0, 8.0, 60.0, 40.0), points=[(30.0, 20.0), (3.0, 4.0)], labels=[1, 0])
    paths = [image_folder / "wide.png", image_folder / "tall.png"]  # 120x80 and 60x90 (WxH)
    results = predict_lib.predict_masks(model, paths, prompt, tmp_path, batch_size=2, progress=False)
    assert [r.error for r in results] == [None, None]
    batch = seen[0]
    scales = torch.tensor([128 / 120, 128 / 90]).view(2, 1, 1)
    expected_boxes = torch.tensor([12.0, 8.0, 60.0, 40.0]).expand(2, 1, 4) * scales
    torch.testing.assert_close(batch["input_boxes"], expected_boxes)
    expected_points = torch.tensor([[30.0, 20.0], [3.0, 4.0]]).expand(2, 1, 2, 2) * scales.unsqueeze(-1)
    torch.testing.assert_close(batch["input_points"], expected_points)
    assert batch["input_labels"].tolist() == [[[1, 0]], [[1, 0]]]


def test_predict_several_paths_and_globs(demo_adapter, image_folder, tmp_path):
    adapter, _ = demo_adapter
    out = tmp_path / "many"
    # as after the shell expanded an unquoted glob: several files, plus a quoted glob overlapping them
    argv = ["--adapter", str(adapter), "--images", str(image_folder / "wide.png"), str(image_folder / "tall.png"),
            str(image_folder / "w*.png"), "--box", "1,1,20,20", "--out", str(out), "--no_progress"]
    assert predict.main(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["tall_mask.png", "tall_overlay.png", "wide_mask.png",
                                                    "wide_overlay.png"]
    assert predict_lib.find_images([str(image_folder / "w*.png"), str(image_folder / "wide.png")]) == [
        image_folder / "wide.png"]
    with pytest.raises(UsageError, match="nothing.png: no such file or folder"):
        predict_lib.find_images([str(image_folder / "wide.png"), str(image_folder / "nothing.png")])


def test_predict_boxes_outside_the_image(demo_adapter, image_folder, tmp_path, monkeypatch, capsys, caplog):
    adapter, _ = demo_adapter
    wide = str(image_folder / "wide.png")  # 120x80 (WxH)
    common = ["--adapter", str(adapter), "--images", wide, "--no_progress"]
    seen = []
    real_logits = predict_lib.sam_logits

    def recording_logits(model, batch):
        seen.append(batch)
        return real_logits(model, batch)

    monkeypatch.setattr(predict_lib, "sam_logits", recording_logits)
    # negative coordinates, with and without '=': partly outside, so clipped with a warning naming the image
    for box in (["--box", "-50,-50,50,50"], ["--box=-50,-50,50,50"]):
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            assert predict.main([*common, *box, "--out", str(tmp_path / "clipped")]) == 0, capsys.readouterr().err
        warnings = [r.getMessage() for r in caplog.records if "clipped" in r.getMessage()]
        assert len(warnings) == 1 and "wide.png" in warnings[0] and "120x80" in warnings[0], warnings
    torch.testing.assert_close(seen[-1]["input_boxes"], torch.tensor([[[0.0, 0.0, 50.0, 50.0]]]) * (128 / 120))
    assert predict.main([*common, "--points", "-1,5", "--out", str(tmp_path / "point")]) == 2
    assert "the point -1,5 lies outside image" in capsys.readouterr().err

    def no_model(*args, **kwargs):
        pytest.fail("the model was loaded for a box outside the image")

    from infosam_hf.models import inference

    monkeypatch.setattr(inference, "load_for_inference", no_model)  # the command imports it once the options pass
    assert predict.main([*common, "--box", "500,500,900,900", "--out", str(tmp_path / "outside")]) == 2
    err = capsys.readouterr().err
    assert "--box 500,500,900,900 lies entirely outside image" in err and "wide.png (120x80, WxH)" in err
    assert not (tmp_path / "outside").exists()


def test_prompt_parsing():
    assert predict_lib.parse_box("1, 2,30.5,40") == (1.0, 2.0, 30.5, 40.0)
    assert predict_lib.parse_points("1,2; 3,4,0;") == ([(1.0, 2.0), (3.0, 4.0)], [1, 0])
    for bad in ("1,2,3", "a,b,c,d", "5,5,5,9"):
        with pytest.raises(UsageError):
            predict_lib.parse_box(bad)
    for bad in ("1", "1,2,5", ""):
        with pytest.raises(UsageError):
            predict_lib.parse_points(bad)
    np.testing.assert_allclose(predict_lib.scale_to_input([[100, 50]], (200, 400), 1024), [[256, 128]])


# ----------------------------------------------------------------------------- real data (optional)


@pytest.mark.skipif(not (SHARED_DATA / "kvasir_seg").is_dir(), reason=f"{SHARED_DATA / 'kvasir_seg'} not present")
def test_kvasir_subset(demo_adapter, tmp_path, capsys):
    adapter, _ = demo_adapter
    kvasir = SHARED_DATA / "kvasir_seg"
    split = "test" if (kvasir / "test.csv").is_file() else "train"  # an images/ + masks/ folder is one 'train' split
    output = tmp_path / "kvasir.json"
    status, _, err = _evaluate(["--adapter", adapter, "--dataset_name_or_path", kvasir, "--split", split,
                                "--max_eval_samples", 3, "--metric_input", "official_logits", "--output", output],
                               capsys)
    assert status == 0, err
    results = json.loads(output.read_text())
    assert results["num_images"] == 3 and METRIC_KEYS <= set(results)
    image = sorted((kvasir / "images").iterdir())[0]
    assert predict.main(["--adapter", str(adapter), "--images", str(image), "--box", "60,60,200,200", "--out",
                         str(tmp_path / "pred"), "--no_progress"]) == 0
    assert Image.open(tmp_path / "pred" / f"{image.stem}_overlay.png").size == Image.open(image).size
