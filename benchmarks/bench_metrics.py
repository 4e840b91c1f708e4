"""Time the streamed InfoSAM metrics against `evaluate`'s mean_iou (or a numpy re-implementation).

Usage: OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 python benchmarks/bench_metrics.py
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from infosam_hf.evaluation.metrics import SegmentationMetrics  # noqa: E402
from infosam_hf.remote import hub_unreachable_reason  # noqa: E402

CASES = ((64, 256), (16, 1024))
REPEATS = 3


def make_data(n, size, seed=0):
    """Noisy circular blobs: float32 logits and bool GT masks."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    logits, gts = [], []
    for _ in range(n):
        cy, cx = rng.uniform(0.3, 0.7, 2) * size
        r = rng.uniform(0.1, 0.3) * size
        gt = (yy - cy) ** 2 + (xx - cx) ** 2 < r**2
        logits.append((gt * 4.0 - 2.0 + rng.normal(0, 2.0, gt.shape)).astype(np.float32))
        gts.append(gt)
    return logits, gts


def reference_mean_iou(pred_labels, labels, num_labels=2, ignore_index=255):
    """evaluate's mean_iou algorithm: per-image masked histograms of intersect / pred / label."""

    def hist(x):
        return np.histogram(x, bins=num_labels, range=(0, num_labels - 1))[0]

    total = np.zeros((3, num_labels), np.int64)
    for pred, label in zip(pred_labels, labels):
        mask = label != ignore_index
        pred, label = pred[mask], label[mask]
        inter = pred[pred == label]
        total += np.stack([hist(inter), hist(pred), hist(label)])
    union = total[1] + total[2] - total[0]
    iou = total[0] / union
    return {"mean_iou": float(np.nanmean(iou)), "overall_accuracy": total[0].sum() / total[2].sum()}


def try_load_evaluate(timeout_s=60.0):
    """Return (metric, None) or (None, reason); never blocks longer than ``timeout_s``."""
    unreachable = hub_unreachable_reason()
    if unreachable:  # evaluate.load would retry the Hub for about a minute
        return None, f"the Hub is unreachable ({unreachable})"
    result = {}

    def target():
        try:
            import evaluate

            result["metric"] = evaluate.load("mean_iou")
        except Exception as exc:  # offline Hub, missing cache, ...
            result["error"] = f"{type(exc).__name__}: {str(exc)[:160]}"

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        return None, f"timed out after {timeout_s:.0f}s"
    return result.get("metric"), result.get("error")


def best_time(fn):
    fn()  # warm-up
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times) * 1e3


def ours(logits, gts, sod):
    m = SegmentationMetrics(num_labels=1, sod_metrics=sod)
    m.update(logits, gts)
    return m.compute()


def main(argv=None):
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(argv)
    metric, error = try_load_evaluate()
    if metric is None:
        print(f"evaluate.load('mean_iou') unavailable ({error})")
        print("-> reference = numpy re-implementation of evaluate's mean_iou algorithm")
    print("reference is given precomputed label maps (logits > 0); ours starts from float logits")
    header = f"{'case':<16}{'ours IoU/Dice/miou':>20}{'ours full (+SOD)':>18}{'ref mean_iou':>14}"
    header += f"{'IoU/ref':>9}{'full/ref':>10}"
    if metric is not None:
        header += f"{'evaluate':>12}{'IoU/eval':>10}"
    print(header)
    for n, size in CASES:
        logits, gts = make_data(n, size)
        labels = [(x > 0).astype(np.int64) for x in logits]
        gt_labels = [g.astype(np.int64) for g in gts]
        t_iou = best_time(lambda: ours(logits, gts, sod=False))
        t_full = best_time(lambda: ours(logits, gts, sod=True))
        t_ref = best_time(lambda: reference_mean_iou(labels, gt_labels))
        ours_miou = ours(logits, gts, sod=False)["miou"]
        ref_miou = reference_mean_iou(labels, gt_labels)["mean_iou"]
        assert abs(ours_miou - ref_miou) < 1e-9, (ours_miou, ref_miou)
        row = f"{f'{n} x {size}^2':<16}{t_iou:>17.1f} ms{t_full:>15.1f} ms{t_ref:>11.1f} ms"
        row += f"{t_iou / t_ref:>8.3f}x{t_full / t_ref:>9.2f}x"
        if metric is not None:
            kw = dict(predictions=labels, references=gt_labels, num_labels=2, ignore_index=255)
            t_eval = best_time(lambda: metric.compute(**kw))
            row += f"{t_eval:>9.1f} ms{t_iou / t_eval:>9.3f}x"
        print(row)
    print("miou of ours == reference on every case (checked)")


if __name__ == "__main__":
    main()
