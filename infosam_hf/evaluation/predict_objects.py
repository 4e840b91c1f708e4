"""Many prompted objects per image in one call (``infosam predict`` with several ``--box`` / ``--points``, or
``--prompts FILE``).

Each image is encoded once; the prompt encoder and mask decoder run once per object. Per image, ``--out`` gets
``<stem>_instances.png`` (pixel value = object id, 0 = background; where objects overlap the higher-scoring one
wins) and ``<stem>_overlay.png`` (one colour per object); ``results.json`` holds every object in COCO's results
format (RLE, ``score`` = SAM's predicted IoU, ``object_id``) and ``instances.json`` the same as a COCO data set.

The prompts file format is described in :mod:`infosam_hf.evaluation.prompt_input`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..data import DataError, decode_image, preprocess_image
from ..errors import UsageError, error_line
from ..models.inference import model_image_size
from ..models.sam2 import keeps_aspect_ratio
from ..io import atomic_write_json
from .instance_output import coco_dataset, write_instance_outputs
from .loop import upsample_logits
from .metrics import logits_to_original
from .predict import PredictionResult, _output_names, _prompt_tensors
from .prompt_input import ObjectPrompt, check_object_prompts, fit_prompt, objects_for_image

__all__ = ["predict_objects"]


@torch.no_grad()
def predict_objects(model: torch.nn.Module, paths: Sequence[Path], objects: Sequence[ObjectPrompt],
                    out_dir: str | Path, *, threshold: float = 0.5, device: torch.device | None = None,
                    resize: Sequence[int] | None = None, image_mean: Sequence[float] | None = None,
                    image_std: Sequence[float] | None = None, preprocessing: str = "sam",
                    channel_order: str = "rgb") -> list[PredictionResult]:
    """Segment every object of every image; write instance PNGs, overlays, ``results.json`` and ``instances.json``."""
    if not 0.0 < threshold < 1.0:
        raise UsageError(f"--threshold must be in (0, 1), got {threshold}")
    check_object_prompts(paths, objects)
    device = device or next(model.parameters()).device
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)  # results.json is written even when no image could be read
    image_size = model_image_size(model)
    if resize is None and not keeps_aspect_ratio(model):
        resize = (image_size, image_size)
    logit_threshold = math.log(threshold / (1.0 - threshold))
    names = _output_names(paths)
    results, coco, images = [], [], []
    for image_id, path in enumerate(paths, start=1):
        mine = objects_for_image(path, objects)
        try:
            image, size = decode_image(str(path))
        except DataError as err:
            results.append(PredictionResult(path, error=error_line(err).removeprefix(f"{path}: ")))
            continue
        if not mine:
            continue
        pixels, reshaped = preprocess_image(image, image_size, mean=image_mean, std=image_std, resize=resize,
                                            preprocessing=preprocessing, channel_order=channel_order)
        embeddings = model.get_image_embeddings(pixels[None].to(device))  # the encoder once per image
        masks, scores = [], []
        for obj in mine:
            fitted, _ = fit_prompt(obj.prompt, size, str(path))
            prompts = {k: v.to(device) for k, v in _prompt_tensors([fitted], [size], image_size, resize).items()}
            out = model(image_embeddings=embeddings, multimask_output=False, **prompts)
            logits = upsample_logits(out.pred_masks, pixels.shape[-2:])
            full = logits_to_original(logits[0, 0], logits.shape[-2:], reshaped, size).cpu().numpy()
            masks.append(full > logit_threshold)
            scores.append(float(out.iou_scores.reshape(-1)[0]))
        stem = names[path]
        found = write_instance_outputs(out_dir, stem, image, np.stack(masks), scores=scores, image_id=image_id)
        for result, obj in zip(found, mine):
            result["object_id"] = obj.object_id
        coco.extend(found)
        images.append({"id": image_id, "file_name": path.name, "height": size[0], "width": size[1]})
        results.append(PredictionResult(path, out_dir / f"{stem}_instances.png", out_dir / f"{stem}_overlay.png",
                                        foreground_fraction=float(np.any(masks, axis=0).mean())))
    atomic_write_json(out_dir / "results.json", coco)
    atomic_write_json(out_dir / "instances.json", coco_dataset(images, coco))
    return results
