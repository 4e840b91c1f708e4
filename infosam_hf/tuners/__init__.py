"""PEFT methods for the student: the registry, ``build_student`` and each method's tuner."""

from .arguments import PeftArguments
from .registry import PEFT_METHODS, build_peft_config, build_student, register_peft_method

__all__ = ["PEFT_METHODS", "PeftArguments", "build_peft_config", "build_student", "register_peft_method"]
