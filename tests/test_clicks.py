"""Corrective-click simulation and click-by-click evaluation (``infosam evaluate --clicks N``)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from infosam_hf.data import DataArguments, SamPromptCollator, open_source, with_sam_transform
from infosam_hf.evaluation.click_eval import click_curves, evaluate_clicks
from infosam_hf.evaluation.clicks import click_metrics_summary, next_click, number_of_clicks
from tests.testing_utils import tiny_student


def test_first_click_is_the_object_interior():
    gt = np.zeros((20, 30), bool)
    gt[4:15, 10:21] = True  # 11x11 square: its centre is (15, 9)
    assert next_click(np.zeros_like(gt), gt) == (15, 9, True)


def test_click_goes_to_the_larger_error_and_image_border_counts():
    gt = np.zeros((40, 40), bool)
    gt[5:10, 5:10] = True  # a small missed square
    pred = gt.copy()
    pred[20:40, 20:40] = True  # a large false positive touching the image corner
    x, y, positive = next_click(pred, gt)
    assert not positive and pred[y, x] and not gt[y, x]
    assert (x, y) == (29, 29)  # farthest from the region's border, the image border included
    pred[20:40, 20:40] = False
    pred[5:10, 5:10] = False
    assert next_click(pred, gt) == (7, 7, True)
    assert next_click(gt, gt) is None


def test_noc_counts_a_never_reached_threshold_as_the_cap():
    assert number_of_clicks([0.5, 0.86, 0.95], 0.85) == 2
    assert number_of_clicks([0.5, 0.86, 0.89], 0.90) == 3  # capped: a failure
    summary = click_metrics_summary(np.array([[0.5, 0.86, 0.95], [0.1, 0.2, 0.3]]), np.zeros((2, 3)))
    assert summary["noc@85"] == pytest.approx((2 + 3) / 2)
    assert summary["noc@90"] == pytest.approx((3 + 3) / 2)
    assert summary["noc_failures@90"] == pytest.approx(0.5)
    assert summary["click_iou"] == pytest.approx([0.3, 0.53, 0.625])


@pytest.fixture(scope="module")
def dataset():
    args = DataArguments(dataset_name_or_path="synthetic", synthetic_num_test=5, synthetic_image_size=64,
                         eval_prompt="box")
    return with_sam_transform(open_source(args).get_split("test"), args, image_size=64, train=False)


def _model():
    model = tiny_student(seed=1).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():  # large random weights, so that every click changes the mask
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=g) * 0.2)
    return model


def _loader(dataset, batch_size):
    return torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=SamPromptCollator())


def test_click_scores_equal_at_any_batch_size(dataset):
    model = _model()
    per_image = [click_curves(model, batch, 4) for batch in _loader(dataset, 1)]
    clicks = [c for _, _, row in per_image for c in row]
    assert all(len(row) == 4 for row in clicks)
    assert any(not c[2] for row in clicks for c in row[1:])  # negative corrective clicks do happen
    reference = evaluate_clicks(model, _loader(dataset, 1), 4)
    assert reference["click_images"] == 5 and len(reference["click_iou"]) == 4
    for batch_size in (2, 5):
        batched = [c for batch in _loader(dataset, batch_size) for c in click_curves(model, batch, 4)[2]]
        assert batched == clicks, batch_size
        scores = evaluate_clicks(model, _loader(dataset, batch_size), 4)
        assert scores.keys() == reference.keys()
        for key in ("click_iou", "click_dice", "noc@85", "noc@90"):
            assert scores[key] == pytest.approx(reference[key], abs=1e-9), (batch_size, key)


def test_evaluate_command_reports_clicks(tmp_path, dataset):
    from infosam_hf.commands.evaluate import main

    model = tiny_student(seed=0)
    adapter = tmp_path / "adapter"
    base = tmp_path / "base"
    model.get_base_model().save_pretrained(base)
    model.peft_config["default"].base_model_name_or_path = str(base)
    model.save_pretrained(adapter)
    output = tmp_path / "results" / "eval.json"
    assert main(["--adapter", str(adapter), "--dataset_name_or_path", "synthetic", "--synthetic_num_test", "3",
                 "--synthetic_image_size", "64", "--clicks", "3", "--output", str(output), "--metric_set", "iou",
                 "--disable_tqdm", "true"]) == 0
    results = json.loads(output.read_text())
    assert len(results["click_iou"]) == 3 and results["click_images"] == 3
    assert 1 <= results["noc@85"] <= 3 and 1 <= results["noc@90"] <= 3
    assert (output.parent / "click_curve.png").stat().st_size > 1000
    assert main(["--adapter", str(adapter), "--dataset_name_or_path", "synthetic", "--clicks", "-1",
                 "--output", str(output)]) == 2


def test_click_metric_names_are_recognised():
    from infosam_hf.evaluation.click_eval import flat_click_metrics
    from infosam_hf.evaluation.clicks import is_click_metric

    flat = flat_click_metrics({"click_iou": [0.5, 0.7], "click_dice": [0.6, 0.8], "noc@85": 2.0, "noc@90": 2.0,
                               "noc_failures@85": 1.0, "noc_failures@90": 1.0, "num_clicks": 2, "click_images": 1},
                              "test")
    assert flat["test_click_iou_2"] == 0.7 and flat["test_click_dice_1"] == 0.6 and "test_num_clicks" not in flat
    assert all(is_click_metric(key, "test_") for key in flat)
    assert not any(is_click_metric(key, "test_") for key in ("test_iou", "test_dice", "test_miou", "test_loss"))
