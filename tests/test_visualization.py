"""Overlays (PIL/numpy) and the training-curves plot / callback."""

import logging
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from infosam_hf import InfoSAMConfig, InfoSAMTrainer
from infosam_hf.data import DataArguments
from infosam_hf.data import build_datasets
from infosam_hf.evaluation.visualization import (BOX_COLOR, CURVES_FILENAME, MASK_COLOR, POINT_COLORS, TrainingCurvesCallback,
                                      mask_contour, overlay_mask, plot_training_curves)
from tests.testing_utils import HISTORY, tiny_student

def test_mask_contour_is_the_inner_boundary():
    mask = np.zeros((10, 12), bool)
    mask[2:7, 3:9] = True
    contour = mask_contour(mask)
    inner = np.zeros_like(mask)
    inner[3:6, 4:8] = True
    assert (contour == (mask & ~inner)).all()
    full = np.ones((5, 5), bool)  # touching the border: the border pixels are the contour
    assert mask_contour(full).sum() == 16 and not mask_contour(full)[2, 2]
    assert not mask_contour(np.zeros((4, 4), bool)).any()


def test_overlay_draws_mask_contour_and_prompts():
    image = np.full((60, 80, 3), 100, np.uint8)
    mask = np.zeros((60, 80), bool)
    mask[10:40, 10:50] = True
    out = overlay_mask(Image.fromarray(image), mask, box=(5, 5, 55, 45), points=[(20, 20), (70, 50)],
                       point_labels=[1, 0])
    pixels = np.asarray(out)
    assert out.size == (80, 60) and out.mode == "RGB"
    assert tuple(pixels[25, 30]) != (100, 100, 100)  # tinted inside the mask
    expected = [0.55 * 100 + 0.45 * c for c in MASK_COLOR]  # PIL's blend truncates: within one level
    assert np.abs(pixels[25, 30].astype(float) - expected).max() <= 1
    assert tuple(pixels[10, 30]) == MASK_COLOR  # contour
    assert tuple(pixels[52, 30]) == (100, 100, 100)  # untouched background
    assert tuple(pixels[45, 30]) == BOX_COLOR  # box's bottom edge
    assert tuple(pixels[20, 20]) == POINT_COLORS[1] and tuple(pixels[50, 70]) == POINT_COLORS[0]
    # numpy input and 0/255 masks work too; the input image is not modified
    again = overlay_mask(image, mask.astype(np.uint8) * 255)
    assert np.asarray(again)[25, 30].tolist() == pixels[25, 30].tolist() and (image == 100).all()
    with pytest.raises(ValueError, match="mask shape"):
        overlay_mask(image, mask.T)


def test_plot_training_curves_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    path = plot_training_curves(HISTORY, tmp_path / "sub" / "curves.png")
    assert path == tmp_path / "sub" / "curves.png"
    with Image.open(path) as picture:
        assert picture.format == "PNG" and picture.width > picture.height > 100


def test_plot_training_curves_skips_without_matplotlib_or_data(tmp_path, monkeypatch, caplog):
    pytest.importorskip("matplotlib")  # so that the blocked import below is what makes it skip
    caplog.set_level(logging.WARNING)
    monkeypatch.setitem(sys.modules, "matplotlib.backends.backend_agg", None)  # import now raises ImportError
    assert plot_training_curves(HISTORY, tmp_path / "a.png") is None
    assert "matplotlib is not installed" in caplog.text and not (tmp_path / "a.png").exists()
    monkeypatch.undo()
    assert plot_training_curves([{"step": 1, "train_runtime": 3.0}], tmp_path / "b.png") is None
    assert not (tmp_path / "b.png").exists()


def test_callback_plots_on_the_main_process_only(tmp_path):
    pytest.importorskip("matplotlib")
    for main_process, name in ((True, "main"), (False, "other")):
        args = SimpleNamespace(output_dir=str(tmp_path / name))
        state = SimpleNamespace(log_history=HISTORY, is_world_process_zero=main_process)
        callback = TrainingCurvesCallback()
        callback.on_evaluate(args, state, None)  # before training ends: nothing
        assert not (tmp_path / name / CURVES_FILENAME).exists()
        callback.on_train_end(args, state, None)
        assert (tmp_path / name / CURVES_FILENAME).exists() == main_process


def test_callback_in_a_training_run(tmp_path):
    pytest.importorskip("matplotlib")
    data_args = DataArguments(dataset_name_or_path="synthetic", synthetic_num_train=8, synthetic_num_eval=4,
                              synthetic_num_test=4, synthetic_image_size=64, train_prompt="box")
    splits = build_datasets(data_args, image_size=64, seed=0)
    args = InfoSAMConfig(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, logging_steps=1,
                         save_strategy="no", report_to="none", use_cpu=True, disable_tqdm=True, metric_set="iou")
    callback = TrainingCurvesCallback()
    trainer = InfoSAMTrainer(model=tiny_student(), args=args, train_dataset=splits.train, callbacks=[callback])
    trainer.train()
    path = Path(tmp_path) / CURVES_FILENAME
    assert callback.path == path and path.is_file()
    before = path.stat().st_mtime_ns
    trainer.evaluate(splits.test, metric_key_prefix="test")  # a post-training evaluation redraws it
    assert path.stat().st_mtime_ns >= before
    assert any("test_iou" in entry for entry in trainer.state.log_history)


def test_callback_draws_before_during_and_after_training(tmp_path, monkeypatch):
    from infosam_hf.evaluation import visualization

    drawn = []
    monkeypatch.setattr(visualization, "plot_training_curves", lambda history, path: drawn.append(list(history)))
    args = SimpleNamespace(output_dir=str(tmp_path))
    callback = TrainingCurvesCallback()
    # the evaluation before training: Trainer.train() starts a fresh state, so only the callback keeps it
    callback.on_evaluate(args, SimpleNamespace(log_history=[], is_world_process_zero=True), None,
                         metrics={"test_iou": 0.1})
    state = SimpleNamespace(log_history=[], is_world_process_zero=True)
    callback.on_train_begin(args, state, None)
    state.log_history += [{"step": 5, "eval_iou": 0.5}, {"step": 10, "loss": 0.3}]
    callback.on_train_end(args, state, None)
    state.log_history.append({"step": 10, "test_iou": 0.8})
    callback.on_evaluate(args, state, None, metrics={"test_iou": 0.8})
    history = drawn[-1]
    assert [(e["step"], e["test_iou"]) for e in history if "test_iou" in e] == [(0, 0.1), (10, 0.8)]
    assert [(e["step"], e["eval_iou"]) for e in history if "eval_iou" in e] == [(5, 0.5)]


def test_large_image_outline_is_downsampled_but_stays_on_the_boundary():
    mask = np.zeros((1200, 1600), bool)
    mask[200:1000, 300:1300] = True
    contour = mask_contour(mask, 4)  # the stroke of a 1600 px image
    assert contour[200, 800] and contour[600, 300] and contour[999, 800] and not contour[600, 800]
    assert not (contour & ~mask).any() and contour[190:215, 800].sum() <= 8
