"""Data layer: every source kind, decoding rules, prompts, augmentation, bad input, download unpacking.

Real-data tests read ``../shared/data`` (beside the project) through the public loader and skip
when it is absent.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Image, load_from_disk
from PIL import Image as PILImage

from infosam_hf.data import DataArguments
from infosam_hf.data import (
    DataError,
    SamPromptCollator,
    SamSegmentationTransform,
    build_augmenter,
    build_datasets,
    decode_image,
    decode_mask,
    load_splits,
    make_synthetic_dataset,
    select_splits,
    with_sam_transform,
)
from infosam_hf.data import sources as sources_module
from infosam_hf.data.download import download_dataset, extract_archive
from infosam_hf.data.augment import random_crop
from tests.testing_utils import blob_masks, pair_folder, save_image

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason=f"real datasets not found at {SHARED} (../shared/data)")

SIZE = 256  # model input side for most tests (1024 is only exercised where resolution matters)


def _args(path, **kwargs) -> DataArguments:
    return DataArguments(dataset_name_or_path=str(path), **kwargs)


def _link(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(source, target)
    return target


def _kvasir_pairs(count: int) -> list[tuple[Path, Path]]:
    root = SHARED / "kvasir_seg"
    lines = (root / "test.csv").read_text().splitlines()[1 : count + 1]
    return [(root / line.split(",")[0], root / line.split(",")[1]) for line in lines]


@pytest.fixture(autouse=True)
def _private_hf_cache(tmp_path, monkeypatch):
    """Keep imagefolder / parquet caches out of the user's HF cache."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf_cache")


def _check_one_line(err: pytest.ExceptionInfo, *fragments: str) -> None:
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)


# ============================================================================ real data, CSV folders

EXPECTED = {
    "kvasir_seg": {"train": 880, "test": 118},
    "leaf_disease": {"train": 80, "test": 20},
    "isbi2012": {"train": 20, "test": 10},
    "camvid": {"train": 367, "val": 101, "test": 233},
}


@needs_shared
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_csv_folders_load_as_lazy_image_datasets(name):
    splits = load_splits(str(SHARED / name))
    assert sorted(splits) == sorted(EXPECTED[name])
    for split, count in EXPECTED[name].items():
        dataset = splits[split]
        assert len(dataset) == count
        assert dataset.features["image"] == Image(decode=False) and dataset.features["label"] == Image(decode=False)
        row = dataset[0]
        assert row["image"]["bytes"] is None and Path(row["image"]["path"]).is_file()


@needs_shared
def test_kvasir_splits_eval_carved_and_binarised():
    splits = build_datasets(_args(SHARED / "kvasir_seg", max_eval_samples=4), image_size=SIZE, seed=1)
    assert len(splits.train) == 880 - 88 and len(splits.eval) == 4 and len(splits.test) == 4
    again = select_splits(_args(SHARED / "kvasir_seg"), seed=1)
    assert again.eval["image"] == select_splits(_args(SHARED / "kvasir_seg"), seed=1).eval["image"]
    ex = splits.test[0]
    assert ex["pixel_values"].shape == (3, SIZE, SIZE) and ex["pixel_values"].dtype == torch.float32
    assert ex["labels"].shape == (SIZE, SIZE) and ex["labels"].dtype == torch.float32
    assert ex["original_sizes"].tolist() == [256, 256] and ex["reshaped_input_sizes"].tolist() == [SIZE, SIZE]
    mask_path = select_splits(_args(SHARED / "kvasir_seg"), seed=1).test[0]["label"]["path"]
    raw = np.asarray(PILImage.open(mask_path))
    assert set(np.unique(raw)) <= {0, 255}
    assert torch.equal(ex["labels"], torch.from_numpy((raw > 127).astype(np.float32)))
    assert torch.equal(ex["original_labels"], torch.from_numpy(raw > 127))


