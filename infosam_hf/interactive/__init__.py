"""Interactive use of SAM: corrective-click simulation and click-by-click evaluation."""

from .clicks import NOC_THRESHOLDS, click_metrics_summary, next_click, number_of_clicks

__all__ = ["NOC_THRESHOLDS", "click_metrics_summary", "next_click", "number_of_clicks"]
