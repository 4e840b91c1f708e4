"""``infosam predict --tile SIZE --overlap PX``, ``--everything`` and ``--onnx DIR``: the large-image and ONNX paths
(PyTorch or ONNX Runtime, the same tiling and everything-mode algorithms)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import UsageError
from ..evaluation.prompt_input import find_images

__all__ = ["add_large_image_options", "predict_large"]


def add_large_image_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("large images and ONNX")
    group.add_argument("--tile", type=int, default=None,
                       help="Tiled inference: tile side in pixels (e.g. the model's input size; any size for a "
                            "dynamic-size model). Output stays at full resolution.")
    group.add_argument("--overlap", type=int, default=None,
                       help="Overlap of neighbouring tiles in pixels (default: 64, at most a quarter of --tile).")
    group.add_argument("--onnx", default=None, help="Run from an `infosam export --onnx` folder (onnxruntime) "
                                                    "instead of --adapter.")
    group.add_argument("--everything", action="store_true",
                       help="Segment everything (no prompt): writes <stem>_instances.png, <stem>_overlay.png and "
                            "one COCO results file everything_coco.json.")
    group.add_argument("--points_per_side", type=int, default=32, help="--everything: point grid per crop side.")
    group.add_argument("--pred_iou_thresh", type=float, default=0.88, help="--everything: min predicted IoU.")
    group.add_argument("--stability_score_thresh", type=float, default=0.95, help="--everything: min stability.")
    group.add_argument("--crop_n_layers", type=int, default=0, help="--everything: extra layers of zoomed crops.")
    group.add_argument("--min_mask_region_area", type=int, default=0, help="--everything: drop smaller masks (px).")
    parser._option_string_actions["--adapter"].required = False  # --onnx replaces it


def predict_large(options: argparse.Namespace, prompt) -> int:
    """Tiled and/or ONNX Runtime prediction of every image (``--everything``: instance maps); 1 when some could not
    be read."""
    if options.onnx and options.adapter:
        raise UsageError("--onnx runs the exported graphs; drop --adapter")
    if options.tile is not None and options.tile < 1:
        raise UsageError(f"--tile must be >= 1, got {options.tile}")
    if options.overlap is None:
        options.overlap = min(64, (options.tile or 256) // 4)
    if options.tile and not 0 <= options.overlap < options.tile:
        raise UsageError(f"--overlap must be in [0, --tile), got {options.overlap}")
    if not 0.0 < options.threshold < 1.0:
        raise UsageError(f"--threshold must be in (0, 1), got {options.threshold}")
    paths = find_images(options.images)
    if options.everything:
        return _everything(options, prompt, paths)
    import numpy as np  # the arrays and models: only once the options are known to be good

    from ..evaluation.per_image import predict_each_image
    from ..evaluation.tiling import predict_tiled

    model, settings, device = _load(options)
    multiclass = _num_classes(model) > 1
    if multiclass and not prompt.empty:
        raise UsageError("this is a multi-class model: it segments every class without a prompt; drop --box / "
                         "--points")
    if not multiclass and prompt.empty and (options.onnx or not options.auto):
        raise UsageError("--onnx needs a prompt (--box / --points)" if options.onnx else
                         "give a prompt: --box x0,y0,x1,y1, --points 'x,y[,label];...', or --auto for no prompt")

    if options.onnx and not options.tile:
        logit_threshold = float(np.log(options.threshold / (1.0 - options.threshold)))

        def segment(image, fitted):
            logits = model.predict_logits(image, box=fitted.box, points=fitted.points, labels=fitted.labels)
            if multiclass:
                return logits.argmax(0).astype(np.uint8)
            return (logits > logit_threshold).astype(np.uint8)
    else:
        def segment(image, fitted):
            return predict_tiled(model, np.asarray(image.convert("RGB")), fitted, tile=options.tile,
                                 overlap=options.overlap, batch_size=options.batch_size, device=device,
                                 threshold=options.threshold, **settings)

    results = predict_each_image(segment, paths, prompt, options.out, multiclass=multiclass,
                                 progress=not options.no_progress)
    failed = [r for r in results if r.error is not None]
    print(f"Wrote masks and overlays of {len(results) - len(failed)} image(s) to {options.out}")
    for result in failed:
        print(f"  {result.path}: {result.error}", file=sys.stderr)
    return 1 if failed else 0


def _num_classes(model) -> int:
    from ..models.multiclass import sam_num_classes

    return model.num_classes if hasattr(model, "predict_logits") else sam_num_classes(model)


def _load(options: argparse.Namespace):
    """The model (an ONNX predictor for ``--onnx``, else the PyTorch adapter), the tile pre-processing settings of
    the PyTorch path and its device."""
    if options.onnx:
        from ..evaluation.onnx_predict import OnnxSamPredictor

        try:
            return OnnxSamPredictor(options.onnx), {}, None
        except (FileNotFoundError, ValueError) as err:
            raise UsageError(str(err)) from None
    if not options.adapter:
        raise UsageError("give --adapter (or --onnx DIR to run an exported model)")
    from ..models.inference import load_for_inference, resolve_device, run_input_settings

    device = resolve_device(options.device)
    model = load_for_inference(options.adapter, options.base_model, device=device)
    run = run_input_settings(options.adapter)  # its fixed ``resize`` is for whole images, not tiles
    settings = {key: run.get(key) for key in ("image_mean", "image_std", "preprocessing", "channel_order")}
    return model, settings, device


def _everything(options: argparse.Namespace, prompt, paths) -> int:
    if not prompt.empty:
        raise UsageError("--everything places its own point grid; drop --box / --points")
    if options.points_per_side < 1:
        raise UsageError(f"--points_per_side must be >= 1, got {options.points_per_side}")
    import numpy as np

    from ..data import DataError, decode_image
    from ..evaluation.everything import MaskGeneratorSettings, generate_masks
    from ..evaluation.instance_output import (
        coco_dataset,
        write_instance_outputs,
    )
    from ..evaluation.predict import _output_names
    from ..io import atomic_write_json

    settings = MaskGeneratorSettings(points_per_side=options.points_per_side, pred_iou_thresh=options.pred_iou_thresh,
                                     stability_score_thresh=options.stability_score_thresh,
                                     crop_n_layers=options.crop_n_layers,
                                     min_mask_region_area=options.min_mask_region_area)
    model, preprocess, device = _load(options)
    if _num_classes(model) > 1:
        raise UsageError("--everything needs a prompted (single-mask) model, not a multi-class one")
    names, images, results, failed = _output_names(paths), [], [], []
    for image_id, path in enumerate(paths, start=1):
        try:
            image, (height, width) = decode_image(str(path))
        except DataError as err:
            failed.append(f"{path}: {err}")
            continue
        records = generate_masks(model, image, settings, tile=options.tile, overlap=options.overlap, device=device,
                                 **preprocess)
        masks = np.stack([r["segmentation"] for r in records]) if records else np.zeros((0, height, width), bool)
        results += write_instance_outputs(options.out, names[path], image, masks,
                                          scores=[r["predicted_iou"] for r in records], image_id=image_id)
        images.append({"id": image_id, "file_name": path.name, "height": height, "width": width})
        print(f"{path}: {len(records)} object(s)")
    atomic_write_json(Path(options.out) / "everything_coco.json", coco_dataset(images, results))
    print(f"Wrote instance maps, overlays and everything_coco.json to {options.out}")
    for line in failed:
        print(f"  {line}", file=sys.stderr)
    return 1 if failed else 0
