import math

import numpy as np
import pytest
import torch
from py_sod_metrics import MAE, Emeasure, Smeasure, WeightedFmeasure

from infosam_hf.evaluation.metrics import (
    BINARY_IMAGE_KEYS,
    SegmentationMetrics,
    binary_metrics_from_logits,
    compute_binary_metrics,
    logits_to_original,
    miou_from_confusion,
)

THR = (0.1, 0.3, 0.5, 0.7, 0.9)


def _blob(h, w, cy, cx, r):
    yy, xx = np.mgrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 < r**2


def _cases():
    rng = np.random.default_rng(0)
    gt = _blob(48, 64, 20, 30, 12)
    noisy = np.clip(gt * 0.7 + rng.normal(0.15, 0.2, gt.shape), 0, 1)
    yield "noisy_blob", noisy, gt
    yield "uniform_random", rng.random((40, 33)), rng.random((40, 33)) > 0.6
    yield "shifted_blob", _blob(50, 50, 28, 24, 10) * 0.95 + 0.02, _blob(50, 50, 25, 25, 10)
    yield "soft_gt_bool", rng.random((16, 16)) ** 3, np.zeros((16, 16), bool)


def _ref_iou_dice(pred, gt, t_pred, t_gt):
    p, g = pred > t_pred, gt > t_gt
    inter, union = np.sum(p & g), np.sum(p | g)
    iou = (inter + 1e-6) / (union + 1e-6)
    dice = (2 * inter + 1e-4) / (p.sum() + g.sum() + 1e-4)
    return iou, dice


def _ref_sod(pred, gt):
    s, e, w, m = Smeasure(), Emeasure(), WeightedFmeasure(beta=0.3), MAE()
    for metric in (s, e, w, m):
        metric.step(pred, gt, normalize=False)
    return {
        "s_measure": s.get_results()["sm"],
        "e_measure": e.get_results()["em"]["adp"],
        "weighted_f_measure": w.get_results()["wfm"],
        "mae": m.get_results()["mae"],
    }


@pytest.mark.parametrize("name,prob,gt", list(_cases()))
def test_compute_binary_metrics_matches_references(name, prob, gt):
    out = compute_binary_metrics(prob, gt)
    assert set(out) == set(BINARY_IMAGE_KEYS)
    ref = [_ref_iou_dice(prob, gt, t, t) for t in THR]
    assert out["iou"] == pytest.approx(np.mean([r[0] for r in ref]), abs=1e-12)
    assert out["dice"] == pytest.approx(np.mean([r[1] for r in ref]), abs=1e-12)
    assert out["iou@0.5"] == pytest.approx(ref[2][0], abs=1e-12)
    assert out["dice@0.5"] == pytest.approx(ref[2][1], abs=1e-12)
    for k, v in _ref_sod(prob, gt).items():
        assert out[k] == pytest.approx(v, abs=1e-10), k


def test_float_gt_is_thresholded_per_threshold():
    rng = np.random.default_rng(1)
    prob, soft_gt = rng.random((30, 30)), rng.random((30, 30))
    out = compute_binary_metrics(prob, soft_gt, sod=False)
    ref = [_ref_iou_dice(prob, soft_gt, t, t) for t in THR]
    assert out["iou"] == pytest.approx(np.mean([r[0] for r in ref]), abs=1e-12)
    assert out["dice"] == pytest.approx(np.mean([r[1] for r in ref]), abs=1e-12)
    assert set(out) == {"iou", "dice", "iou@0.5", "dice@0.5"}


def test_probability_mode_from_logits_equals_sigmoid_then_metrics():
    rng = np.random.default_rng(2)
    gt = _blob(40, 50, 18, 22, 9)
    logits = (gt * 4.0 - 2.0 + rng.normal(0, 1.5, gt.shape)).astype(np.float32)
    a = binary_metrics_from_logits(logits, gt)
    b = compute_binary_metrics(torch.sigmoid(torch.from_numpy(logits)).numpy(), gt)
    for k in BINARY_IMAGE_KEYS:
        assert a[k] == pytest.approx(b[k], abs=1e-6), k


