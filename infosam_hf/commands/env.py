"""``infosam env``: the versions and devices to paste into a bug report."""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from importlib import metadata

__all__ = ["environment_report", "main"]

PACKAGES = ("infosam-hf", "torch", "transformers", "peft", "accelerate", "datasets", "huggingface_hub",
            "safetensors", "numpy", "pillow", "pysodmetrics")


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment_report() -> dict[str, str]:
    """Package versions, Python, platform and the available accelerator."""
    import torch

    report = {"python": sys.version.split()[0], "platform": platform.platform()}
    report.update({package: _version(package) for package in PACKAGES})
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        report["device"] = f"cuda ({torch.cuda.device_count()}: {names}; CUDA {torch.version.cuda})"
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        report["device"] = "mps"
    else:
        report["device"] = f"cpu ({torch.get_num_threads()} threads)"
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Print one ``name: version`` line per entry."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print("usage: infosam env\n\nPrint the versions of Python, torch, transformers, peft, accelerate, datasets "
              "and the device, for bug reports.")
        return 0
    for name, value in environment_report().items():
        print(f"{name + ':':<18}{value}")
    return 0
