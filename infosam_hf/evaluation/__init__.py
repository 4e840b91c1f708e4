"""Evaluation: metrics, the streamed evaluation loop, scoring and predicting with an adapter, pictures."""

from . import everything  # noqa: F401  (load_for_inference's models get generate_masks)
from .evaluate import evaluate_adapter, format_results_table
from .loop import box_fill_logits, evaluate_segmentation, make_metrics, sam_logits, upsample_logits
from .metrics import SegmentationMetrics, compute_binary_metrics
from .predict import Prompt, predict_masks

from ..models.inference import load_for_inference

__all__ = [
    "load_for_inference",
    "Prompt",
    "SegmentationMetrics",
    "box_fill_logits",
    "compute_binary_metrics",
    "evaluate_adapter",
    "evaluate_segmentation",
    "format_results_table",
    "make_metrics",
    "predict_masks",
    "sam_logits",
    "upsample_logits",
]
