"""infosam-hf: fine-tune Segment Anything with InfoSAM relation distillation, the HuggingFace way."""

from .arguments import DataArguments, ModelArguments, PeftArguments
from .config import InfoSAMConfig
from .losses import compression_loss, distillation_loss, structure_loss
from .modeling import attach_relation_module, load_sam, resize_sam_input
from .peft_methods import build_student
from .relation import RelationModule, load_official_relation_state_dict
from .trainer import InfoSAMTrainer

__version__ = "0.1.0"

__all__ = [
    "DataArguments",
    "InfoSAMConfig",
    "InfoSAMTrainer",
    "ModelArguments",
    "PeftArguments",
    "RelationModule",
    "attach_relation_module",
    "build_student",
    "compression_loss",
    "distillation_loss",
    "load_official_relation_state_dict",
    "load_sam",
    "resize_sam_input",
    "structure_loss",
]
