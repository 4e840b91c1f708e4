"""preprocessing: official reproduces the official InfoSAM loader (OpenCV BGR, black padding, v // 255 masks)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from infosam_hf.data import DataArguments, SamSegmentationTransform, build_datasets
from infosam_hf.data.decoding import decode_mask_official

cv2 = pytest.importorskip("cv2")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def official_reference(image_path, mask_path, size):
    """The official CSVDataset + TransformSam, written from its description with OpenCV and PIL."""
    image = cv2.imread(str(image_path))
    mask = cv2.imread(str(mask_path), cv2.IMREAD_GRAYSCALE)
    if mask.max() == 255:
        mask = (mask / 255).astype(np.uint8)
    h, w = mask.shape
    scale = size / max(h, w)
    new_h, new_w = int(h * scale + 0.5), int(w * scale + 0.5)

    def resize_pad(array):
        resized = np.array(Image.fromarray(array).resize((new_w, new_h), Image.BILINEAR))
        pad = ((0, size - new_h), (0, size - new_w)) + (((0, 0),) if resized.ndim == 3 else ())
        return np.pad(resized, pad, mode="constant")

    pixels = torch.from_numpy(resize_pad(image)).permute(2, 0, 1).float().div(255)
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    pixels = (pixels - mean[:, None, None]) / std[:, None, None]
    return pixels, resize_pad(mask), mask


def _write_pair(tmp_path, mask_values, name="a"):
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (30, 50, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / f"{name}.png")
    Image.fromarray(mask_values.astype(np.uint8)).save(tmp_path / f"{name}_m.png")
    return tmp_path / f"{name}.png", tmp_path / f"{name}_m.png"


@pytest.mark.parametrize("levels", ["0/255 with gray edge", "0/1", "raw 0..200"])
def test_official_transform_matches_official_loader(tmp_path, levels):
    mask = np.zeros((30, 50), np.uint8)
    if levels == "0/1":
        mask[5:20, 10:30] = 1
    elif levels == "raw 0..200":
        mask[5:20, 10:30] = 200
        mask[20:22, 10:30] = 7
    else:
        mask[5:20, 10:30] = 255
        mask[20:22, 10:30] = 128  # not exactly 255: background under v // 255
    image_path, mask_path = _write_pair(tmp_path, mask)
    pixels, label, original = official_reference(image_path, mask_path, 64)
    transform = SamSegmentationTransform(64, prompt_mode="box", preprocessing="official")
    out = transform.example({"path": str(image_path)}, {"path": str(mask_path)}, index=0)
    torch.testing.assert_close(out["pixel_values"], pixels, rtol=0, atol=1e-6)
    assert np.array_equal(out["labels"].numpy(), label)  # the official target: 0/1, or raw levels
    assert np.array_equal(out["original_labels"].numpy(), original > 0)  # the official metrics' gt > threshold
    # the padding is black normalised, not 0; the channels are B, G, R
    torch.testing.assert_close(out["pixel_values"][:, -1, -1], torch.tensor([-2.1179, -2.0357, -1.8044]),
                               atol=1e-4, rtol=0)
    sam = SamSegmentationTransform(64, prompt_mode="box").example({"path": str(image_path)},
                                                                 {"path": str(mask_path)}, index=0)
    assert torch.equal(sam["pixel_values"][:, -1, -1], torch.zeros(3))


def test_official_mask_rule(tmp_path):
    mask = np.array([[0, 128, 254, 255]], np.uint8)
    _, mask_path = _write_pair(tmp_path, np.repeat(mask, 2, 0))
    assert decode_mask_official({"path": str(mask_path)}).tolist() == [[0, 0, 0, 1]] * 2
    _, mask_path = _write_pair(tmp_path, np.repeat(np.array([[0, 3, 254]], np.uint8), 2, 0), name="b")
    assert decode_mask_official({"path": str(mask_path)}).tolist() == [[0, 3, 254]] * 2


def test_official_preprocessing_options_checked():
    with pytest.raises(ValueError, match=r"preprocessing='opencv' is not one of \[sam, official\]"):
        DataArguments(preprocessing="opencv")
    with pytest.raises(ValueError, match="does not take mask_threshold, invert_mask"):
        DataArguments(preprocessing="official", mask_threshold=10, invert_mask=True)


@pytest.mark.skipif(not (DATA / "leaf_disease").is_dir(), reason="real data not available")
def test_leaf_official_matches_reference_and_keeps_resize():
    """Real leaf JPEGs (no draft decoding) through the dataset path, and with resize (G-SAM) still working."""
    root = DATA / "leaf_disease"
    args = DataArguments(dataset_name_or_path=str(root), preprocessing="official", max_eval_samples=2,
                         max_train_samples=2, validate_data="none")
    splits = build_datasets(args, image_size=128, seed=0, need_eval=False)
    first = splits.test[0]
    row = open(root / "test.csv").read().splitlines()[1].split(",")
    pixels, label, original = official_reference(root / row[0], root / row[1], 128)
    torch.testing.assert_close(first["pixel_values"], pixels, rtol=0, atol=1e-6)
    assert np.array_equal(first["original_labels"].numpy(), original > 0)
    assert np.array_equal(first["labels"].numpy() > 0, label > 0)
    resized = build_datasets(DataArguments(dataset_name_or_path=str(root), preprocessing="official",
                                           max_train_samples=1, max_eval_samples=1, validate_data="none",
                                           resize=[96, 128], image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5]),
                             image_size=128, seed=0, need_eval=False).test[0]
    assert resized["pixel_values"].shape == (3, 96, 128)
    assert float(resized["pixel_values"].min()) >= -1 and float(resized["pixel_values"].max()) <= 1


def test_prediction_preprocesses_as_the_official_training(tmp_path):
    """infosam predict follows run_args.json's preprocessing: the same pixels as the training transform."""
    from infosam_hf.data import decode_image, preprocess_image
    from infosam_hf.models.inference import run_input_settings

    mask = np.zeros((30, 50), np.uint8)
    mask[5:20, 10:30] = 255
    image_path, mask_path = _write_pair(tmp_path, mask)
    training = SamSegmentationTransform(64, preprocessing="official").example(
        {"path": str(image_path)}, {"path": str(mask_path)}, index=0)["pixel_values"]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run_args.json").write_text('{"data": {"preprocessing": "official", "resize": null}}')
    settings = run_input_settings(str(tmp_path / "run"))
    assert settings == {"preprocessing": "official"}
    pixels, _ = preprocess_image(decode_image(str(image_path))[0], 64, **settings)
    assert torch.equal(pixels, training)
