"""``infosam predict --adapter DIR_OR_REPO --images PATH_OR_GLOB... --out DIR [--box ... | --points ... | --auto]``.

Prompt coordinates are in the original image's pixels (negative values are fine: ``--box -50,-50,50,50``);
a box partly outside an image is clipped to it, one entirely outside (or a point outside) is an error.
For each image ``<stem>_mask.png`` (0/255, original size) and ``<stem>_overlay.png`` are written to
``--out``; a multi-class model takes no prompt and writes ``<stem>_classes.png`` (colour-coded class ids)
instead of the mask. Images that cannot be read are listed at the end and make the exit status 1; the
others are still written.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from ..errors import UsageError
from ..evaluation.prompt_input import Prompt, check_prompt, find_images, parse_box, parse_points
from .common import adapter_parser, run_main
from .predict_large import add_large_image_options, predict_large
from .predict_objects import predict_objects_command

__all__ = ["build_parser", "parse_prompt", "main"]

COORDINATE_OPTIONS = ("--box", "--points")
_STARTS_NEGATIVE = re.compile(r"^-\.?\d")  # '-50,-50,50,50' or '-.5,3': a value, not an option


def build_parser() -> argparse.ArgumentParser:
    parser = adapter_parser(
        "infosam predict",
        "Predict masks with a trained InfoSAM adapter and draw overlays. Prompt coordinates are in original "
        "image pixels.")
    parser.add_argument("--images", required=True, nargs="+",
                        help="Image files, folders of images and glob patterns (quoted or expanded by the shell).")
    parser.add_argument("--out", required=True, help="Output folder for <stem>_mask.png (multi-class models: "
                                                     "<stem>_classes.png) and <stem>_overlay.png.")
    prompts = parser.add_argument_group("prompt (one of --box / --points, both together, or --auto; none for a "
                                        "multi-class model)")
    prompts.add_argument("--box", default=None, action="append",
                         help="x0,y0,x1,y1 in original image pixels; repeat it for several objects per image.")
    prompts.add_argument("--points", default=None, action="append",
                         help="'x,y[,label];x,y[,label]...' in original pixels; label 1 = foreground (default), "
                              "0 = background; repeat it for several objects per image.")
    prompts.add_argument("--prompts", default=None,
                         help="JSON or CSV of per-object prompts (image, object_id, box, points): writes "
                              "<stem>_instances.png, <stem>_overlay.png and COCO results.json.")
    prompts.add_argument("--auto", action="store_true", help="No prompt (for semantic-mode adapters).")
    parser.add_argument("--threshold", type=float, default=0.5, help="Foreground if probability > this (default 0.5).")
    parser.add_argument("--no_progress", action="store_true", help="Hide the progress bar.")
    add_large_image_options(parser)
    parser.set_defaults(batch_size=4)
    return parser


def parse_prompt(options: argparse.Namespace, required: bool = True) -> Prompt:
    """The prompt from ``--box`` / ``--points`` / ``--auto`` (exactly one kind must be chosen when
    ``required``; a multi-class model needs none)."""
    if options.auto and (options.box or options.points):
        raise UsageError("--auto runs without a prompt; drop --box / --points or drop --auto")
    if required and not (options.auto or options.box or options.points):
        raise UsageError("give a prompt: --box x0,y0,x1,y1, --points 'x,y[,label];...', or --auto for no prompt")
    prompt = Prompt()
    if options.box:
        prompt.box = parse_box(options.box)
    if options.points:
        prompt.points, prompt.labels = parse_points(options.points)
    return prompt


def join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--box -50,-50,50,50`` → ``--box=-50,-50,50,50``: argparse reads a value that starts with '-' and
    is not a plain number as an option ("expected one argument")."""
    joined, args = [], list(argv)
    i = 0
    while i < len(args):
        if args[i] in COORDINATE_OPTIONS and i + 1 < len(args) and _STARTS_NEGATIVE.match(args[i + 1]):
            joined.append(f"{args[i]}={args[i + 1]}")
            i += 2
        else:
            joined.append(args[i])
            i += 1
    return joined


def _predict(argv: list[str]) -> int:
    options = build_parser().parse_args(join_negative_values(argv))
    if options.prompts or len(options.box or []) + len(options.points or []) > 1:
        return predict_objects_command(options)
    options.box, options.points = (options.box or [None])[0], (options.points or [None])[0]
    if options.tile or options.onnx or options.everything:
        return predict_large(options, parse_prompt(options, required=False))
    if not options.adapter:
        raise UsageError("give --adapter (or --onnx DIR to run an exported model)")
    prompt = parse_prompt(options, required=False)
    if options.batch_size < 1:
        raise UsageError(f"--batch_size must be >= 1, got {options.batch_size}")
    paths = find_images(options.images)
    check_prompt(prompt, paths)  # a prompt outside an image fails before the model loads
    if options.adapter.lower() == "none" and not options.base_model:
        raise UsageError("--adapter none needs --base_model")
    from ..evaluation.predict import predict_masks  # torch: only once the options are known to be good
    from ..models.inference import load_for_inference, resolve_device, run_input_settings
    from ..models.multiclass import sam_num_classes
    from ..models.processor import read_class_names

    device = resolve_device(options.device)
    model = load_for_inference(options.adapter, options.base_model, device=device)
    if sam_num_classes(model) == 1:
        parse_prompt(options)  # a binary model needs a prompt (or --auto)
    results = predict_masks(model, paths, prompt, options.out, batch_size=options.batch_size,
                            threshold=options.threshold, device=device, progress=not options.no_progress,
                            class_names=read_class_names(options.adapter), **run_input_settings(options.adapter))
    written = [r for r in results if r.error is None]
    failed = [r for r in results if r.error is not None]
    print(f"Wrote masks and overlays of {len(written)} image(s) to {options.out}")
    if failed:
        print(f"error: {len(failed)} image(s) could not be read:", file=sys.stderr)
        for result in failed:
            print(f"  {result.path}: {result.error}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: 0 on success, 1 when some images could not be read, 2 on bad input."""
    return run_main(_predict, argv)
