"""Evaluation: metrics, the streamed evaluation loop, scoring and predicting with an adapter, pictures.

The names below load on first use, so light modules (``prompt_input``: reading and checking ``predict``'s images and
prompts) import without torch. ``load_for_inference`` comes through :mod:`.everything`, which gives every model it
loads ``generate_masks``.
"""

from ..import_hooks import lazy_attributes

# public name -> the submodule that defines it
_LAZY = {
    "load_for_inference": ".everything",
    "evaluate_adapter": ".evaluate",
    "format_results_table": ".evaluate",
    "box_fill_logits": ".loop",
    "evaluate_segmentation": ".loop",
    "make_metrics": ".loop",
    "sam_logits": ".loop",
    "upsample_logits": ".loop",
    "SegmentationMetrics": ".metrics",
    "compute_binary_metrics": ".metrics",
    "Prompt": ".prompt_input",
    "predict_masks": ".predict",
}

__all__ = sorted(_LAZY)


__getattr__, __dir__ = lazy_attributes(__name__, _LAZY)