def test_official_logits_mode_by_hand():
    rng = np.random.default_rng(3)
    gt = _blob(40, 50, 20, 20, 10)
    logits = (gt * 3.0 - 1.0 + rng.normal(0, 1.0, gt.shape)).astype(np.float32)
    out = binary_metrics_from_logits(
        torch.from_numpy(logits), torch.from_numpy(gt), "official_logits"
    )
    ref = [_ref_iou_dice(logits, gt, t, t) for t in THR]  # thresholds on RAW logits
    assert out["iou"] == pytest.approx(np.mean([r[0] for r in ref]), abs=1e-12)
    assert out["dice"] == pytest.approx(np.mean([r[1] for r in ref]), abs=1e-12)
    prob = 1 / (1 + np.exp(-logits.astype(np.float64)))
    iou05, dice05 = _ref_iou_dice(prob, gt, 0.5, 0.5)
    assert out["iou@0.5"] == pytest.approx(iou05, abs=1e-12)
    assert out["dice@0.5"] == pytest.approx(dice05, abs=1e-12)
    for k, v in _ref_sod(np.clip(logits, 0, 1), gt).items():
        assert out[k] == pytest.approx(v, abs=1e-7), k
    # and the quirk genuinely differs from the probability protocol
    assert out["iou"] != pytest.approx(binary_metrics_from_logits(logits, gt)["iou"], abs=1e-3)


def test_logits_to_original_crops_padding_and_restores_size():
    # 256 padded input, image resized to 192×256 (padded at the bottom), original 300×400
    low = torch.full((1, 64, 64), -5.0)
    low[:, 48:, :] = 100.0  # padded rows in low-res space
    low[:, :48, 32:] = 5.0  # right half of the valid image is foreground
    out = logits_to_original(low, 256, (192, 256), (300, 400))
    assert out.shape == (1, 300, 400)
    assert out.max() < 50  # the padded value is gone (only bilinear blending at the edge)
    assert torch.all(out[:, :280, :195] == -5.0) and torch.all(out[:, :280, 205:] == 5.0)
    # the foreground edge lands at the middle of the original width
    assert (out[0, 100] > 0).nonzero()[0].item() == 200
    # without cropping a quarter of the image would be padding
    uncropped = logits_to_original(low, 256, (256, 256), (300, 400))
    assert (uncropped > 50).float().mean() > 0.2
    # ranks are preserved
    assert logits_to_original(low[0], 256, (192, 256), (30, 40)).shape == (30, 40)
    batched = logits_to_original(low[None], (256, 256), torch.tensor([192, 256]), [30, 40])
    assert batched.shape == (1, 1, 30, 40)


