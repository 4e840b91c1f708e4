"""What ``infosam predict`` is given, read and checked before any model loads: the images (files, folders, globs)
and the prompts (``--box`` / ``--points``, one per image or several objects per image, or a ``--prompts`` file).

Coordinates are in the original image's pixels. A prompts file is JSON (a list of ``{"image", "object_id", "box":
[x0, y0, x1, y1], "points": [[x, y, label?], ...]}``) or CSV (columns ``image,object_id,box,points``; ``box`` as
``x0,y0,x1,y1``, ``points`` as ``x,y[,label];...``); ``image`` is the file name (or path) as given by ``--images``.
Only numpy and PIL are imported here, so a usage error is reported in well under a second.
"""

from __future__ import annotations

import csv
import glob
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..data.decoding import IMAGE_EXTENSIONS, DataError, header_sizes, open_image
from ..errors import UsageError

__all__ = ["ObjectPrompt", "Prompt", "check_object_prompts", "check_prompt", "find_images", "fit_prompt",
           "objects_for_image", "objects_from_options", "parse_box", "parse_points", "read_prompts_file"]


@dataclass
class Prompt:
    """One prompt applied to every image, in original-image pixels. Empty (all None) for ``--auto``."""

    box: tuple[float, float, float, float] | None = None
    points: list[tuple[float, float]] | None = None
    labels: list[int] | None = None

    @property
    def empty(self) -> bool:
        return self.box is None and not self.points


def parse_box(text: str) -> tuple[float, float, float, float]:
    """``"x0,y0,x1,y1"`` → a box with ``x0 < x1`` and ``y0 < y1``."""
    try:
        values = tuple(float(v) for v in text.replace(" ", "").split(","))
    except ValueError:
        raise UsageError(f"--box {text!r}: expected four numbers x0,y0,x1,y1") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise UsageError(f"--box {text!r}: expected four numbers x0,y0,x1,y1")
    x0, y0, x1, y1 = values
    if x1 <= x0 or y1 <= y0:
        raise UsageError(f"--box {text!r}: needs x0 < x1 and y0 < y1 (top-left corner first)")
    return values


def parse_points(text: str) -> tuple[list[tuple[float, float]], list[int]]:
    """``"x,y[,label];x,y[,label]..."`` → points and labels (1 foreground, the default; 0 background)."""
    points, labels = [], []
    for item in (part.strip() for part in text.split(";")):
        if not item:
            continue
        parts = item.replace(" ", "").split(",")
        try:
            numbers = [float(v) for v in parts]
        except ValueError:
            numbers = []
        if len(numbers) not in (2, 3) or not all(math.isfinite(v) for v in numbers):
            raise UsageError(f"--points: {item!r} is not x,y or x,y,label")
        label = int(numbers[2]) if len(numbers) == 3 else 1
        if len(numbers) == 3 and (numbers[2] not in (0.0, 1.0)):
            raise UsageError(f"--points: label of {item!r} must be 1 (foreground) or 0 (background)")
        points.append((numbers[0], numbers[1]))
        labels.append(label)
    if not points:
        raise UsageError(f"--points {text!r}: no points given")
    return points, labels


def _images_of(spec: str) -> list[Path]:
    path = Path(spec).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise UsageError(f"--images {spec}: no image files ({', '.join(IMAGE_EXTENSIONS)}) in this folder")
        return files
    if path.is_file():
        return [path]
    if glob.has_magic(spec):
        files = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        if not files:
            raise UsageError(f"--images {spec}: the pattern matches no files")
        return files
    raise UsageError(f"--images {spec}: no such file or folder")


def find_images(specs: str | Sequence[str]) -> list[Path]:
    """The images named by ``specs``: files, folders (their image files, sorted) and glob patterns,
    in the order given, each file once."""
    specs = [specs] if isinstance(specs, (str, Path)) else list(specs)
    if not specs:
        raise UsageError("--images: give at least one image file, folder or glob pattern")
    found: dict[Path, None] = {}
    for spec in specs:
        found.update(dict.fromkeys(_images_of(str(spec))))
    return list(found)


def fit_prompt(prompt: Prompt, size: tuple[int, int], name: str) -> tuple[Prompt, bool]:
    """``prompt`` fitted to an image of (height, width) ``size``, and whether its box was clipped.

    A box entirely outside the image, or a point outside it (0 <= x <= width, 0 <= y <= height),
    is a :class:`UsageError` naming the image and its size; a box partly outside is clipped to it.
    """
    height, width = size
    where = f"image {name} ({width}x{height}, WxH)"
    for x, y in prompt.points or []:
        if not (0 <= x <= width and 0 <= y <= height):
            raise UsageError(f"--points: the point {x:g},{y:g} lies outside {where}")
    if prompt.box is None:
        return prompt, False
    x0, y0, x1, y1 = prompt.box
    if x0 >= width or y0 >= height or x1 <= 0 or y1 <= 0:
        raise UsageError(f"--box {x0:g},{y0:g},{x1:g},{y1:g} lies entirely outside {where}")
    box = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if box == tuple(prompt.box):
        return prompt, False
    return Prompt(box=box, points=prompt.points, labels=prompt.labels), True


def check_prompt(prompt: Prompt, paths: Sequence[Path]) -> None:
    """Fail (before any model loads) when the prompt does not fit an image; reads headers only.

    Images whose header cannot be read are left to :func:`predict_masks`, which reports them.
    """
    if prompt.empty:
        return
    for path in paths:
        try:
            image = open_image(str(path))
        except DataError:
            continue
        with image:
            size, _ = header_sizes(image)  # prompts are in the EXIF-oriented frame, as viewers show it
        fit_prompt(prompt, size, str(path))


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


def objects_for_image(path: Path, objects: Sequence[ObjectPrompt]) -> list[ObjectPrompt]:
    return [o for o in objects if o.image is None or o.image in (path.name, str(path)) or Path(o.image) == path]


def check_object_prompts(paths: Sequence[Path], objects: Sequence[ObjectPrompt]) -> None:
    """Every image named in a prompts file is among ``paths`` and every prompt fits its images (headers only);
    one line naming the first problem."""
    for obj in objects:
        mine = [p for p in paths if objects_for_image(p, [obj])]
        if obj.image is not None and not mine:
            raise UsageError(f"--prompts: image {obj.image!r} (object {obj.object_id}) is not among --images")
        check_prompt(obj.prompt, mine)
