"""One adapter, four ways to load it, identical masks; the model card's snippet runs as printed."""

import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infosam_hf.data.transforms import preprocess_image
from infosam_hf.hub import write_model_card
from infosam_hf.models.inference import load_for_inference, record_base_beside, run_input_settings
from infosam_hf.models.processor import InfoSamImageProcessor, build_sam_image_processor, read_input_settings
from infosam_hf.training.host import fit_dataloader_to_host
from tests.testing_utils import perturb_trainable, student_on, tiny_sam

ROOT = Path(__file__).resolve().parents[1]
BASE_ID, REVISION = "infosam-test/tiny-sam", "0123456789abcdef0123456789abcdef01234567"
KINDS = {  # the official-preprocessing (BGR) adapter with the paper's tuner, and a dynamic-size G-SAM-style one
    "official": ("sam_adapter", {"block_indices": [1]}, {"preprocessing": "official"}),
    "dynamic": ("lora", {"r": 4, "lora_alpha": 4, "target_modules": ["qkv"]},
                {"resize": [48, 80], "dynamic_input_size": True}),
}

# Each way: load, prepare the image with the processor saved beside the adapter, predict one box.
LOAD_FOUR_WAYS = r"""
import json, sys, torch
import numpy as np
from PIL import Image
import infosam_hf  # registers the SAM tuners with peft
from peft import AutoPeftModel
from transformers import SamProcessor
from infosam_hf.data.transforms import preprocess_image
from infosam_hf.models import enable_dynamic_input_size, load_for_inference
from infosam_hf.models.inference import run_input_settings

image = Image.open(sys.argv[1]).convert("RGB")
out = {}
for way, ref in json.loads(sys.argv[2]).items():
    if way == "auto_peft_model":
        model = AutoPeftModel.from_pretrained(ref).eval()
        if SamProcessor.from_pretrained(ref).image_processor.dynamic_input_size:
            enable_dynamic_input_size(model.get_base_model())
    else:
        model = load_for_inference(ref)
    processor = SamProcessor.from_pretrained(ref)
    inputs = processor(images=image, input_boxes=[[[8.0, 6.0, 52.0, 40.0]]], return_tensors="pt")
    settings = run_input_settings(ref)  # what infosam predict feeds the model
    pixels, _ = preprocess_image(image, processor.image_processor.image_size, mean=settings.get("image_mean"),
                                 std=settings.get("image_std"), resize=settings.get("resize"),
                                 preprocessing=settings.get("preprocessing", "sam"))
    with torch.no_grad():
        masks = model(pixel_values=inputs["pixel_values"], input_boxes=inputs["input_boxes"].float(),
                      multimask_output=False).pred_masks
    out[way] = {"masks": masks.flatten().tolist(), "shape": list(inputs["pixel_values"].shape),
                "same_as_predict": bool(torch.equal(pixels, inputs["pixel_values"][0]))}
print(json.dumps(out))
"""