@needs_shared
def test_isbi_invert_and_grayscale_images():
    plain = build_datasets(_args(SHARED / "isbi2012", test_split="test"), image_size=SIZE).test[0]
    inverted = build_datasets(_args(SHARED / "isbi2012", invert_mask=True), image_size=SIZE).test[0]
    assert torch.equal(plain["labels"], 1 - inverted["labels"])
    assert 0.1 < inverted["labels"].mean() < 0.4  # membranes are the minority once inverted
    pixels = plain["pixel_values"]
    # grayscale source -> three equal channels before normalisation
    mean = torch.tensor([123.675, 116.28, 103.53])[:, None, None]
    std = torch.tensor([58.395, 57.12, 57.375])[:, None, None]
    raw = pixels * std + mean
    assert torch.allclose(raw[0], raw[1], atol=1e-3) and torch.allclose(raw[1], raw[2], atol=1e-3)


@needs_shared
def test_camvid_multiclass_ids_kept():
    args = _args(SHARED / "camvid", num_labels=11, ignore_index=11, max_eval_samples=2)
    splits = build_datasets(args, image_size=SIZE)
    assert len(splits.eval) == 2  # the 'val' split is picked up, nothing carved
    ex = splits.test[0]
    labels = ex["labels"]
    assert labels.dtype == torch.int64
    assert set(labels.unique().tolist()) <= set(range(12))
    assert len(labels[: ex["reshaped_input_sizes"][0]].unique()) > 3
    assert (labels[ex["reshaped_input_sizes"][0]:] == 11).all()  # padding is ignore_index


@needs_shared
def test_leaf_big_jpeg_draft_matches_full_decode():
    splits = select_splits(_args(SHARED / "leaf_disease"))
    sizes = [PILImage.open(v["path"]).size for v in splits.train["image"]]
    index = int(np.argmax([w * h for w, h in sizes]))
    row = splits.train[index]
    out = {}
    for draft in (True, False):
        transform = SamSegmentationTransform(1024, "box", train=False, jpeg_draft=draft)
        out[draft] = transform.example(row["image"], row["label"], index=index)
    width, height = sizes[index]
    assert width > 2048  # the set's 4000-px phone photos
    assert out[True]["original_sizes"].tolist() == [height, width] == out[False]["original_sizes"].tolist()
    assert torch.equal(out[True]["labels"], out[False]["labels"])
    assert torch.equal(out[True]["prompt_box"], out[False]["prompt_box"])
    h, w = out[True]["reshaped_input_sizes"].tolist()
    diff = (out[True]["pixel_values"] - out[False]["pixel_values"])[:, :h, :w].abs().mean()
    assert diff < 0.05  # normalised units: the draft is visually the same image


# ============================================================================ image folders

@needs_shared
def test_image_folder_single_split_mixed_extensions(tmp_path):
    root = tmp_path / "plain"
    pairs = _kvasir_pairs(6)
    for k, (image, mask) in enumerate(pairs):
        ext = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"][k]
        save_image(np.asarray(PILImage.open(image)), root / "images" / f"case{k}{ext}")
        save_image(np.asarray(PILImage.open(mask)), root / "masks" / f"case{k}{'_mask' if k == 5 else ''}.png")
    (root / "masks" / "notes.txt").write_text("ignored")
    splits = load_splits(str(root))
    assert list(splits) == ["train"] and len(splits["train"]) == 6
    built = build_datasets(_args(root, test_split=None, validation_split_percentage=34), image_size=SIZE)
    assert len(built.train) == 4 and len(built.eval) == 2 and built.test is None
    assert built.eval[0]["labels"].sum() > 0


@needs_shared
@pytest.mark.parametrize("layout", ["split_first", "kind_first"])
def test_image_folder_split_subfolders(tmp_path, layout):
    root = tmp_path / layout
    pairs = _kvasir_pairs(5)
    for k, (image, mask) in enumerate(pairs):
        split = "train" if k < 3 else "test"
        if layout == "split_first":
            _link(image, root / split / "images" / image.name)
            _link(mask, root / split / "masks" / mask.name)
        else:
            _link(image, root / "images" / split / image.name)
            _link(mask, root / "masks" / split / mask.name)
    splits = load_splits(str(root))
    assert sorted(splits) == ["test", "train"]
    assert len(splits["train"]) == 3 and len(splits["test"]) == 2
    built = build_datasets(_args(root), image_size=SIZE)
    assert built.test[1]["labels"].sum() > 0


