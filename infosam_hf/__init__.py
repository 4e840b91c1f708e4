"""infosam-hf: fine-tune Segment Anything with InfoSAM relation distillation, the HuggingFace way.

``import infosam_hf`` is cheap (no torch): the public names below load on first use, and the SAM tuners
(``sam_adapter``, ``adaptformer``, ...) register with peft as soon as peft is imported — before or after this
package — so ``PeftModel.from_pretrained`` / ``AutoPeftModel.from_pretrained`` load every adapter this project
saves; likewise the adapters' image processor registers with ``AutoImageProcessor`` once transformers is imported.
"""

from __future__ import annotations

import importlib
import sys
import warnings

from .import_hooks import after_import, lazy_attributes

__version__ = "0.1.0"

# the public API, by the submodule each name loads from on first use (``load_for_inference`` through evaluation: the
# models it loads get ``generate_masks``)
__getattr__, __dir__, __all__ = lazy_attributes(__name__, {
    ".data": "DataArguments", ".losses": "compression_loss distillation_loss structure_loss",
    ".models": "ModelArguments attach_relation_module load_sam resize_sam_input InfoSamImageProcessor",
    ".evaluation": "load_for_inference", ".relation": "RelationModule load_official_relation_state_dict",
    ".training": "InfoSAMConfig InfoSAMTrainer", ".tuners": "PeftArguments build_student"})


def _importing(name: str) -> bool:
    """Whether module ``name`` is in the middle of its own import (its names are not all defined yet)."""
    module = sys.modules.get(name)
    return module is not None and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))


def _register_tuners() -> None:
    """Import the tuners, whose modules register their peft types (a no-op once they are importing). Also silence
    the deprecation transformers 5 raises when peft loads any adapter (``is_gradient_checkpointing``, peft's call,
    nothing a user can change)."""
    warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    if f"{__name__}.tuners" not in sys.modules:
        importlib.import_module(".tuners", __name__)
    _register_image_processor()


def _register_image_processor() -> None:
    """Import the adapters' image processor, which registers itself with ``AutoImageProcessor`` (so
    ``SamProcessor.from_pretrained(adapter)`` prepares inputs exactly as training did). Deferred while peft or
    this package's models are still importing: peft's hook, or the models package itself, imports it then."""
    if _importing("peft") or _importing(f"{__name__}.models"):
        return
    if f"{__name__}.models.processor" not in sys.modules:
        importlib.import_module(".models.processor", __name__)


after_import("peft", _register_tuners)
after_import("transformers", _register_image_processor)
