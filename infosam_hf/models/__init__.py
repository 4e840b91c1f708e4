"""The network: loading SAM or SAM 2, input-size surgery, the relation module's attachment and feature capture."""

from .arguments import ModelArguments
from .capture import SamFeatureCapture
from .dynamic import enable_dynamic_input_size, is_dynamic_input_size
from .inference import BASE_MODEL_DIR, BaseModelMismatchError, load_for_inference, model_image_size, resolve_device
from .multiclass import add_multiclass_head, sam_num_classes
from .processor import InfoSamImageProcessor  # registers it with AutoImageProcessor
from .sam import build_sam_config, load_pretrained_sam, load_sam, resize_sam_input
from ..relation import attach_relation_module, get_relation_module
from .sam2 import build_sam2_config, is_sam2

__all__ = [
    "BASE_MODEL_DIR",
    "BaseModelMismatchError",
    "InfoSamImageProcessor",
    "ModelArguments",
    "SamFeatureCapture",
    "add_multiclass_head",
    "attach_relation_module",
    "build_sam2_config",
    "build_sam_config",
    "enable_dynamic_input_size",
    "get_relation_module",
    "is_dynamic_input_size",
    "is_sam2",
    "load_for_inference",
    "load_pretrained_sam",
    "load_sam",
    "model_image_size",
    "resize_sam_input",
    "resolve_device",
    "sam_num_classes",
]
