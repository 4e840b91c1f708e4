"""Writes that never leave a half-written file: a temporary name in the same folder, then an atomic rename.

A full disk becomes one :class:`DiskFullError` line, "no space left on <folder> (needs ~N MB)", and the
file (or folder of files) that was there before stays as it was.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

__all__ = ["DiskFullError", "atomic_open", "atomic_write_json", "atomic_write_text", "atomic_write_with",
           "disk_full_error", "is_disk_full", "replace_files_from"]

# How the libraries that write for us report a full disk: safetensors (Rust IoError StorageFull / os error 28)
# and torch.save ("unexpected pos" from its zip writer) do not raise OSError(ENOSPC).
_DISK_FULL_MARKERS = ("No space left", "StorageFull", "os error 28", "unexpected pos", "Disk quota exceeded")


class DiskFullError(OSError):
    """The disk filled up while saving; nothing that was there before was touched."""


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an error it was raised from) is a full disk, however the writing library says it."""
    while err is not None:
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(marker in str(err) for marker in _DISK_FULL_MARKERS):
            return True
        err = err.__cause__ or err.__context__
    return False


def disk_full_error(path: str | os.PathLike, needed_bytes: int) -> DiskFullError:
    """The one-line error for a save into ``path`` that needed about ``needed_bytes``."""
    folder = Path(path)
    folder = folder if folder.is_dir() else folder.parent
    try:
        free = f", {shutil.disk_usage(folder).free / 2**20:.0f} MB free"
    except OSError:
        free = ""
    return DiskFullError(errno.ENOSPC, f"no space left on {folder} (needs ~{max(1, round(needed_bytes / 2**20))} MB"
                                       f"{free}); the previous files there are unchanged")


def _temp_name(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "w", **kwargs) -> Iterator[Any]:
    """``open(path, mode)`` that writes a temporary file beside ``path`` and renames it over ``path`` only after
    the block succeeded (synced to disk); on any error the temporary file is removed and ``path`` is unchanged."""
    path = Path(path)
    temp = _temp_name(path)
    try:
        with open(temp, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException as err:
        size = temp.stat().st_size if temp.exists() else 0
        temp.unlink(missing_ok=True)
        if isinstance(err, Exception) and is_disk_full(err):
            raise disk_full_error(path, size) from err
        raise


def atomic_write_with(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """``write(temporary_path)`` beside ``path`` (a library's own save function), then rename over ``path``; on any
    error the temporary file is removed and ``path`` is unchanged."""
    path = Path(path)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-", suffix=path.suffix)
    os.close(fd)
    try:
        write(temp)
        os.replace(temp, path)
    except BaseException as err:
        size = os.path.getsize(temp) if os.path.exists(temp) else 0
        with contextlib.suppress(OSError):
            os.unlink(temp)
        if isinstance(err, Exception) and is_disk_full(err):
            raise disk_full_error(path, size) from err
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def atomic_write_json(path: str | os.PathLike, data: Any, **kwargs) -> None:
    """``json.dump`` to ``path`` atomically (``indent=2`` unless given)."""
    kwargs.setdefault("indent", 2)
    atomic_write_text(path, json.dumps(data, **kwargs))


def replace_files_from(folder: str | os.PathLike, write: Callable[[Path], None], needed_bytes: int = 0) -> None:
    """Let ``write(staging)`` save files into a fresh staging folder beside ``folder``, then rename each into
    ``folder``. When ``write`` fails (a full disk: one :class:`DiskFullError` line), ``folder`` keeps its old files."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.saving-", dir=folder.parent))
    try:
        try:
            write(staging)
        except Exception as err:
            if is_disk_full(err):
                written = sum(p.stat().st_size for p in staging.rglob("*") if p.is_file())
                raise disk_full_error(folder, max(needed_bytes, written)) from err
            raise
        for source in sorted(staging.rglob("*")):
            target = folder / source.relative_to(staging)
            if source.is_dir():
                target.mkdir(exist_ok=True)
            else:
                os.replace(source, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