@needs_shared
def test_imagefolder_metadata_with_label_file_name(tmp_path):
    root = tmp_path / "imf"
    for split, chunk in (("train", _kvasir_pairs(6)[:4]), ("test", _kvasir_pairs(6)[4:])):
        rows = []
        for image, mask in chunk:
            _link(image, root / split / image.name)
            _link(mask, root / split / "masks" / mask.name)
            rows.append({"file_name": image.name, "label_file_name": f"masks/{mask.name}", "note": "x"})
        (root / split / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    splits = load_splits(str(root))
    assert sorted(splits) == ["test", "train"]
    train = splits["train"]
    assert train.column_names == ["image", "label"] and len(train) == 4
    assert train.features["label"] == Image(decode=False)
    assert train[0]["label"]["path"].endswith(".png")
    built = build_datasets(_args(root), image_size=SIZE)
    assert built.test[0]["labels"].sum() > 0


@needs_shared
def test_imagefolder_missing_file_fails_at_load(tmp_path):
    root = tmp_path / "imf"
    image, mask = _kvasir_pairs(1)[0]
    _link(image, root / "train" / image.name)
    rows = [{"file_name": image.name, "label_file_name": "masks/absent.png"}]
    (root / "train" / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    with pytest.raises(DataError) as err:
        select_splits(_args(root, test_split=None))
    _check_one_line(err, "row 0", "label file not found", "absent.png")


# ============================================================================ saved and Hub datasets

def _hub_like(tmp_path: Path) -> Path:
    """A DatasetDict with Hub-style column names, saved with save_to_disk."""
    synthetic = make_synthetic_dataset(num_train=6, num_validation=2, num_test=3, image_size=32)
    renamed = {}
    for split, ds in synthetic.items():
        ds = ds.cast_column("image", Image()).cast_column("label", Image())
        renamed[split] = ds.rename_columns({"image": "pixels", "label": "gt"}).add_column("id", list(range(len(ds))))
    from datasets import DatasetDict

    target = tmp_path / "saved"
    DatasetDict(renamed).save_to_disk(str(target))
    return target


def test_save_to_disk_folder_with_column_options(tmp_path):
    saved = _hub_like(tmp_path)
    splits = select_splits(_args(saved, image_column="pixels", mask_column="gt"))
    assert len(splits.train) == 6 and len(splits.eval) == 2 and len(splits.test) == 3
    assert splits.train.column_names == ["image", "label"]
    assert splits.train.features["image"] == Image(decode=False)
    built = build_datasets(_args(saved, image_column="pixels", mask_column="gt"), image_size=64)
    assert built.train[0]["labels"].shape == (64, 64)
    with pytest.raises(DataError) as err:
        select_splits(_args(saved))  # default columns image / label are absent
    _check_one_line(err, "image_column='image' not found", "pixels", "gt")


def test_hub_id_goes_through_load_dataset(tmp_path, monkeypatch):
    saved = load_from_disk(str(_hub_like(tmp_path)))
    calls = []

    def fake_load_dataset(name, config=None, split=None, **kwargs):
        calls.append((name, config, split))
        if split not in saved:
            raise ValueError(f'Unknown split "{split}". Should be one of {list(saved)}.')
        return saved[split]

    def no_listing(*args, **kwargs):
        raise ConnectionError("offline")

    monkeypatch.setattr(sources_module, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(sources_module, "get_dataset_split_names", no_listing)
    args = _args("someone/polyps", image_column="pixels", mask_column="gt", dataset_config_name="v1")
    splits = build_datasets(args, image_size=64)
    assert ("someone/polyps", "v1", "train") in calls and ("someone/polyps", "v1", "test") in calls
    assert len(splits.train) == 6 and len(splits.eval) == 2
    assert splits.test[0]["pixel_values"].shape == (3, 64, 64)
    with pytest.raises(DataError) as err:
        select_splits(_args("someone/polyps", image_column="pixels", mask_column="gt", test_split="test_Kvasir"))
    _check_one_line(err, "test_Kvasir", "not found", "train")


def test_hub_split_names_listed_and_validation_carved(tmp_path, monkeypatch):
    saved = load_from_disk(str(_hub_like(tmp_path)))
    monkeypatch.setattr(sources_module, "get_dataset_split_names", lambda name, config=None: ["train", "test"])
    monkeypatch.setattr(sources_module, "load_dataset", lambda name, config=None, split=None: saved[split])
    splits = select_splits(_args("someone/polyps", image_column="pixels", mask_column="gt",
                                 validation_split_percentage=50))
    assert len(splits.train) == 3 and len(splits.eval) == 3
    with pytest.raises(DataError) as err:
        select_splits(_args("someone/polyps", image_column="pixels", mask_column="gt", eval_split="dev"))
    _check_one_line(err, "split 'dev' not found", "available splits: ['test', 'train']")


def test_local_hub_style_parquet_folder_real_load_dataset(tmp_path):
    saved = load_from_disk(str(_hub_like(tmp_path)))
    repo = tmp_path / "repo"
    for split in ("train", "test"):
        saved[split].to_parquet(str(repo / "data" / f"{split}-00000-of-00001.parquet"))
    splits = load_splits(str(repo), image_column="pixels", mask_column="gt")
    assert sorted(splits) == ["test", "train"]
    assert len(splits["train"]) == 6 and splits["train"].features["label"] == Image(decode=False)
    ex = with_sam_transform(splits["test"], _args(repo), image_size=64, train=False)[0]
    assert ex["labels"].sum() > 0


# ============================================================================ decoding rules

def test_image_modes_become_rgb(tmp_path):
    rng = np.random.default_rng(0)
    gray = rng.integers(0, 255, (20, 30), dtype=np.uint8)
    modes = {
        "L": PILImage.fromarray(gray),
        "LA": PILImage.fromarray(np.stack([gray, gray], -1), "LA"),
        "RGBA": PILImage.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "RGBA"),
        "P": PILImage.fromarray(gray).convert("P"),
        "I;16": PILImage.fromarray(gray.astype(np.uint16) * 257),
        "CMYK": PILImage.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).convert("CMYK"),
    }
    for mode, image in modes.items():
        suffix = ".jpg" if mode == "CMYK" else (".tif" if mode == "I;16" else ".png")
        path = tmp_path / f"{mode.replace(';', '')}{suffix}"
        image.save(path)
        decoded, size = decode_image({"path": str(path), "bytes": None})
        assert decoded.mode == "RGB" and size == (20, 30), mode
    sixteen, _ = decode_image({"path": str(tmp_path / "I16.tif"), "bytes": None})
    assert np.abs(np.asarray(sixteen)[..., 0].astype(int) - gray).max() <= 1


def test_mask_binarisation_rules(tmp_path):
    base = np.zeros((8, 8), np.uint8)
    base[2:5, 3:6] = 1
    expected = base.astype(bool)
    cases = {
        "zero_one.png": base,
        "zero_255.png": base * 255,
        "sixteen.png": base.astype(np.uint16) * 65535,
        "rgb_red.png": np.stack([base * 255, base * 0, base * 0], -1),
    }
    for name, array in cases.items():
        save_image(array, tmp_path / name)
        assert np.array_equal(decode_mask(str(tmp_path / name)), expected), name
    noisy = base * 200 + 40  # background 40, foreground 240: 8-bit, default threshold 127
    save_image(noisy.astype(np.uint8), tmp_path / "noisy.png")
    assert np.array_equal(decode_mask(str(tmp_path / "noisy.png")), expected)
    assert decode_mask(str(tmp_path / "noisy.png"), threshold=20).all()
    assert np.array_equal(decode_mask(str(tmp_path / "zero_255.png"), invert=True), ~expected)
    palette = PILImage.fromarray(base, "P")  # labelme style: index 1 is a dark colour
    palette.putpalette([0, 0, 0, 38, 38, 38] + [0] * 762)
    palette.save(tmp_path / "palette.png")
    assert np.array_equal(decode_mask(str(tmp_path / "palette.png")), expected)
    ids = np.array([[0, 1, 2], [11, 200, 3]], np.uint8)
    save_image(ids, tmp_path / "ids.png")
    decoded = decode_mask(str(tmp_path / "ids.png"), num_labels=4, ignore_index=255)
    assert decoded.dtype == np.int64 and decoded.tolist() == [[0, 1, 2], [255, 255, 3]]


def _exif_jpeg(path: Path, array: np.ndarray, orientation: int) -> Path:
    image = PILImage.fromarray(array)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, quality=95, exif=exif.tobytes())
    return path


