"""``infosam predict`` with several objects per image (repeated ``--box`` / ``--points``, or ``--prompts FILE``)."""

from __future__ import annotations

import argparse
import sys

from ..errors import UsageError
from ..evaluation.prompt_input import check_object_prompts, find_images, objects_from_options, read_prompts_file

__all__ = ["predict_objects_command"]


def predict_objects_command(options: argparse.Namespace) -> int:
    """Run :func:`~infosam_hf.evaluation.predict_objects.predict_objects` for parsed ``infosam predict`` options."""
    if options.auto or options.tile or options.onnx or options.everything:
        raise UsageError("several objects per image (--prompts, repeated --box / --points) do not combine with "
                         "--auto, --tile, --onnx or --everything")
    if options.prompts and (options.box or options.points):
        raise UsageError("give either --prompts FILE or --box / --points, not both")
    if not options.adapter:
        raise UsageError("give --adapter")
    objects = read_prompts_file(options.prompts) if options.prompts else objects_from_options(options.box,
                                                                                             options.points)
    paths = find_images(options.images)
    check_object_prompts(paths, objects)  # before the model loads (and before torch is imported)
    from ..evaluation.predict_objects import predict_objects
    from ..models.inference import load_for_inference, resolve_device, run_input_settings

    device = resolve_device(options.device)
    model = load_for_inference(options.adapter, options.base_model, device=device)
    results = predict_objects(model, paths, objects, options.out, threshold=options.threshold, device=device,
                              **run_input_settings(options.adapter))
    failed = [r for r in results if r.error is not None]
    print(f"Wrote instance masks and overlays of {len(results) - len(failed)} image(s) and results.json "
          f"to {options.out}")
    for result in failed:
        print(f"  {result.path}: {result.error}", file=sys.stderr)
    return 1 if failed else 0
