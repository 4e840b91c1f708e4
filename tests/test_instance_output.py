"""Instance outputs: the id PNG round-trips, overlaps go to the higher score, COCO RLE reloads in pycocotools."""

import json

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

from infosam_hf.evaluation.instance_output import (
    coco_dataset,
    instance_id_map,
    instance_png,
    overlay_instances,
    write_instance_outputs,
)
from infosam_hf.io import atomic_write_json


def _objects(height=40, width=60):
    masks = np.zeros((3, height, width), bool)
    masks[0, 5:20, 5:25] = True
    masks[1, 15:35, 20:50] = True  # overlaps object 0
    masks[2, 30:38, 2:8] = True
    return masks


def test_overlap_goes_to_the_higher_score_and_ids_follow_input_order():
    masks = _objects()
    assert instance_id_map(masks, scores=[0.9, 0.2, 0.5])[17, 22] == 1
    assert instance_id_map(masks, scores=[0.1, 0.2, 0.5])[17, 22] == 2
    id_map = instance_id_map(masks)
    assert id_map[36, 4] == 3 and id_map[0, 0] == 0 and id_map.dtype == np.uint16


def test_png_round_trips_ids_up_to_and_beyond_255(tmp_path):
    small = instance_id_map(_objects())
    instance_png(small).save(tmp_path / "small.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "small.png")), small)
    many = np.arange(300 * 4, dtype=np.uint16).reshape(30, 40) % 301
    instance_png(many).save(tmp_path / "many.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "many.png")).astype(np.uint16), many)


def test_coco_results_reload_with_pycocotools(tmp_path):
    masks = _objects()
    image = Image.fromarray(np.full((40, 60, 3), 128, np.uint8))
    results = write_instance_outputs(tmp_path, "img", image, masks, scores=[0.9, 0.8, 0.7], image_id=7)
    assert (tmp_path / "img_instances.png").is_file() and (tmp_path / "img_overlay.png").is_file()
    atomic_write_json(tmp_path / "results.json", results)
    gt = coco_dataset([{"id": 7, "file_name": "img.png", "height": 40, "width": 60}], results)
    atomic_write_json(tmp_path / "dataset.json", gt)
    coco = COCO(str(tmp_path / "dataset.json"))
    loaded = coco.loadRes(str(tmp_path / "results.json"))
    for index, annotation in enumerate(loaded.loadAnns(loaded.getAnnIds(imgIds=[7]))):
        assert np.array_equal(loaded.annToMask(annotation).astype(bool), masks[index])
        assert annotation["bbox"] == list(mask_utils.toBbox(annotation["segmentation"]))
    assert json.loads((tmp_path / "results.json").read_text())[0]["score"] == pytest.approx(0.9)
    assert not list(tmp_path.glob(".*.tmp"))


def test_overlay_of_an_image_beyond_the_outline_grid_tints_and_outlines_each_object():
    masks = np.zeros((2, 2000, 3000), bool)  # longer side past the 2048-px outline grid
    masks[0, 100:1000, 100:1500] = True
    masks[1, 1200:1900, 1600:2900] = True
    image = Image.new("RGB", (3000, 2000), (0, 0, 0))
    overlay = np.asarray(overlay_instances(image, instance_id_map(masks), alpha=0.5))
    assert overlay[500, 500].any() and overlay[1500, 2000].any() and not overlay[1500, 500].any()
    assert not np.array_equal(overlay[500, 500], overlay[1500, 2000])
    assert (overlay[100, 800] > overlay[500, 500]).any()  # the outline is drawn at full colour
