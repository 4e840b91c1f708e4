"""Click-by-click scores during training (``eval_clicks: N``).

Each evaluation of the trainer (the eval split during training, the test split before and after it) is also
scored click by click with the simulation of ``infosam evaluate --clicks N``
(:func:`~infosam_hf.evaluation.click_eval.evaluate_clicks`, one row per image gathered across processes,
so the scores do not depend on the batch size nor on the number of processes). The scores are logged
beside the segmentation metrics under the names of
:func:`~infosam_hf.evaluation.click_eval.flat_click_metrics` (``test_click_iou_1`` ... ``test_click_iou_N``,
``test_click_dice_<k>``, ``test_noc@85``, ``test_noc@90``, ``test_noc_failures@85/90``, ``test_click_images``),
so ``metric_for_best_model: noc@90`` works. At the end of the run :func:`write_click_results` writes the
test split's scores to ``click_results.json`` and their curve to ``click_curve.png``.

Cost: one more image-encoder pass per evaluated image, and N prompt-encoder / mask-decoder passes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..evaluation.click_eval import evaluate_clicks, flat_click_metrics, plot_click_curve
from ..files import CLICK_CURVE_NAME, CLICK_RESULTS_NAME
from ..io import atomic_write_json

if TYPE_CHECKING:
    from .trainer import InfoSAMTrainer

logger = logging.getLogger(__name__)

__all__ = ["CLICK_RESULTS_SCHEMA_VERSION", "check_click_eval_support", "click_eval_metrics", "write_click_results"]

CLICK_RESULTS_SCHEMA_VERSION = 1
HISTORY_ATTR = "click_eval_history"  # on the trainer: one entry per click-scored evaluation


def check_click_eval_support(clicks: int, num_labels: int, sam2: bool) -> None:
    """Raise a one-line error when ``eval_clicks`` cannot apply to this model."""
    if clicks and num_labels > 1:
        raise ValueError("eval_clicks: corrective clicks need a binary (prompted) model, not a multi-class one")
    if clicks and sam2:
        raise ValueError("eval_clicks is SAM-only for now (SAM 2's decoder also reads high-resolution features)")


def click_eval_metrics(trainer: InfoSAMTrainer, dataloader, metric_key_prefix: str) -> dict[str, float]:
    """Score ``dataloader`` (an evaluation loader of ``trainer``) over ``trainer.args.eval_clicks`` simulated
    clicks; returns the flat metrics with ``metric_key_prefix`` and records the full scores on the trainer
    (for :func:`write_click_results`). Empty when ``eval_clicks`` is 0."""
    clicks = trainer.args.eval_clicks
    if not clicks:
        return {}
    model = trainer.model
    was_training = model.training
    model.eval()
    try:
        results = evaluate_clicks(model, dataloader, clicks, trainer.args.device, gather=trainer.gather_for_metrics)
    finally:
        model.train(was_training)
    history = getattr(trainer, HISTORY_ATTR, None)
    if history is None:
        history = []
        setattr(trainer, HISTORY_ATTR, history)
    history.append({"split": metric_key_prefix, "step": trainer.state.global_step, "scores": results})
    return flat_click_metrics(results, metric_key_prefix)


def write_click_results(trainer: InfoSAMTrainer, output_dir: str | Path, split: str = "test") -> Path | None:
    """Write the click-by-click scores of the run's last evaluation of ``split`` to ``output_dir/click_results.json``
    and their curve (with the untrained model's, when it was scored) to ``click_curve.png``; print one line.
    Returns the JSON's path, or None when nothing was click-scored (``eval_clicks: 0``, no test split).

    The JSON object (``schema_version`` 1)::

        {
          "schema_version": 1,
          "split": "test",               # the split scored (metric prefix of the logged keys)
          "step": 500,                   # the optimizer step of the scored model
          "num_clicks": 5,               # N, the recipe's eval_clicks
          "click_images": 64,            # images scored (images without foreground are left out)
          "click_iou": [0.61, ...],      # mean IoU after click 1 ... N (N floats)
          "click_dice": [0.72, ...],     # mean Dice after click 1 ... N
          "noc@85": 3.2, "noc@90": 4.1,  # mean number of clicks to reach 85 / 90 % IoU, N when never reached
          "noc_failures@85": 0.25,       # fraction of images that never reach 85 % IoU in N clicks
          "noc_failures@90": 0.40,
          "before_training": {...}       # only with eval_before_training: the same score keys (num_clicks ...
        }                                # noc_failures@90) for the untrained model

    The score keys are those of ``infosam evaluate --clicks N`` (its results JSON), and the logged metrics
    are their flat form (``test_click_iou_1`` ..., see :func:`~infosam_hf.evaluation.click_eval.flat_click_metrics`).
    """
    entries = [entry for entry in getattr(trainer, HISTORY_ATTR, None) or [] if entry["split"] == split]
    if not entries or not trainer.is_world_process_zero():
        return None
    final = entries[-1]
    payload: dict[str, Any] = {"schema_version": CLICK_RESULTS_SCHEMA_VERSION, "split": split, "step": final["step"],
                               **final["scores"]}
    curves = {"fine-tuned": final["scores"]["click_iou"]}
    if trainer.args.eval_before_training and len(entries) > 1 and entries[0]["step"] == 0:
        payload["before_training"] = entries[0]["scores"]
        curves["before training"] = entries[0]["scores"]["click_iou"]
    output_dir = Path(output_dir)
    path = output_dir / CLICK_RESULTS_NAME
    atomic_write_json(path, payload)
    if final["scores"]["click_iou"]:
        plot_click_curve(curves, output_dir / CLICK_CURVE_NAME)
    scores = final["scores"]
    print(f"\n{split.capitalize()} split, IoU after each of {scores['num_clicks']} clicks ({scores['click_images']} "
          f"images): " + " ".join(f"{value:.3f}" for value in scores["click_iou"])
          + f"; NoC@85 {scores['noc@85']:.2f}, NoC@90 {scores['noc@90']:.2f} (written to {path})")
    return path
