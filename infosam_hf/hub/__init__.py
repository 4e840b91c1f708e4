"""The trained adapter as a Hub repository: its model card (:mod:`.card`, rendered from ``model_card.md``) and the
push of a finished run (:mod:`.push`).

A finished run's ``output_dir`` is a PEFT adapter repository (``adapter_config.json``, ``adapter_model.safetensors``
with the adapter weights, the trained mask decoder and the relation module, ``preprocessor_config.json``) plus
``README.md``, the card.
"""

from ..files import AdapterDirError, validate_adapter_dir
from .card import CARD_TAGS, INFOSAM_BIBTEX, build_model_card, eval_results_from_metrics, hub_base_model, write_model_card
from .push import PUSH_IGNORE_PATTERNS, push_adapter_dir

__all__ = ["AdapterDirError", "CARD_TAGS", "INFOSAM_BIBTEX", "PUSH_IGNORE_PATTERNS", "build_model_card",
           "eval_results_from_metrics", "hub_base_model", "push_adapter_dir", "validate_adapter_dir",
           "write_model_card"]
