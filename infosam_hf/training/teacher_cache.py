"""The teacher-embedding cache: the frozen teacher's image-encoder output, computed once per example.

The teacher's image embedding depends only on the image as it enters the encoder. When the train
transform feeds every example the same pixels in every epoch (no augmentation, no random crop: the
official InfoSAM setting), the embedding is stored on first use and read back afterwards; only the
teacher's mask decoder runs every step, with that step's prompts.

Storage: one safetensors file per example under a folder named by a hash of everything the
embedding depends on (the dataset's fingerprint, the transform settings, the teacher's identity), in
the Hugging Face cache by default, so a later run with the same data and teacher reuses it. Files are
written to a temporary name and renamed, so concurrent DDP processes and interrupted runs never
leave a half-written entry; a resumed run finds what it already computed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import torch
from safetensors.torch import load_file, save_file

from ..choices import check_choice
from ..io import DiskFullError, atomic_write_with

logger = logging.getLogger(__name__)

__all__ = [
    "CACHE_DTYPES",
    "TEACHER_CACHE_MODES",
    "TeacherEmbeddingCache",
    "dataset_cache_key",
    "default_cache_root",
    "teacher_fingerprint",
    "pixel_changing_options",
    "resolve_teacher_cache",
]

TeacherCacheMode = Literal["auto", "off", "on"]
TEACHER_CACHE_MODES: tuple[str, ...] = get_args(TeacherCacheMode)
CacheDtype = Literal["float32", "float16", "bfloat16"]  # the keys of CACHE_DTYPES
CACHE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
_TENSOR_KEY = "image_embeddings"


CACHE_DIR_ENV = "INFOSAM_TEACHER_CACHE_DIR"


def default_cache_root() -> Path:
    """``$INFOSAM_TEACHER_CACHE_DIR`` when set, else ``$HF_HOME/infosam_hf/teacher_cache``
    (``~/.cache/huggingface/...`` by default)."""
    from huggingface_hub import constants

    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV]).expanduser()
    return Path(constants.HF_HOME) / "infosam_hf" / "teacher_cache"


def _tensors_digest(named_tensors) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        digest.update(f"{name}:{tuple(tensor.shape)}:{tensor.dtype}".encode())
        data = tensor.detach().to("cpu").contiguous()
        digest.update(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"")
    return digest.hexdigest()[:16]


def teacher_fingerprint(module: torch.nn.Module) -> str:
    """A hash of the frozen weights of a (possibly PEFT-wrapped) module: what the teacher computes with.

    Trained tensors (adapters) are left out and peft's ``base_layer.`` is dropped from names, so the
    same SAM hashes the same whether it is a separate teacher or the student with adapters disabled.
    """
    frozen = [(name.replace("base_layer.", ""), param) for name, param in module.named_parameters()
              if not param.requires_grad]
    buffers = [(name.replace("base_layer.", ""), buf) for name, buf in module.named_buffers()]
    return _tensors_digest(frozen + buffers)


def _file_stats_digest(dataset, column: str) -> str | None:
    """A hash of the paths and contents of the files a path-based image column points at (None when the
    images are stored in the dataset itself, which its fingerprint covers)."""
    import pyarrow as pa

    if column not in dataset.column_names:
        return None
    array = dataset.data.column(column).combine_chunks()
    if pa.types.is_struct(array.type):  # datasets' Image storage: {bytes, path}
        paths = array.field("path").to_pylist()
        stored = array.field("bytes").is_valid().to_pylist()
        paths = [path for path, has_bytes in zip(paths, stored) if path and not has_bytes]
    elif pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
        paths = array.to_pylist()
    else:
        return None
    if not paths:
        return None
    digest = hashlib.sha256()
    for path in paths:  # the content, not only size and mtime: a file replaced in place changes the key
        digest.update(f"{path}:{_content_digest(path)}".encode())
    return digest.hexdigest()[:16]


def _content_digest(path: str) -> str:
    """sha256 of a file's bytes (read in 1 MiB blocks), or 'missing'."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError:
        return "missing"
    return digest.hexdigest()


def dataset_cache_key(dataset, transform) -> dict[str, Any]:
    """What the encoder input depends on: the dataset (fingerprint, and file stats of a path-based image
    column, so edited files invalidate the cache) and the transform's pixel settings."""
    settings = {name: getattr(transform, name, None) for name in
                ("image_size", "resize", "random_crop", "image_mean", "image_std", "jpeg_draft", "image_column")}
    column = getattr(transform, "image_column", "image")
    return {"dataset": getattr(dataset, "_fingerprint", None), "files": _file_stats_digest(dataset, column),
            "transform": settings, "num_rows": len(dataset)}


def pixel_changing_options(augment: Sequence[str], random_crop: Any = None) -> list[str]:
    """The train-time options that change the encoder's input between epochs (each makes the cache invalid)."""
    reasons = [f"augment: {name}" for name in augment]
    if random_crop:
        reasons.append(f"random_crop: {random_crop}")
    return reasons


