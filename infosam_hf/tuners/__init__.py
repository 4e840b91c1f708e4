"""PEFT methods for the student: the registry, ``build_student`` and each method's peft tuner."""

from .arguments import PeftArguments
from .base import pop_auxiliary_loss
from .registry import (PEFT_METHODS, available_methods, build_peft_config, build_student, parameter_groups,
                       register_peft_builder)

__all__ = ["PEFT_METHODS", "PeftArguments", "available_methods", "build_peft_config", "build_student",
           "parameter_groups", "pop_auxiliary_loss", "register_peft_builder"]