def test_exif_orientation_applied_and_raw_fallback(tmp_path):
    raw = np.zeros((20, 40, 3), np.uint8)  # stored 40 wide x 20 high
    raw[:, :20] = (255, 0, 0)  # left half red as stored
    image_path = _exif_jpeg(tmp_path / "phone.jpg", raw, orientation=6)  # displayed rotated 90° clockwise
    oriented, size = decode_image(str(image_path))
    assert size == (40, 20) and oriented.size == (20, 40)
    red = np.asarray(oriented)[..., 0]
    assert red[2:16].min() > 200 and red[24:38].max() < 60  # stored left half is on top once rotated clockwise
    transform = SamSegmentationTransform(64, "box", train=False)
    # mask annotated on the displayed (oriented) image
    save_image(np.zeros((40, 20), np.uint8), tmp_path / "displayed.png")
    ex = transform.example(str(image_path), str(tmp_path / "displayed.png"), index=0)
    assert ex["original_sizes"].tolist() == [40, 20]
    # mask in the stored pixel frame: the un-transposed image is used instead
    save_image(np.zeros((20, 40), np.uint8), tmp_path / "stored.png")
    ex = transform.example(str(image_path), str(tmp_path / "stored.png"), index=0)
    assert ex["original_sizes"].tolist() == [20, 40]
    save_image(np.zeros((30, 30), np.uint8), tmp_path / "other.png")
    with pytest.raises(DataError) as err:
        transform.example(str(image_path), str(tmp_path / "other.png"), index=0)
    _check_one_line(err, "size mismatch", "phone.jpg", "other.png", "20x40", "30x30")


