"""Many prompted objects per image in one call (``infosam predict`` with several ``--box`` / ``--points``, or
``--prompts FILE``).

Each image is encoded once; the prompt encoder and mask decoder run once per object. Per image, ``--out`` gets
``<stem>_instances.png`` (pixel value = object id, 0 = background; where objects overlap the higher-scoring one
wins) and ``<stem>_overlay.png`` (one colour per object); ``results.json`` holds every object in COCO's results
format (RLE, ``score`` = SAM's predicted IoU, ``object_id``) and ``instances.json`` the same as a COCO data set.

A prompts file is JSON (a list of ``{"image", "object_id", "box": [x0, y0, x1, y1], "points": [[x, y, label?],
...]}``) or CSV (columns ``image,object_id,box,points``; ``box`` as ``x0,y0,x1,y1``, ``points`` as
``x,y[,label];...``). ``image`` is the image's file name (or path) as given by ``--images``; coordinates are
original-image pixels.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
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
from .predict import (PredictionResult, Prompt, _output_names, _prompt_tensors, check_prompt, fit_prompt, parse_box,
                      parse_points)

__all__ = ["ObjectPrompt", "check_object_prompts", "objects_from_options", "predict_objects", "read_prompts_file"]


@dataclass
class ObjectPrompt:
    """One object's prompt; ``image`` None means every image."""

    object_id: int
    prompt: Prompt
    image: str | None = None


def objects_from_options(boxes: Sequence[str] | None, points: Sequence[str] | None) -> list[ObjectPrompt]:
    """Every ``--box`` and every ``--points`` is one object (ids 1, 2, ... in that order), applied to every image."""
    objects = [ObjectPrompt(0, Prompt(box=parse_box(text))) for text in boxes or []]
    for text in points or []:
        parsed, labels = parse_points(text)
        objects.append(ObjectPrompt(0, Prompt(points=parsed, labels=labels)))
    for index, obj in enumerate(objects, start=1):
        obj.object_id = index
    return objects


def _file_prompt(where: str, box, points) -> Prompt:
    prompt = Prompt()
    try:
        if box not in (None, "", []):
            prompt.box = parse_box(box if isinstance(box, str) else ",".join(str(v) for v in box))
        if points not in (None, "", []):
            text = points if isinstance(points, str) else ";".join(",".join(str(v) for v in p) for p in points)
            prompt.points, prompt.labels = parse_points(text)
    except UsageError as err:
        raise UsageError(f"{where}: {err}") from None
    if prompt.empty:
        raise UsageError(f"{where}: neither a box nor points")
    return prompt


def read_prompts_file(path: str | Path) -> list[ObjectPrompt]:
    """Object prompts from a JSON or CSV file (see the module docstring); a bad entry is one line naming it."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"--prompts {path}: file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise UsageError(f"--prompts {path}: cannot read it ({type(err).__name__})") from None
    if path.suffix.lower() == ".json":
        try:
            entries = json.loads(text)
        except json.JSONDecodeError as err:
            raise UsageError(f"--prompts {path}: invalid JSON ({err})") from None
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise UsageError(f"--prompts {path}: expected a JSON list of objects")
        rows = [(f"--prompts {path}: entry {i}", e) for i, e in enumerate(entries)]
    else:
        reader = csv.DictReader(text.splitlines())
        if "image" not in (reader.fieldnames or []):
            raise UsageError(f"--prompts {path}: CSV needs columns image,object_id,box,points; "
                             f"found {reader.fieldnames}")
        rows = [(f"--prompts {path}: line {i}", e) for i, e in enumerate(reader, start=2)]
    objects = []
    for index, (where, entry) in enumerate(rows, start=1):
        if not entry.get("image"):
            raise UsageError(f"{where}: no image")
        try:
            object_id = int(entry.get("object_id") or index)
        except (TypeError, ValueError):
            raise UsageError(f"{where}: object_id {entry.get('object_id')!r} is not an integer") from None
        objects.append(ObjectPrompt(object_id, _file_prompt(where, entry.get("box"), entry.get("points")),
                                    str(entry["image"])))
    if not objects:
        raise UsageError(f"--prompts {path}: no prompts")
    return objects


def _objects_of(path: Path, objects: Sequence[ObjectPrompt]) -> list[ObjectPrompt]:
    return [o for o in objects if o.image is None or o.image in (path.name, str(path)) or Path(o.image) == path]


def check_object_prompts(paths: Sequence[Path], objects: Sequence[ObjectPrompt]) -> None:
    """Every image named in a prompts file is among ``paths`` and every prompt fits its images (headers only);
    one line naming the first problem."""
    for obj in objects:
        mine = [p for p in paths if _objects_of(p, [obj])]
        if obj.image is not None and not mine:
            raise UsageError(f"--prompts: image {obj.image!r} (object {obj.object_id}) is not among --images")
        check_prompt(obj.prompt, mine)


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
    image_size = model_image_size(model)
    if resize is None and not keeps_aspect_ratio(model):
        resize = (image_size, image_size)
    logit_threshold = math.log(threshold / (1.0 - threshold))
    names = _output_names(paths)
    results, coco, images = [], [], []
    for image_id, path in enumerate(paths, start=1):
        mine = _objects_of(path, objects)
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