def _dataset(n=7, seed=4):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n):
        h, w = 20 + 3 * i, 30 - 2 * i
        gt = _blob(h, w, h // 2, w // 3 + i, 4 + i % 3)
        if i == 3:
            gt[:] = False
        logits = (gt * 5.0 - 2.5 + rng.normal(0, 2.0, (h, w))).astype(np.float32)
        items.append((logits, gt))
    return items


@pytest.mark.parametrize("metric_input", ["probability", "official_logits"])
def test_streaming_matches_one_shot_and_per_image(metric_input):
    data = _dataset()
    preds, gts = [d[0] for d in data], [d[1] for d in data]
    one = SegmentationMetrics(metric_input=metric_input)
    one.update(preds, gts)
    streamed = SegmentationMetrics(metric_input=metric_input)
    for lo, hi in ((0, 2), (2, 3), (3, 7)):
        streamed.update([torch.from_numpy(p) for p in preds[lo:hi]], gts[lo:hi])
    a, b = one.compute(), streamed.compute()
    assert set(a) == set(BINARY_IMAGE_KEYS) | {"miou"}
    for k in a:
        assert a[k] == pytest.approx(b[k], abs=1e-12), k
    per_image = [binary_metrics_from_logits(p, g, metric_input) for p, g in data]
    for k in BINARY_IMAGE_KEYS:
        assert a[k] == pytest.approx(np.mean([m[k] for m in per_image]), abs=1e-12), k
    # batched array input (B×1×H×W) is accepted too
    batched = SegmentationMetrics(metric_input=metric_input, sod_metrics=False)
    batched.update(np.stack([preds[0], preds[0]])[:, None], np.stack([gts[0], gts[0]]))
    assert batched.compute()["iou"] == pytest.approx(per_image[0]["iou"], abs=1e-12)
    one.reset()
    assert one.num_images == 0 and math.isnan(one.compute()["iou"])


def test_binary_miou_from_dataset_confusion():
    # image 1: tp=2 fp=1 fn=1 tn=5 ; image 2: tp=0 fp=0 fn=2 tn=2
    p1 = np.array([[1, 1, 1], [0, 0, 0], [0, 0, 0]], bool)
    g1 = np.array([[1, 1, 0], [1, 0, 0], [0, 0, 0]], bool)
    p2 = np.zeros((2, 2), bool)
    g2 = np.array([[1, 0], [1, 0]], bool)
    m = SegmentationMetrics(sod_metrics=False)
    m.update([np.where(p1, 4.0, -4.0), np.where(p2, 4.0, -4.0)], [g1, g2])
    tp, fp, fn, tn = 2, 1, 3, 7
    expected = 0.5 * (tp / (tp + fp + fn) + tn / (tn + fp + fn))
    assert np.array_equal(m.confusion, [[tn, fp], [fn, tp]])
    assert m.compute()["miou"] == pytest.approx(expected)


def test_multiclass_miou_with_ignore_index():
    gt = np.array([[0, 0, 1, 1], [2, 2, 255, 255], [0, 1, 2, 255]])
    pred = np.array([[0, 1, 1, 1], [2, 0, 2, 0], [0, 1, 1, 3]])
    # valid pixels (gt != 255): (gt, pred) pairs
    # (0,0) (0,1) (1,1) (1,1) (2,2) (2,0) (0,0) (1,1) (2,1)
    conf = np.zeros((5, 5), np.int64)
    for g, p in [(0, 0), (0, 1), (1, 1), (1, 1), (2, 2), (2, 0), (0, 0), (1, 1), (2, 1)]:
        conf[g, p] += 1
    m = SegmentationMetrics(num_labels=5, ignore_index=255)
    m.update([pred[:2], pred[2:]], [gt[:2], gt[2:]])
    assert np.array_equal(m.confusion, conf)
    out = m.compute()
    iou0 = 2 / (3 + 3 - 2)  # gt0: 3, pred0: 3 ((0,0)x2 + (2,0))
    iou1 = 3 / (3 + 5 - 3)  # gt1: 3, pred1: 5
    iou2 = 1 / (3 + 1 - 1)
    assert out["iou_class_0"] == pytest.approx(iou0)
    assert out["iou_class_1"] == pytest.approx(iou1)
    assert out["iou_class_2"] == pytest.approx(iou2)
    # class 3 is predicted on an ignored pixel only and class 4 nowhere: both absent -> NaN
    assert math.isnan(out["iou_class_3"]) and math.isnan(out["iou_class_4"])
    assert out["miou"] == pytest.approx(np.mean([iou0, iou1, iou2]))  # NaN classes left out
    assert out["pixel_accuracy"] == pytest.approx(6 / 9)
    # class logits (C×H×W, argmax) give the same matrix as label maps
    logits = np.eye(5, dtype=np.float32)[pred].transpose(2, 0, 1)
    m2 = SegmentationMetrics(num_labels=5)
    m2.update(torch.from_numpy(logits)[None], torch.from_numpy(gt)[None])
    assert np.array_equal(m2.confusion, conf)


def test_miou_from_confusion_hand_matrix():
    conf = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    out = miou_from_confusion(conf)
    assert out["iou_per_class"][0] == pytest.approx(5 / 8)
    assert out["iou_per_class"][1] == pytest.approx(3 / 6)
    assert math.isnan(out["iou_per_class"][2])
    assert out["miou"] == pytest.approx((5 / 8 + 3 / 6) / 2)
    assert out["pixel_accuracy"] == pytest.approx(8 / 11)


@pytest.mark.parametrize(
    "pred_on,gt_on,iou",
    [(False, False, 1.0), (True, False, 0.0), (False, True, 0.0), (True, True, 1.0)],
)
@pytest.mark.parametrize("metric_input", ["probability", "official_logits"])
def test_edge_cases_have_no_nan(pred_on, gt_on, iou, metric_input):
    logits = np.full((24, 24), 8.0 if pred_on else -8.0, np.float32)
    gt = np.full((24, 24), gt_on)
    out = binary_metrics_from_logits(logits, gt, metric_input)
    assert all(np.isfinite(v) for v in out.values()), out
    assert out["iou"] == pytest.approx(iou, abs=1e-6)
    assert out["dice"] == pytest.approx(iou, abs=1e-6)
    assert out["iou@0.5"] == pytest.approx(iou, abs=1e-6)
    m = SegmentationMetrics(metric_input=metric_input)
    m.update([logits], [gt])
    assert all(np.isfinite(v) for v in m.compute().values())


def test_s_measure_gt_on_last_row_is_finite():
    gt = np.zeros((10, 10), bool)
    gt[-1, -1] = True  # centroid on the last row/column -> empty quadrant upstream (NaN)
    out = compute_binary_metrics(np.full((10, 10), 0.2), gt)
    assert np.isfinite(out["s_measure"]) and 0.0 <= out["s_measure"] <= 1.0


def test_bad_inputs_raise():
    with pytest.raises(ValueError):
        SegmentationMetrics(metric_input="logits")
    with pytest.raises(ValueError):
        binary_metrics_from_logits(np.zeros((4, 4)), np.zeros((5, 4), bool))
    with pytest.raises(ValueError):
        SegmentationMetrics().update([np.zeros((4, 4))], [])