# ============================================================================ prompts

@pytest.mark.parametrize("mode", ["box", "point", "points", "mixed", "none"])
def test_prompts_inside_mask_and_empty_masks_never_crash(tmp_path, mode):
    masks = blob_masks(5) + [np.zeros((64, 64), np.uint8)]
    root = pair_folder(tmp_path, masks)
    args = _args(root, test_split=None, validation_split_percentage=0, train_prompt=mode, prompt_fg_points=2,
                 prompt_bg_points=3)
    train = with_sam_transform(select_splits(args).train, args, image_size=64, train=True)
    examples = [train[k] for k in range(len(train))]
    for k, ex in enumerate(examples):
        label = ex["labels"]
        empty = k == len(masks) - 1 or label.sum() == 0
        assert ex["has_foreground"] == (not empty)
        if mode == "none":
            assert not {"prompt_box", "prompt_points", "prompt_point_labels"} & set(ex)
            continue
        points, point_labels = ex["prompt_points"], ex["prompt_point_labels"]
        for (x, y), flag in zip(points.long().tolist(), point_labels.tolist()):
            assert label[y, x] == flag  # foreground points on the mask, background points off it
        if empty:
            assert point_labels.tolist() and (point_labels == 0).all()
        if mode == "points" and not empty:
            assert point_labels.tolist() == [1, 1, 0, 0, 0]
        if mode in ("box", "mixed") and not empty:
            x0, y0, x1, y1 = ex["prompt_box"].tolist()
            ys, xs = torch.nonzero(label, as_tuple=True)
            assert x0 <= xs.min() + 5 and y0 <= ys.min() + 5 and x1 >= xs.max() - 5 and y1 >= ys.max() - 5
            assert 0 <= x0 <= x1 <= 63 and 0 <= y0 <= y1 <= 63
    batch = SamPromptCollator(prompt_point_prob=0.5)(examples)
    assert batch["pixel_values"].shape == (len(masks), 3, 64, 64)
    if mode in ("box", "point", "points", "mixed"):
        assert "input_points" in batch  # the empty mask forces a point batch even in box mode
        assert batch["input_points"].shape[:2] == (len(masks), 1)


