"""infosam-hf: fine-tune Segment Anything with InfoSAM relation distillation, the HuggingFace way."""

from .data import DataArguments
from .losses import compression_loss, distillation_loss, structure_loss
from .models import InfoSamImageProcessor  # registers the adapters' image processor with AutoImageProcessor
from .models import ModelArguments, attach_relation_module, load_for_inference, load_sam, resize_sam_input
from .relation import RelationModule, load_official_relation_state_dict
from .training import InfoSAMConfig, InfoSAMTrainer
from .tuners import PeftArguments, build_student

__version__ = "0.1.0"

__all__ = [
    "DataArguments",
    "InfoSAMConfig",
    "InfoSAMTrainer",
    "InfoSamImageProcessor",
    "ModelArguments",
    "PeftArguments",
    "RelationModule",
    "attach_relation_module",
    "build_student",
    "compression_loss",
    "distillation_loss",
    "load_for_inference",
    "load_official_relation_state_dict",
    "load_sam",
    "resize_sam_input",
    "structure_loss",
]
