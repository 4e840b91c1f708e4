"""Instance sources (COCO JSON, instance-id masks, an ``objects`` column): one row per object, problems up front."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infosam_hf.data import DataError
from infosam_hf.data.sources import load_splits
from infosam_hf.data.validation import DataValidationError

pytest.importorskip("pycocotools")

from tests.testing_utils import (BOXES, INSTANCE_SIZE, box_mask, make_coco_set,  # noqa: E402
                                 make_instance_mask_set, make_objects_dataset)

ROOT = Path(__file__).resolve().parents[1]


def _label(dataset, row) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(dataset[row]["label"]["bytes"]))) > 0


@pytest.mark.parametrize("nested", [False, True])
def test_coco_polygons_rle_and_uncompressed_rle(tmp_path, nested):
    splits = load_splits(str(make_coco_set(tmp_path / "coco", nested)))
    assert sorted(splits) == ["test", "train"]
    train = splits["train"]
    assert len(train) == 2 * len(BOXES)
    for row, box in enumerate(BOXES):
        np.testing.assert_array_equal(_label(train, row), box_mask(box))
    assert train[0]["image"]["path"].endswith("images/a.png") and train[3]["image"]["path"].endswith("images/b.png")


@pytest.mark.parametrize("csv", [True, False])
def test_instance_id_masks_csv_and_folder(tmp_path, csv):
    splits = load_splits(str(make_instance_mask_set(tmp_path / "inst", csv)))
    if csv:
        assert sorted(splits) == ["test", "train"] and len(splits["test"]) == len(BOXES)
    train = splits["train"]
    assert len(train) == (2 if csv else 3) * len(BOXES)
    for row, box in enumerate(BOXES):
        np.testing.assert_array_equal(_label(train, row), box_mask(box))


def test_objects_column_dataset(tmp_path):
    splits = load_splits(str(make_objects_dataset(tmp_path / "objects")))
    train = splits["train"]
    assert train.column_names == ["image", "label", "image_id", "category"] and len(train) == 2 * len(BOXES)
    assert train["image_id"] == [0, 0, 0, 1, 1, 1] and train["category"] == ["leaf", "stem", "leaf"] * 2
    np.testing.assert_array_equal(_label(train, 1), box_mask(BOXES[1]))


def test_coco_problems_reported_at_once_one_line_each(tmp_path):
    root = make_coco_set(tmp_path / "coco")
    data = json.loads((root / "train.json").read_text())
    data["images"].append({"id": 9, "file_name": "missing.png", "height": INSTANCE_SIZE, "width": INSTANCE_SIZE})
    data["annotations"].append(dict(data["annotations"][0], id=90, image_id=9))
    data["annotations"][0]["bbox"] = [30, 30, 40, 40]  # outside the 48x48 image
    data["annotations"][1]["segmentation"] = {"size": [INSTANCE_SIZE, INSTANCE_SIZE], "counts": [INSTANCE_SIZE * INSTANCE_SIZE]}  # empty
    data["annotations"][2]["category_id"] = 7
    data["annotations"][4]["segmentation"] = [[1, 1, 5, 5]]  # a "polygon" of two points: empty
    (root / "train.json").write_text(json.dumps(data))
    with pytest.raises(DataValidationError) as info:
        load_splits(str(root))["train"]
    lines = str(info.value).splitlines()
    assert lines[0].startswith("validate_data=headers found 5 problem(s)")
    text = "\n".join(lines)
    assert "image 9: image file not found:" in text and "missing.png" in text
    assert "annotation 1 " in text and "lies outside its 48x48 image" in text
    assert "annotation 2 " in text and "empty object" in text
    assert "annotation 3 " in text and "unknown category_id 7" in text
    assert "annotation 5 " in text and text.count("empty object") == 2


def test_instance_csv_missing_file_named(tmp_path):
    root = make_instance_mask_set(tmp_path / "inst", csv=True)
    (root / "instances" / "b.png").unlink()
    with pytest.raises(DataError, match=r"train.csv: row 2 \(line 3\): instances file not found: .*b.png"):
        load_splits(str(root))["train"]


def test_objects_column_problems(tmp_path):
    from datasets import load_from_disk

    root = make_objects_dataset(tmp_path / "objects")
    data = load_from_disk(str(root))
    rows = data["train"].to_dict()
    rows["objects"][0][0]["bbox"] = [40, 40, 20, 20]  # outside
    rows["objects"][1][2]["mask"] = Image.fromarray(np.zeros((INSTANCE_SIZE, INSTANCE_SIZE), np.uint8))  # empty
    type(data["train"]).from_dict(rows, features=data["train"].features).save_to_disk(str(tmp_path / "bad"))
    with pytest.raises(DataValidationError) as info:
        load_splits(str(tmp_path / "bad"))["train"]
    text = str(info.value)
    assert "row 0 object 0: bbox" in text and "lies outside" in text and "row 1 object 2: empty object" in text


@pytest.mark.parametrize("kind", ["coco", "masks", "objects"])
def test_instance_sets_train_with_infosam(tmp_path, kind):
    from infosam_hf.commands.train import main

    make = {"coco": make_coco_set, "masks": lambda p: make_instance_mask_set(p, csv=True),
            "objects": make_objects_dataset}[kind]
    data = make(tmp_path / "data")
    argv = [str(ROOT / "recipes" / "demo.yaml"), "--dataset_name_or_path", str(data), "--output_dir",
            str(tmp_path / "out"), "--max_steps", "2", "--per_device_train_batch_size", "4",
            "--per_device_eval_batch_size", "4", "--eval_before_training", "false", "--logging_steps", "1"]
    assert main(argv) == 0