def test_eval_prompts_deterministic_train_prompts_vary_per_epoch(tmp_path):
    root = pair_folder(tmp_path, blob_masks(4))
    args = _args(root, test_split=None, train_prompt="points", eval_prompt="points", prompt_fg_points=3,
                 validation_split_percentage=50)
    splits = select_splits(args)
    eval_a = with_sam_transform(splits.eval, args, image_size=64, train=False)
    eval_b = with_sam_transform(splits.eval, args, image_size=64, train=False)
    for k in range(len(eval_a)):
        assert torch.equal(eval_a[k]["prompt_points"], eval_b[k]["prompt_points"])
        assert torch.equal(eval_a[k]["prompt_points"], eval_a[k]["prompt_points"])
    train = with_sam_transform(splits.train, args, image_size=64, train=True)
    transform = train.format["format_kwargs"]["transform"]
    # keyed by (seed, epoch, index): the same within an epoch (so resuming is exact), new each epoch
    assert torch.equal(train[0]["prompt_points"], train[0]["prompt_points"])
    draws = set()
    for epoch in range(6):
        transform.set_epoch(epoch)
        draws.add(tuple(train[0]["prompt_points"].flatten().tolist()))
    assert len(draws) > 1


# ============================================================================ augmentation

def _textured(size: int = 96, seed: int = 0) -> np.ndarray:
    """A blocky binary pattern: the mask equals the image's first channel > 127."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 2, (size // 8, size // 8)).astype(np.uint8) * 255
    return np.kron(blocks, np.ones((8, 8), np.uint8))[:size, : size + 0]


def test_augmenter_keeps_image_and_mask_aligned():
    pattern = np.zeros((96, 72), np.uint8)
    pattern[: 96, :72] = _textured(96)[:, :72]
    image = np.stack([pattern, pattern // 2, 255 - pattern], -1)
    mask = pattern > 127
    exact = build_augmenter(["hflip", "vflip", "rot90"])
    rotate = build_augmenter(["rotate", "hflip"], rotate_degrees=90)
    for seed in range(12):
        rng = np.random.default_rng(seed)
        out_image, out_mask = random_crop(image, mask, (48, 40), rng)
        assert out_image.shape[:2] == out_mask.shape == (48, 40)
        out_image, out_mask = exact(out_image, out_mask, rng)
        assert out_mask.dtype == bool and out_image.shape[:2] == out_mask.shape and out_mask.size == 48 * 40
        assert np.array_equal(out_image[..., 0] > 127, out_mask)
        out_image, out_mask = rotate(image, mask, np.random.default_rng(seed))
        agree = np.mean((out_image[..., 0] > 127) == out_mask)
        assert agree > 0.97  # bilinear image vs nearest mask differ only along block edges
    jitter = build_augmenter(["color_jitter"])
    out_image, out_mask = jitter(image, mask, np.random.default_rng(0))
    assert np.array_equal(out_mask, mask) and out_image.dtype == np.uint8
    multi = build_augmenter(["rotate"], rotate_degrees=45, num_labels=3, ignore_index=255)
    ids = np.ones((40, 40), np.int64)
    for seed in range(6):
        _, rotated = multi(np.zeros((40, 40, 3), np.uint8), ids, np.random.default_rng(seed))
        assert set(np.unique(rotated)) <= {1, 255} and rotated.dtype == np.int64


def test_augmented_transform_labels_follow_pixels(tmp_path):
    pattern = _textured(96, seed=3)
    root = pair_folder(tmp_path, [pattern, _textured(96, seed=4)],
                        image_fn=lambda m: np.stack([m, m, m], -1))
    args = _args(root, test_split=None, validation_split_percentage=0, train_prompt="point",
                 augment=["hflip", "vflip", "rot90", "rotate"], random_crop=[48, 48])
    train = build_datasets(args, image_size=64).train
    for _ in range(8):
        ex = train[0]
        h, w = ex["reshaped_input_sizes"].tolist()
        assert (h, w) == (48, 48) and tuple(ex["pixel_values"].shape) == (3, 48, 48)
        pixels = ex["pixel_values"][0, :h, :w] * 58.395 + 123.675
        agree = ((pixels > 127).float() == ex["labels"][:h, :w]).float().mean()
        assert agree > 0.95
        (x, y), = ex["prompt_points"].long().tolist()
        assert ex["labels"][y, x] == ex["prompt_point_labels"][0]


def test_transform_is_picklable_and_works_in_workers(tmp_path):
    root = pair_folder(tmp_path, blob_masks(4))
    args = _args(root, test_split=None, validation_split_percentage=0, augment="hflip,rotate,color_jitter")
    train = build_datasets(args, image_size=64).train
    restored = pickle.loads(pickle.dumps(train))
    assert restored[0]["pixel_values"].shape == (3, 64, 64)
    loader = torch.utils.data.DataLoader(train, batch_size=2, num_workers=2, collate_fn=SamPromptCollator(0.5))
    batches = list(loader)
    assert len(batches) == 2 and batches[0]["labels"].shape == (2, 64, 64)


# ============================================================================ bad input

def _csv_folder(tmp_path: Path, rows: list[str], header: str = "image,label", name: str = "train.csv") -> Path:
    root = tmp_path / "csvset"
    save_image(np.zeros((8, 8, 3), np.uint8), root / "images" / "a.png")
    save_image(np.zeros((8, 8), np.uint8), root / "masks" / "a.png")
    (root / name).write_text("\n".join([header] + rows) + "\n")
    return root


def test_bad_csv_inputs(tmp_path):
    empty = tmp_path / "nothing"
    empty.mkdir()
    with pytest.raises(DataError) as err:
        load_splits(str(empty))
    _check_one_line(err, str(empty / "train.csv"), "CSV file not found")

    root = _csv_folder(tmp_path, ["images/a.png,masks/a.png"], header="img,mask")
    with pytest.raises(DataError) as err:
        select_splits(_args(root, test_split=None))
    _check_one_line(err, "train.csv", "missing column", "found columns ['img', 'mask']")

    (root / "train.csv").write_text("image,label\nimages/a.png,masks/a.png\nimages/b.png,masks/a.png\n")
    with pytest.raises(DataError) as err:
        select_splits(_args(root, test_split=None))
    _check_one_line(err, "train.csv", "row 2", "image file not found", "b.png")

    (root / "train.csv").write_text("image,label\n")
    with pytest.raises(DataError) as err:
        select_splits(_args(root, test_split=None))
    _check_one_line(err, "train.csv", "no rows")

    (root / "train.csv").write_text("image,label\nimages/a.png,masks/a.png\n")
    with pytest.raises(DataError) as err:
        select_splits(_args(root, test_split="test_Kvasir"))
    _check_one_line(err, "split 'test_Kvasir' not found", "available splits: ['train']")

    with pytest.raises(DataError) as err:
        load_splits(str(tmp_path / "not_here" / "polyp"))
    _check_one_line(err, "folder not found", "download_data.py polyp")


def test_bad_files_fail_on_access_with_the_file_name(tmp_path):
    root = tmp_path / "bad"
    save_image(np.zeros((10, 12, 3), np.uint8), root / "images" / "good.png")
    save_image(np.zeros((10, 12), np.uint8), root / "masks" / "good.png")
    (root / "images" / "garbage.jpg").write_bytes(b"this is not a jpeg")
    save_image(np.zeros((10, 12), np.uint8), root / "masks" / "garbage.png")
    buffer = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buffer, "JPEG")
    (root / "images" / "truncated.jpg").write_bytes(buffer.getvalue()[:400])
    save_image(np.zeros((64, 64), np.uint8), root / "masks" / "truncated.png")
    save_image(np.zeros((12, 10, 3), np.uint8), root / "images" / "wrong.png")
    save_image(np.zeros((10, 12), np.uint8), root / "masks" / "wrong.png")
    # validate_data: none, so the transform meets them (as with files that change on disk after the check)
    args = _args(root, test_split=None, validation_split_percentage=0, validate_data="none")
    train = with_sam_transform(select_splits(args).train, args, image_size=32, train=False)
    names = [Path(v["path"]).name for v in select_splits(args).train["image"]]
    assert train[names.index("good.png")]["labels"].shape == (32, 32)
    for name, fragments in (("garbage.jpg", ("garbage.jpg", "corrupt or unreadable")),
                            ("truncated.jpg", ("truncated.jpg", "corrupt")),
                            ("wrong.png", ("size mismatch", "images/wrong.png", "masks/wrong.png", "10x12", "12x10"))):
        with pytest.raises(DataError) as err:
            train[names.index(name)]
        _check_one_line(err, *fragments)


def test_bad_folder_and_option_inputs(tmp_path):
    root = tmp_path / "nomask"
    save_image(np.zeros((8, 8, 3), np.uint8), root / "images" / "lonely.png")
    (root / "masks").mkdir()
    with pytest.raises(DataError) as err:
        select_splits(_args(root, test_split=None))
    _check_one_line(err, "lonely.png", "mask file not found")

    empty = tmp_path / "empty"
    (empty / "images").mkdir(parents=True)
    (empty / "masks").mkdir()
    with pytest.raises(DataError) as err:
        select_splits(_args(empty, test_split=None))
    _check_one_line(err, str(empty / "images"), "no images")

    with pytest.raises(DataError) as err:
        build_datasets(_args("synthetic", augment=["hflip", "twirl"]), image_size=32)
    _check_one_line(err, "unknown augmentation 'twirl'")


# ============================================================================ download unpacking

def _zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def test_extract_archive_strips_single_top_folder(tmp_path):
    nested = _zip(tmp_path / "polyp.zip", {
        "polyp/": b"", "polyp/train.csv": b"image,label\n", "polyp/images/a.png": b"x",
        "__MACOSX/polyp/._train.csv": b"junk",
    })
    out = extract_archive(nested, tmp_path / "data" / "polyp")
    assert (out / "train.csv").is_file() and (out / "images" / "a.png").is_file()
    assert not (out / "polyp").exists() and not (out / "__MACOSX").exists()
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["polyp"]  # no staging folder left behind
    flat = _zip(tmp_path / "flat.zip", {"train.csv": b"image,label\n", "images/a.png": b"x"})
    out = extract_archive(flat, tmp_path / "data" / "flat")
    assert (out / "train.csv").is_file()
    evil = _zip(tmp_path / "evil.zip", {"../escape.txt": b"x"})
    with pytest.raises(DataError):
        extract_archive(evil, tmp_path / "data" / "evil")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "data" / "evil").exists()


def test_download_dataset_from_file_url_and_skip_when_present(tmp_path, capsys):
    source = _zip(tmp_path / "mirror.zip",
                  {"isic2017/train.csv": b"image,label\n", "isic2017/test.csv": b"image,label\n"})
    root = tmp_path / "data"
    folder = download_dataset("isic", root, progress=False, url=source.as_uri())
    assert folder == root / "isic2017" and (folder / "test.csv").is_file()
    assert sorted(p.name for p in root.iterdir()) == ["isic2017"]  # zip removed, no .part file
    source.unlink()  # a second call must not download again
    assert download_dataset("isic2017", root, progress=False, url=source.as_uri()) == folder
    assert "already present" in capsys.readouterr().out
    with pytest.raises(DataError) as err:
        download_dataset("isic2017", root, force=True, progress=False, url=(tmp_path / "gone.zip").as_uri())
    _check_one_line(err, "download failed")
