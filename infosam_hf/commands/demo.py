"""``infosam demo --adapter DIR [--base_model B] [--port P]``: a Gradio web app to try an adapter click by click."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from ..errors import UsageError
from .common import run_main

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="infosam demo", allow_abbrev=False,
        description="Serve a web page to try an adapter: upload or pick an image, click points or a box, and see the "
                    "fine-tuned and the base model's masks side by side (needs pip install 'infosam-hf[demo]').")
    parser.add_argument("--adapter", required=True, help="Adapter directory or Hub repo id.")
    parser.add_argument("--base_model", default=None, help="Base SAM (default: the adapter's recorded base model).")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda ... (default: auto).")
    parser.add_argument("--host", default="127.0.0.1", help="Address to serve on (default: 127.0.0.1).")
    parser.add_argument("--port", type=int, default=7860, help="Port (default: 7860).")
    parser.add_argument("--samples", nargs="*", default=None,
                        help="Example images to offer (default: the PNGs in ADAPTER/samples/).")
    return parser


def sample_images(adapter: str, given: Sequence[str] | None) -> list[str]:
    """The example images: ``given``, else the run's ``samples/*.png`` (at most 8)."""
    if given is not None:
        missing = [path for path in given if not Path(path).is_file()]
        if missing:
            raise UsageError(f"--samples: no such file: {missing[0]}")
        return list(given)
    return [str(path) for path in sorted((Path(adapter) / "samples").glob("*.png"))[:8]]


def _demo(argv: list[str]) -> int:
    options = build_parser().parse_args(argv)
    samples = sample_images(options.adapter, options.samples)
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UsageError("infosam demo needs Gradio: pip install 'infosam-hf[demo]'") from None
    from ..interactive.demo import build_demo
    from ..interactive.session import InteractiveSession
    from ..models.inference import load_for_inference, resolve_device

    model = load_for_inference(options.adapter, options.base_model, device=resolve_device(options.device))
    app = build_demo(InteractiveSession(model, options.adapter), samples, title=f"InfoSAM: {options.adapter}")
    app.launch(server_name=options.host, server_port=options.port, share=False, allowed_paths=samples)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (2 with ``error: ...`` on bad input)."""
    return run_main(_demo, argv)
