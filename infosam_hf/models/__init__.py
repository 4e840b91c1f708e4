"""The network: loading SAM, input-size surgery, the relation module's attachment and feature capture."""

from .arguments import ModelArguments
from .capture import SamFeatureCapture
from .dynamic import enable_dynamic_input_size, is_dynamic_input_size
from .inference import BASE_MODEL_DIR, BaseModelMismatchError, load_for_inference, model_image_size, resolve_device
from .multiclass import add_multiclass_head, sam_num_classes
from .sam import attach_relation_module, build_sam_config, get_relation_module, load_sam, resize_sam_input

__all__ = [
    "BASE_MODEL_DIR",
    "BaseModelMismatchError",
    "ModelArguments",
    "SamFeatureCapture",
    "add_multiclass_head",
    "attach_relation_module",
    "build_sam_config",
    "enable_dynamic_input_size",
    "get_relation_module",
    "is_dynamic_input_size",
    "load_for_inference",
    "load_sam",
    "model_image_size",
    "resize_sam_input",
    "resolve_device",
    "sam_num_classes",
]
