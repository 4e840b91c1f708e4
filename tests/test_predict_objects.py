"""Several prompted objects per image: instance-id PNG, per-object overlay and COCO results that reload."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from infosam_hf.commands import predict as predict_cmd
from infosam_hf.data import preprocess_image
from infosam_hf.evaluation.loop import sam_logits
from infosam_hf.evaluation.metrics import logits_to_original
from infosam_hf.evaluation.predict import Prompt, _prompt_tensors
from tests.testing_utils import perturb_trainable, student_on, tiny_sam

pytest.importorskip("pycocotools")

BOXES = ["4,6,40,50", "50,10,90,60", "10,40,70,75"]


def _adapter(tmp_path):
    student = student_on(tiny_sam(0), "lora", {"r": 4, "lora_alpha": 4}, base_dir=tmp_path / "base")
    perturb_trainable(student)
    student.save_pretrained(tmp_path / "lora")
    return student.eval(), tmp_path / "lora"


def _single_mask(model, image, box):
    """The mask ``infosam predict --box`` computes for one object alone."""
    pixels, reshaped = preprocess_image(image, 64)
    prompt = Prompt(box=tuple(float(v) for v in box.split(",")))
    batch = {"pixel_values": pixels[None], **_prompt_tensors([prompt], [(image.height, image.width)], 64)}
    with torch.no_grad():
        logits = sam_logits(model, batch)
    return logits_to_original(logits[0, 0], logits.shape[-2:], reshaped, (image.height, image.width)).numpy() > 0


def test_repeated_boxes_write_instances_overlay_and_coco_json(tmp_path, capsys):
    from pycocotools.coco import COCO

    model, adapter = _adapter(tmp_path)
    rng = np.random.default_rng(0)
    paths = []
    for name in ("a.png", "b.png"):
        paths.append(tmp_path / name)
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(paths[-1])
    out = tmp_path / "pred"
    argv = ["--adapter", str(adapter), "--images", *map(str, paths), "--out", str(out), "--no_progress"]
    for box in BOXES:
        argv += ["--box", box]
    assert predict_cmd.main(argv) == 0
    coco = COCO(str(out / "instances.json"))
    results = coco.loadRes(str(out / "results.json"))
    assert len(results.anns) == 2 * len(BOXES) and sorted(coco.imgs) == [1, 2]
    assert sorted(a["object_id"] for a in results.anns.values()) == [1, 1, 2, 2, 3, 3]
    image = Image.open(paths[0]).convert("RGB")
    ids = np.asarray(Image.open(out / "a_instances.png"))
    assert ids.shape == (80, 100) and Image.open(out / "a_overlay.png").size == (100, 80)
    covered = 0
    for ann in results.loadAnns(results.getAnnIds(imgIds=[1])):
        mask = results.annToMask(ann).astype(bool)
        covered += int(mask.sum())
        expected = _single_mask(model, image, BOXES[ann["object_id"] - 1])  # the encoder shared, masks unchanged
        np.testing.assert_array_equal(mask, expected)
        assert set(np.unique(ids[mask])) <= set(range(len(BOXES) + 1))
    assert covered > 0 and (ids > 0).sum() > 0  # the masks are not all empty


def test_prompts_file_json_and_csv(tmp_path, capsys):
    from pycocotools.coco import COCO

    _, adapter = _adapter(tmp_path)
    for name in ("a.png", "b.png"):
        Image.fromarray(np.full((64, 64, 3), 120, np.uint8)).save(tmp_path / name)
    entries = [{"image": "a.png", "object_id": 7, "box": [2, 2, 30, 30]},
               {"image": "a.png", "object_id": 9, "points": [[40, 40], [10, 10, 0]]},
               {"image": "b.png", "object_id": 1, "box": [5, 5, 60, 60]}]
    (tmp_path / "prompts.json").write_text(json.dumps(entries))
    (tmp_path / "prompts.csv").write_text('image,object_id,box,points\na.png,7,"2,2,30,30",\n'
                                          'a.png,9,,"40,40;10,10,0"\nb.png,1,"5,5,60,60",\n')
    for kind in ("json", "csv"):
        out = tmp_path / f"out_{kind}"
        argv = ["--adapter", str(adapter), "--images", str(tmp_path / "a.png"), str(tmp_path / "b.png"),
                "--out", str(out), "--prompts", str(tmp_path / f"prompts.{kind}"), "--no_progress"]
        assert predict_cmd.main(argv) == 0
        results = COCO(str(out / "instances.json")).loadRes(str(out / "results.json"))
        by_image = {i: sorted(a["object_id"] for a in results.imgToAnns[i]) for i in results.imgToAnns}
        assert by_image == {1: [7, 9], 2: [1]}
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "c.png", "box": [1, 1, 5, 5]}]))
    argv[argv.index("--prompts") + 1] = str(tmp_path / "bad.json")
    assert predict_cmd.main(argv) == 2
    assert "image 'c.png' (object 1) is not among --images" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "a.png", "box": [5, 5, 1, 1]}]))
    assert predict_cmd.main(argv) == 2
    assert "bad.json: entry 0: --box" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "b.png", "box": [100, 100, 120, 120]}]))
    assert predict_cmd.main(argv) == 2
    assert "lies entirely outside image" in capsys.readouterr().err
