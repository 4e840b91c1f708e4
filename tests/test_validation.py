"""Up-front data validation (``validate_data``) and masks stored in alpha channels."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import pytest
from datasets import Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image, ImageFile

from infosam_hf.commands import train as train_cli
from infosam_hf.data import DataArguments, DataError, DataValidationError, decode_mask, select_splits
from infosam_hf.data import decoding, validation, with_sam_transform
from infosam_hf.evaluation import evaluate as evaluate_lib
from infosam_hf.training import run as run_module

ROOT = Path(__file__).resolve().parents[1]
DEMO = str(ROOT / "recipes" / "demo.yaml")


def _pair(root: Path, name: str, size=(40, 30), mask_size=None, image_format: str = "png") -> str:
    """Write images/<name>.<fmt> (size WxH) and masks/<name>.png (mask_size, default size); a CSV row."""
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(name))
    width, height = size
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(
        root / "images" / f"{name}.{image_format}")
    mask_w, mask_h = mask_size or size
    mask = np.zeros((mask_h, mask_w), np.uint8)
    mask[mask_h // 4: mask_h // 2, mask_w // 4: mask_w // 2] = 255
    Image.fromarray(mask).save(root / "masks" / f"{name}.png")
    return f"images/{name}.{image_format},masks/{name}.png"


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _csv(root: Path, rows: list[str], split: str = "train") -> Path:
    (root / f"{split}.csv").write_text("image,label\n" + "\n".join(rows) + "\n")
    return root


def _bad_set(root: Path) -> Path:
    """Five pairs: one size mismatch (odd), one truncated JPEG (cut), three fine."""
    rows = [_pair(root, f"ok{i}") for i in range(3)]
    rows.append(_pair(root, "odd", size=(200, 150), mask_size=(100, 75)))
    rows.append(_pair(root, "cut", size=(64, 48), image_format="jpg"))
    _truncate(root / "images" / "cut.jpg")
    return _csv(root, rows)


def _args(root: Path, **kwargs) -> DataArguments:
    return DataArguments(dataset_name_or_path=str(root), test_split=None, validation_split_percentage=0, **kwargs)


def test_full_names_both_bad_files_before_the_model_loads(tmp_path, monkeypatch, capsys):
    root = _bad_set(tmp_path / "bad")

    def no_model(*args, **kwargs):
        pytest.fail("the model was loaded before the data was checked")

    monkeypatch.setattr(run_module, "build_models", no_model)
    status = train_cli.main([DEMO, "--dataset_name_or_path", str(root), "--test_split", "",
                             "--validate_data", "full", "--output_dir", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 2, err
    assert "validate_data=full found 2 problem(s) in 5 image/mask pair(s)" in err
    assert "size mismatch: image" in err and "images/odd.png is 200x150" in err
    assert "masks/odd.png is 100x75" in err
    assert "images/cut.jpg: corrupt or unreadable image" in err and "truncated" in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()  # nothing written


def test_headers_catch_sizes_and_unreadable_files_but_not_truncated_pixels(tmp_path, monkeypatch):
    root = _bad_set(tmp_path / "bad")
    (root / "images" / "ok0.png").write_bytes(b"not an image at all")
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda *a, **k: pytest.fail("headers decoded pixels"))
    with pytest.raises(DataValidationError) as err:
        select_splits(_args(root))  # validate_data defaults to headers
    problems = err.value.problems
    assert len(problems) == 2, problems
    assert "ok0.png: corrupt or unreadable image" in problems[0] and "odd.png is 200x150" in problems[1]
    # the truncated JPEG's header is intact: only `full` finds it
    assert not any("cut.jpg" in problem for problem in problems)
    assert select_splits(_args(root, validate_data="none")).train is not None


def test_every_problem_up_to_a_limit_and_unsupported_modes(tmp_path):
    root = tmp_path / "many"
    rows = [_pair(root, f"m{i:02d}", size=(20, 10), mask_size=(10, 20)) for i in range(validation.MAX_REPORTED + 3)]
    _csv(root, rows)
    with pytest.raises(DataValidationError) as err:
        select_splits(_args(root))
    message = str(err.value)
    assert f"found {validation.MAX_REPORTED + 3} problem(s)" in message
    assert "m00.png" in message and f"m{validation.MAX_REPORTED - 1:02d}.png" in message
    assert f"m{validation.MAX_REPORTED:02d}.png" not in message and "... and 3 more" in message
    # colour masks cannot hold class ids: reported from the header alone
    colour = tmp_path / "colour"
    _csv(colour, [_pair(colour, "a")])
    Image.new("RGB", (40, 30)).save(colour / "masks" / "a.png")
    with pytest.raises(DataValidationError) as err:
        select_splits(_args(colour, num_labels=3))
    assert "\n" not in str(err.value)  # a single problem is one line
    assert "masks/a.png: unsupported mask mode RGB" in str(err.value)
    with pytest.raises(ValueError, match=r"validate_data='quick' is not one of \[headers, full, none\]"):
        DataArguments(validate_data="quick")


def _exif_jpeg(path: Path, width: int, height: int, orientation: int) -> None:
    image = Image.fromarray(np.zeros((height, width, 3), np.uint8))
    exif = image.getexif()
    exif[decoding.EXIF_ORIENTATION] = orientation
    image.save(path, exif=exif.tobytes())


def test_exif_orientation_as_the_transform_sees_it(tmp_path):
    root = tmp_path / "phone"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rows = []
    for name, mask_size in (("displayed", (20, 40)), ("stored", (40, 20)), ("other", (30, 30))):
        _exif_jpeg(root / "images" / f"{name}.jpg", 40, 20, orientation=6)  # stored 40x20, shown 20x40
        Image.new("L", mask_size).save(root / "masks" / f"{name}.png")
        rows.append(f"images/{name}.jpg,masks/{name}.png")
    _csv(root, rows)
    with pytest.raises(DataValidationError) as err:
        select_splits(_args(root))
    assert err.value.problems == [f"size mismatch: image {root}/images/other.jpg is 20x40 but mask "
                                  f"{root}/masks/other.png is 30x30 (WxH)"]


def test_in_memory_images_of_a_saved_dataset(tmp_path):
    def png(width, height, mode="RGB"):
        buffer = io.BytesIO()
        Image.new(mode, (width, height)).save(buffer, "PNG")
        return {"bytes": buffer.getvalue(), "path": None}

    features = Features({"photo": ImageFeature(), "annotation": ImageFeature()})
    dataset = Dataset.from_dict({"photo": [png(8, 6), png(8, 6), png(8, 6)],
                                 "annotation": [png(8, 6, "L"), png(6, 8, "L"), {"bytes": b"junk", "path": None}]},
                                features=features)
    dataset.save_to_disk(str(tmp_path / "saved"))
    args = _args(tmp_path / "saved", image_column="photo", mask_column="annotation", validate_data="full")
    with pytest.raises(DataValidationError) as err:
        select_splits(args)
    problems = err.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("train row 1: size mismatch") and "is 8x6 but mask" in problems[0]
    assert problems[1].startswith("train row 2: <in-memory image>: corrupt or unreadable image")


def test_a_file_broken_after_the_check_still_fails_in_one_line(tmp_path):
    root = tmp_path / "later"
    _csv(root, [_pair(root, "a", image_format="jpg"), _pair(root, "b")])
    args = _args(root, validate_data="full")
    train = with_sam_transform(select_splits(args).train, args, image_size=32, train=False)
    _truncate(root / "images" / "a.jpg")
    with pytest.raises(DataError) as err:
        train[0]
    assert "\n" not in str(err.value) and "images/a.jpg: corrupt or unreadable image" in str(err.value)


def test_evaluate_checks_the_data_before_loading_the_model(tmp_path, monkeypatch):
    root = _bad_set(tmp_path / "bad")
    (root / "train.csv").rename(root / "test.csv")
    monkeypatch.setattr(evaluate_lib, "load_for_inference", lambda *a, **k: pytest.fail("model loaded first"))
    with pytest.raises(DataValidationError) as err:
        evaluate_lib.evaluate_adapter("some/adapter", DataArguments(dataset_name_or_path=str(root),
                                                                    validate_data="full"), device="cpu")
    assert len(err.value.problems) == 2


# ----------------------------------------------------------------------------- alpha masks


def _alpha_mask(mode: str) -> tuple[Image.Image, np.ndarray]:
    alpha = np.zeros((30, 40), np.uint8)
    alpha[5:20, 10:30] = 255
    colour = {"RGBA": (255, 255, 255), "LA": (0,)}[mode]
    array = np.concatenate([np.broadcast_to(np.array(colour, np.uint8), (30, 40, len(colour))),
                            alpha[..., None]], axis=2)
    return Image.fromarray(array, mode), alpha > 127


@pytest.mark.parametrize("mode", ["RGBA", "LA"])
def test_alpha_masks_train_on_their_alpha(tmp_path, mode, monkeypatch, caplog):
    monkeypatch.setattr(decoding, "_alpha_reported", False)
    root = tmp_path / "alpha"
    rows = [_pair(root, f"a{i}") for i in range(2)]
    _csv(root, rows)
    mask, expected = _alpha_mask(mode)
    for i in range(2):
        mask.save(root / "masks" / f"a{i}.png")
    with caplog.at_level(logging.WARNING):
        args = _args(root, validate_data="full")
        train = with_sam_transform(select_splits(args).train, args, image_size=40, train=True)
        labels = [train[i]["labels"].numpy() for i in range(2)]
    for label in labels:
        assert np.array_equal(label[:30, :40] > 0, expected), "the label is not the alpha channel"
    assert np.array_equal(decode_mask(str(root / "masks" / "a0.png")), expected)
    alpha_logs = [r for r in caplog.records if "alpha channel is used" in r.getMessage()]
    assert len(alpha_logs) == 1 and "masks/a" in alpha_logs[0].getMessage()  # a0 or a1: checked in threads


def test_masks_with_colour_information_ignore_alpha():
    array = np.zeros((10, 10, 4), np.uint8)
    array[2:5, 2:5, :3] = 255  # the mask is in the colour channels
    array[..., 3] = 255
    array[0, 0, 3] = 0  # alpha varies too, but the colour carries the mask
    decoded = decode_mask(Image.fromarray(array, "RGBA"))
    assert decoded.sum() == 9 and decoded[2:5, 2:5].all()
    flat = np.zeros((10, 10, 4), np.uint8)  # constant colour and constant alpha: an empty mask
    assert not decode_mask(Image.fromarray(flat, "RGBA")).any()
