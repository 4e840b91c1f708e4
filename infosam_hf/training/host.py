"""Data-loading settings fitted to the machine, so a recipe written for a GPU server runs quietly anywhere."""

from __future__ import annotations

import logging
import os

import torch

logger = logging.getLogger(__name__)

__all__ = ["available_cpus", "fit_dataloader_to_host"]


def available_cpus() -> int:
    """The CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def fit_dataloader_to_host(args) -> None:
    """In place on ``TrainingArguments``: pinned memory only when CUDA is used (torch warns once per loader
    otherwise), and at most one dataloader worker per available CPU (torch warns at every loader otherwise),
    said once at INFO."""
    if args.dataloader_pin_memory and (args.use_cpu or not torch.cuda.is_available()):
        args.dataloader_pin_memory = False
    cpus = available_cpus()
    if args.dataloader_num_workers > cpus:
        logger.info("dataloader_num_workers=%d capped at %d, the CPUs available here", args.dataloader_num_workers,
                    cpus)
        args.dataloader_num_workers = cpus