def _hub_snapshot(cache: Path, repo_id: str, files_from: Path) -> Path:
    """``files_from``'s files in the HF cache layout of ``repo_id`` at ``REVISION`` (what a download leaves)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = repo / "snapshots" / REVISION
    shutil.copytree(files_from, snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    return snapshot


def _save_adapter(folder: Path, base_dir: Path, kind: str) -> None:
    method, options, inputs = KINDS[kind]
    sam = tiny_sam(seed=3)
    student = student_on(sam, method, options, base_dir=base_dir)
    perturb_trainable(student)
    student.save_pretrained(folder)
    config = json.loads((folder / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = BASE_ID  # trained on a Hub checkpoint
    (folder / "adapter_config.json").write_text(json.dumps(config))
    build_sam_image_processor(64, **inputs).save_pretrained(folder)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(KINDS))
def test_one_adapter_four_ways_identical_masks(kind, tmp_path):
    hub_cache = tmp_path / "hf" / "hub"
    base_dir = tmp_path / "base"
    adapter = tmp_path / "runs" / kind
    _save_adapter(adapter, base_dir, kind)
    _hub_snapshot(hub_cache, BASE_ID, base_dir)
    _hub_snapshot(hub_cache, f"infosam-test/{kind}-adapter", adapter)
    moved = tmp_path / "copied" / "elsewhere"
    shutil.copytree(adapter, moved)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (45, 60, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    ways = {"local": str(adapter), "moved": str(moved), "hub_cache": f"infosam-test/{kind}-adapter",
            "auto_peft_model": str(adapter)}
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"),
           "HF_HUB_CACHE": str(hub_cache), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", LOAD_FOUR_WAYS, str(tmp_path / "x.png"), json.dumps(ways)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = [1, 3, 48, 80] if kind == "dynamic" else [1, 3, 64, 64]
    for way, result in out.items():
        assert result["shape"] == expected, way
        assert result["same_as_predict"], way  # SamProcessor feeds what infosam predict feeds
        assert result["masks"] == out["local"]["masks"], way
    # the adapter changes the prediction: a base without it (or with default pre-processing) would differ
    with torch.no_grad():
        base = load_for_inference("none", base_model=str(base_dir))
        if kind == "dynamic":
            from infosam_hf.models import enable_dynamic_input_size
            enable_dynamic_input_size(base)
        pixel_values = torch.from_numpy(np.zeros(expected, dtype=np.float32))
        assert base(pixel_values=pixel_values, input_boxes=torch.tensor([[[8.0, 6.0, 52.0, 40.0]]]),
                    multimask_output=False).pred_masks.numel() == len(out["local"]["masks"])


def test_the_processor_reproduces_the_training_pixels_for_each_setting():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (50, 70, 3), dtype=np.uint8))
    for inputs in ({}, {"preprocessing": "official"}, {"resize": [48, 80]},
                   {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]}):
        processor = build_sam_image_processor(64, **inputs)
        reference, size = preprocess_image(image, 64, mean=inputs.get("image_mean"), std=inputs.get("image_std"),
                                           resize=inputs.get("resize"), preprocessing=inputs.get("preprocessing", "sam"))
        encoded = processor(images=image, return_tensors="pt")
        assert torch.equal(encoded["pixel_values"][0], reference), inputs
        assert encoded["reshaped_input_sizes"][0].tolist() == list(size)
    assert build_sam_image_processor(64, preprocessing="official").channel_order == "BGR"
    with pytest.raises(ValueError, match="preprocessing='bgr'"):
        InfoSamImageProcessor(preprocessing="bgr")


def test_an_old_folder_with_only_run_args_is_read_with_a_deprecation_line(tmp_path, caplog):
    (tmp_path / "run_args.json").write_text(json.dumps({"data": {"preprocessing": "official", "resize": [32, 48]},
                                                        "model": {"dynamic_input_size": True}}))
    with caplog.at_level("WARNING"):
        settings = read_input_settings(str(tmp_path))
    assert settings["preprocessing"] == "official" and settings["resize"] == [32, 48]
    assert settings["dynamic_input_size"] is True
    assert "deprecated" in caplog.text
    # the saved processor wins over run_args.json
    build_sam_image_processor(64).save_pretrained(tmp_path)
    assert run_input_settings(str(tmp_path)) == {"preprocessing": "sam", "channel_order": "rgb"}


def test_saved_adapters_record_their_own_base_folder_relative(tmp_path, monkeypatch):
    run = tmp_path / "run"
    (run / "base_model").mkdir(parents=True)
    for folder in (run, run / "epoch_3"):
        folder.mkdir(exist_ok=True)
        (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(run / "base_model")}))
        record_base_beside(folder, run)
        assert json.loads((folder / "adapter_config.json").read_text())["base_model_name_or_path"] == "base_model"
    (run / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": "facebook/sam-vit-base"}))
    record_base_beside(run)
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == "facebook/sam-vit-base"
    assert not list(run.glob(".*tmp"))
    # a run started with a relative output_dir records the path as given: AutoPeftModel works from where it ran
    monkeypatch.chdir(tmp_path)
    (run / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(run / "base_model")}))
    record_base_beside(run, "run")
    assert json.loads((run / "adapter_config.json").read_text())["base_model_name_or_path"] == "run/base_model"


def test_a_moved_random_base_run_loads_from_anywhere(tmp_path, monkeypatch):
    run = tmp_path / "run"
    sam = tiny_sam(seed=5)
    student = student_on(sam, "lora", {"r": 4, "lora_alpha": 4, "target_modules": ["qkv"]},
                         base_dir=run / "base_model")
    perturb_trainable(student)
    student.save_pretrained(run)
    record_base_beside(run)
    build_sam_image_processor(64).save_pretrained(run)
    moved = tmp_path / "a" / "b"
    shutil.move(str(run), str(moved))
    other = tmp_path / "cwd"
    (other / "base_model").mkdir(parents=True)  # a decoy: the current folder's base_model/ must not be used
    monkeypatch.chdir(other)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = load_for_inference(str(moved))
    assert not [w for w in caught if "is_gradient_checkpointing" in str(w.message)]  # silenced where we wrap
    pixels, box = torch.randn(1, 3, 64, 64), torch.tensor([[[5.0, 5.0, 40.0, 40.0]]])
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=pixels, input_boxes=box, multimask_output=False).pred_masks,
                                   student.eval()(pixel_values=pixels, input_boxes=box,
                                                  multimask_output=False).pred_masks)


@pytest.mark.slow
def test_the_model_card_snippet_runs_as_printed(tmp_path):
    adapter = tmp_path / "run"
    sam = tiny_sam(seed=4)
    student = student_on(sam, "sam_adapter", {"block_indices": [1]}, base_dir=adapter / "base_model")
    perturb_trainable(student)
    student.save_pretrained(adapter)
    record_base_beside(adapter)
    build_sam_image_processor(64, preprocessing="official").save_pretrained(adapter)
    (adapter / "run_args.json").write_text(json.dumps({"peft": {"peft_method": "sam_adapter"}}))
    card = write_model_card(adapter).read_text()
    code = re.search(r"## How to use.*?```python\n(.*?)```", card, re.S).group(1)
    assert "import infosam_hf  # registers the SAM tuners with peft" in code
    Image.fromarray(np.random.default_rng(2).integers(0, 255, (60, 100, 3), dtype=np.uint8)).save(tmp_path / "image.png")
    script = code + "\nimport json; print(json.dumps([list(masks[0].shape), float(masks[0].float().mean())]))\n"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shape, _ = json.loads(proc.stdout.strip().splitlines()[-1])
    assert shape == [1, 1, 60, 100]


def test_dataloader_settings_fit_the_host():
    class Args:
        dataloader_pin_memory, use_cpu, dataloader_num_workers = True, True, 10_000

    args = Args()
    fit_dataloader_to_host(args)
    assert args.dataloader_pin_memory is False
    assert 1 <= args.dataloader_num_workers < 10_000


def test_class_names_from_recipe_classes_txt_or_classlabel(tmp_path):
    from datasets import ClassLabel, Dataset, Features

    from infosam_hf.data import DataArguments
    from infosam_hf.data.class_names import class_label, parse_classes_file, resolve_class_names

    (tmp_path / "classes.txt").write_text("0\tSky\n1\tBuilding\n2\tRoad\n3\tUnlabelled/void\n")
    data = DataArguments(dataset_name_or_path=str(tmp_path), num_labels=3)
    assert resolve_class_names(data) == ["Sky", "Building", "Road"]  # the trailing ignore class dropped
    assert resolve_class_names(DataArguments(dataset_name_or_path=str(tmp_path), num_labels=3,
                                             class_names=["a", "b", "c"])) == ["a", "b", "c"]
    with pytest.raises(ValueError, match="classes.txt: 4 class names for num_labels=5"):
        resolve_class_names(DataArguments(dataset_name_or_path=str(tmp_path), num_labels=5))
    (tmp_path / "bad.txt").write_text("0 a\n2 b\n")
    with pytest.raises(ValueError, match="bad.txt:2: class id 2 out of order"):
        parse_classes_file(tmp_path / "bad.txt")
    split = Dataset.from_dict({"label": [0, 1]}, features=Features({"label": ClassLabel(names=["bg", "leaf"])}))
    assert resolve_class_names(DataArguments(dataset_name_or_path="user/leaves", num_labels=2), split) == ["bg", "leaf"]
    assert resolve_class_names(DataArguments(dataset_name_or_path="user/leaves", num_labels=1), split) is None
    assert class_label(2, ["Sky", "Building", "Road"]) == "2 Road" and class_label(2, None) == "class 2"
    camvid = Path("/work/shared/data/camvid/classes.txt")
    if camvid.is_file():
        assert parse_classes_file(camvid)[:2] == ["Sky", "Building"]


def test_multiclass_outputs_name_their_classes_and_colour_a_real_class_0(tmp_path):
    from infosam_hf.evaluation.class_map import class_legend, class_map_image, overlay_class_map

    labels = np.zeros((40, 60), np.int64)
    labels[10:30, 20:50] = 2
    image = Image.new("RGB", (60, 40), (128, 128, 128))
    background = overlay_class_map(image, labels, background=0)
    assert np.asarray(background)[35, 5].tolist() == [128, 128, 128]  # background is not tinted
    names = ["Sky", "Building", "Road"]
    real = overlay_class_map(image, labels, class_names=names)
    assert np.asarray(real)[35, 55].tolist() != [128, 128, 128]  # Sky (class 0) gets a colour
    assert np.asarray(real)[2:10, 2:10].min() < 50  # the legend box
    legend = class_legend(names, 3)
    assert [entry["name"] for entry in legend] == names and legend[0]["color"] != [0, 0, 0]
    assert class_legend(None, 2)[0]["color"] == [0, 0, 0]
    palette = class_map_image(labels, names).getpalette()[:3]
    assert palette == legend[0]["color"]
