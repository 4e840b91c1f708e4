"""``protocol: official``: the official InfoSAM scripts' checkpoint and test protocol.

The official runs train on all of ``train.csv`` (no validation split), save the last five epochs (6-10 of 10,
16-20 of 20) and score each of them on the test split; the paper's numbers can be the best of those, i.e.
picked on the test split. This module saves and scores those epochs during training and reports every epoch
and, labelled as such, the best of them. The default protocol never lets the test split pick a checkpoint.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from transformers import TrainerCallback

from ..files import EPOCH_DIR, PROTOCOL_RESULTS_NAME
from ..io import atomic_write_json

__all__ = ["PROTOCOLS", "OFFICIAL_LAST_EPOCHS", "PROTOCOL_RESULTS_NAME", "BEST_ON_TEST_LABEL",
           "OfficialProtocolCallback", "official_epochs", "official_schedule_steps", "best_on_test", "leading_columns", "protocol_summary"]

ProtocolName = Literal["default", "official", "gsam"]
PROTOCOLS: tuple[str, ...] = get_args(ProtocolName)  # gsam: see infosam_hf.evaluation.gsam_metrics
OFFICIAL_LAST_EPOCHS = 5  # config/train/*.sh: `for epoch in {6..10}` after 10 epochs, {16..20} after 20
BEST_ON_TEST_LABEL = "best on test, as the official scripts allow"
# Metrics where lower is better; every other reported metric is maximised.
LOWER_IS_BETTER = ("mae", "loss", "noc@85", "noc@90", "noc_failures@85", "noc_failures@90")


def official_epochs(num_epochs: int, epochs: Sequence[int] | None = None) -> list[int]:
    """The epochs (1-based) to save and score: ``epochs`` when given, else the last five of ``num_epochs``."""
    if epochs:
        chosen = sorted({int(e) for e in epochs})
        if chosen[0] < 1 or chosen[-1] > num_epochs:
            raise ValueError(f"protocol_epochs={chosen} must lie in 1..num_train_epochs={num_epochs}")
        return chosen
    return list(range(max(1, num_epochs - OFFICIAL_LAST_EPOCHS + 1), num_epochs + 1))


def official_schedule_steps(num_training_steps: int, num_epochs: float) -> int:
    """The official learning-rate horizon: ``CosineAnnealingLR(T_max=epochs * (N // batch + 1))`` while an epoch
    takes ``N // batch`` steps (``drop_last``), i.e. one step per epoch more than the run takes."""
    epochs = max(1, math.ceil(num_epochs))
    return epochs * (max(1, round(num_training_steps / epochs)) + 1)


def leading_columns(available: Sequence[str], report_metrics: Sequence[str] | None,
                    defaults: Sequence[str] = ("iou", "iou@0.5", "dice", "miou")) -> list[str]:
    """Table columns: ``report_metrics`` first (those present), then the ``defaults`` not already listed."""
    lead = [key for key in (report_metrics or ()) if key in available]
    return lead + [key for key in defaults if key in available and key not in lead]


def best_on_test(per_epoch: dict[int, dict[str, float]], metric: str) -> tuple[int, dict[str, float]]:
    """The epoch whose test ``metric`` is best (highest; lowest for mae / loss) and its scores."""
    sign = -1.0 if metric in LOWER_IS_BETTER else 1.0
    scored = [(sign * scores[metric], -epoch) for epoch, scores in per_epoch.items()
              if isinstance(scores.get(metric), float) and math.isfinite(scores[metric])]
    if not scored:
        raise ValueError(f"no epoch has a finite test {metric!r}")
    epoch = -max(scored)[1]
    return epoch, per_epoch[epoch]


def protocol_summary(per_epoch: dict[int, dict[str, float]], metric: str) -> dict[str, Any]:
    """What ``protocol_results.json`` holds: every epoch's test scores and the best of them, labelled."""
    epoch, scores = best_on_test(per_epoch, metric)
    return {"protocol": "official", "selection_metric": metric,
            "epochs": {str(e): per_epoch[e] for e in sorted(per_epoch)},
            "best_on_test": {"epoch": epoch, "label": BEST_ON_TEST_LABEL, "scores": scores}}


def format_protocol_table(summary: dict[str, Any], columns: Sequence[str]) -> str:
    """One row per scored epoch and a last row for the best-on-test epoch, labelled as such."""
    rows = [(f"epoch {e}", scores) for e, scores in summary["epochs"].items()]
    best = summary["best_on_test"]
    rows.append((f"{best['label']} (epoch {best['epoch']}, by {summary['selection_metric']})", best["scores"]))
    width = max(len(name) for name, _ in rows) + 2
    lines = [" " * width + "".join(f"{key:>20}" for key in columns)]
    for name, scores in rows:
        lines.append(f"{name:<{width}}" + "".join(f"{scores.get(key, float('nan')):>20.4f}" for key in columns))
    return "\n".join(lines)


class OfficialProtocolCallback(TrainerCallback):
    """At the end of each chosen epoch: save the adapter to ``output_dir/epoch_<e>``, score it on the test
    split and rewrite ``protocol_results.json`` (so a resumed run keeps the epochs scored before). Set
    :attr:`trainer` after building the trainer; scores land in :attr:`per_epoch`."""

    def __init__(self, test_dataset, epochs: Sequence[int], metric: str = "iou"):
        self.test_dataset = test_dataset
        self.epochs = set(int(e) for e in epochs)
        self.metric = metric
        self.trainer = None
        self.per_epoch: dict[int, dict[str, float]] = {}

    def on_train_begin(self, args, state, control, **kwargs):
        saved = Path(args.output_dir) / PROTOCOL_RESULTS_NAME
        if state.global_step > 0 and saved.is_file():  # resumed: the epochs scored before the interruption
            epochs = json.loads(saved.read_text()).get("epochs", {})
            self.per_epoch.update({int(e): scores for e, scores in epochs.items() if int(e) in self.epochs})

    def on_epoch_end(self, args, state, control, **kwargs):
        epoch = int(round(state.epoch or 0))
        if epoch not in self.epochs or epoch in self.per_epoch:
            return
        if self.trainer is None:
            raise RuntimeError("OfficialProtocolCallback.trainer is not set")
        self.trainer.save_model(str(Path(args.output_dir) / EPOCH_DIR.format(epoch)), _internal_call=True)
        metrics = self.trainer.evaluate(self.test_dataset, metric_key_prefix="test")
        self.per_epoch[epoch] = {k.removeprefix("test_"): float(v) for k, v in metrics.items()
                                 if isinstance(v, (int, float))}
        if state.is_world_process_zero:
            self.write(args.output_dir)

    def write(self, output_dir: str | Path) -> dict[str, Any]:
        """Write ``protocol_results.json`` and return its content."""
        summary = protocol_summary(self.per_epoch, self.metric)
        atomic_write_json(Path(output_dir) / PROTOCOL_RESULTS_NAME, summary)
        return summary