def resolve_teacher_cache(mode: str, pixel_changes: Sequence[str]) -> bool:
    """Whether the cache is used: ``auto`` exactly when valid, ``on`` fails when it is not, ``off`` never."""
    check_choice("teacher_cache", mode, TEACHER_CACHE_MODES)
    if mode == "off":
        return False
    if pixel_changes:
        if mode == "on":
            raise ValueError(f"teacher_cache: on needs the same encoder input every epoch, but {pixel_changes[0]} "
                             "changes the pixels; use teacher_cache: auto (or off)")
        logger.info("Teacher-embedding cache off: %s changes the encoder input between epochs", pixel_changes[0])
        return False
    return True


class TeacherEmbeddingCache:
    """Per-example teacher image embeddings on disk, keyed by what they depend on.

    Args:
        key: everything the embedding depends on (dataset fingerprint, transform settings, teacher
            fingerprint ...); JSON-serialisable. Its hash names the cache folder.
        root: the folder holding every cache (default :func:`default_cache_root`).
        dtype: storage precision, ``float32`` (exact) or ``float16`` / ``bfloat16`` (half the disk).
    """

    def __init__(self, key: Mapping[str, Any], root: str | os.PathLike | None = None, dtype: str = "float32"):
        check_choice("teacher_cache_dtype", dtype, tuple(CACHE_DTYPES))
        text = json.dumps({**key, "dtype": dtype}, indent=2, sort_keys=True, default=str)
        self.key_hash = hashlib.sha256(text.encode()).hexdigest()[:20]
        self.directory = Path(root or default_cache_root()) / self.key_hash
        self.dtype = CACHE_DTYPES[dtype]
        self.directory.mkdir(parents=True, exist_ok=True)
        key_file = self.directory / "key.json"
        if not key_file.exists():
            atomic_write_with(key_file, lambda tmp: Path(tmp).write_text(text))
        self.hits = 0
        self.misses = 0
        self.entry_shape: tuple[int, ...] | None = None  # (C, H, W) of every entry, once one is seen
        self.disk_full = False  # a write found the disk full: store nothing more

    def _path(self, index: int) -> Path:
        return self.directory / f"{int(index)}.safetensors"

    def _load(self, path: Path) -> torch.Tensor | None:
        """One entry, or None after removing it (with one warning) when it is truncated, empty or mis-shaped."""
        try:
            tensor = load_file(str(path)).get(_TENSOR_KEY)
            problem = None if tensor is not None else f"no {_TENSOR_KEY!r} tensor"
        except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for damaged files
            tensor, problem = None, f"unreadable ({str(err).splitlines()[0] if str(err) else type(err).__name__})"
        if tensor is not None and (tensor.ndim != 3 or (self.entry_shape and tuple(tensor.shape) != self.entry_shape)):
            problem = f"shape {tuple(tensor.shape)}, expected {self.entry_shape or '(C, H, W)'}"
        if problem is None:
            self.entry_shape = self.entry_shape or tuple(tensor.shape)
            return tensor
        logger.warning("Teacher-embedding cache entry %s is damaged (%s): recomputing it", path, problem)
        path.unlink(missing_ok=True)
        return None

    def __contains__(self, index: int) -> bool:
        return self._path(index).is_file()

    def __len__(self) -> int:
        return sum(1 for _ in self.directory.glob("*.safetensors"))

    def get(self, indices: Sequence[int], device: torch.device | str = "cpu",
            dtype: torch.dtype = torch.float32) -> torch.Tensor | None:
        """The stacked embeddings of ``indices``, or None when any of them is missing."""
        paths = [self._path(i) for i in indices]
        if not all(path.is_file() for path in paths):
            self.misses += 1
            return None
        loaded = [self._load(path) for path in paths]
        if any(tensor is None for tensor in loaded):
            self.misses += 1
            return None
        self.hits += 1
        stacked = torch.stack(loaded)
        if torch.device(device).type == "cuda":
            stacked = stacked.pin_memory()  # a pageable host buffer would make the copy wait for the GPU
        return stacked.to(device=device, non_blocking=True).to(dtype)

    def put(self, indices: Sequence[int], embeddings: torch.Tensor) -> None:
        """Store ``embeddings[i]`` for ``indices[i]`` (entries already present are kept)."""
        cpu = embeddings.detach().to("cpu", self.dtype)
        self.entry_shape = self.entry_shape or tuple(cpu.shape[1:])
        for row, index in enumerate(indices):
            path = self._path(index)
            if path.is_file():
                continue
            if self.disk_full:
                return
            try:
                atomic_write_with(path, lambda tmp, row=row: save_file({_TENSOR_KEY: cpu[row].contiguous()}, tmp))
            except DiskFullError as err:  # training goes on, computing the teacher's embeddings each step
                self.disk_full = True
                logger.warning("Teacher-embedding cache: %s; no further entries are stored", err)

    def __repr__(self) -> str:
        return f"TeacherEmbeddingCache({self.directory}, {len(self)} entries, {self.dtype})"
