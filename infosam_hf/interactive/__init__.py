"""Interactive use of SAM: the click session behind ``infosam demo`` (the Gradio app) and the Space files.

The corrective-click simulation and click-by-click evaluation live in :mod:`infosam_hf.evaluation.clicks` and
:mod:`infosam_hf.evaluation.click_eval`.
"""
