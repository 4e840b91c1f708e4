"""The output folder of a run: never overwrite a finished run or its checkpoints by accident, and never let two
runs write into one folder at once (a lock file; a stale one, left by a process that is gone, is taken over)."""

from __future__ import annotations

import atexit
import logging
import os
import socket
from pathlib import Path

from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .recipe import RecipeError

logger = logging.getLogger(__name__)

__all__ = ["LOCK_NAME", "RUN_MARKERS", "OutputDirLock", "check_output_dir", "finished_run_files"]

LOCK_NAME = ".infosam.lock"
# Files that mean "a run finished here": the adapter, its run record, Trainer's final state.
RUN_MARKERS = ("adapter_config.json", "adapter_model.safetensors", "run_args.json", "train_results.json")


def finished_run_files(output_dir: str | os.PathLike) -> list[str]:
    """The names in ``output_dir`` that belong to an earlier run (adapter files, run record, checkpoints)."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [name for name in RUN_MARKERS if (folder / name).exists()]
    found += sorted(p.name for p in folder.glob(f"{PREFIX_CHECKPOINT_DIR}-*") if p.is_dir())
    return found


def check_output_dir(output_dir: str, resume_from_checkpoint: str | bool | None, overwrite: bool) -> None:
    """One line before anything loads when ``output_dir`` is empty-named, a file, or holds an earlier run that this
    run would overwrite (unless it resumes from it, or ``overwrite_output_dir: true``)."""
    if not output_dir or not str(output_dir).strip():
        raise RecipeError("output_dir is empty: name the folder the adapter is saved to (e.g. output_dir: runs/leaf)")
    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise RecipeError(f"output_dir={output_dir!r} is a file, not a folder")
    if resume_from_checkpoint or overwrite:
        return
    found = finished_run_files(output_dir)
    if found:
        shown = ", ".join(found[:4]) + (f" and {len(found) - 4} more" if len(found) > 4 else "")
        raise RecipeError(f"output_dir={output_dir!r} holds an earlier run ({shown}): resume it with "
                          "--resume_from_checkpoint true, choose another output_dir, or pass "
                          "--overwrite_output_dir true to replace it")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


class OutputDirLock:
    """``output_dir/.infosam.lock`` (pid and host) held for the run; a second run into the folder stops with one
    line. A lock whose process is gone (same host) is taken over with a warning."""

    def __init__(self, output_dir: str | os.PathLike):
        self.path = Path(output_dir) / LOCK_NAME
        self.held = False
        self.created_folder = False

    def acquire(self) -> OutputDirLock:
        self.created_folder = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = f"{os.getpid()} {socket.gethostname()}\n"
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(me)
            self.held = True
            atexit.register(self.release)
            return self
        raise RecipeError(f"output_dir={str(self.path.parent)!r} is locked by another run ({self.path})")

    def _take_over_if_stale(self) -> None:
        try:
            pid_text, _, host = self.path.read_text().partition(" ")
            pid = int(pid_text)
        except (OSError, ValueError):  # empty or garbled: a crash between create and write
            pid, host = -1, socket.gethostname()
        host = host.strip()
        if host == socket.gethostname() and pid > 0 and _pid_alive(pid) and pid != os.getpid():
            raise RecipeError(f"output_dir={str(self.path.parent)!r} is in use by another run (pid {pid}); wait for "
                              f"it or choose another output_dir (a lock left by a crash: delete {self.path})")
        if host != socket.gethostname():
            raise RecipeError(f"output_dir={str(self.path.parent)!r} is in use by a run on {host} (pid {pid}); "
                              f"if that run is gone, delete {self.path}")
        gone = "an earlier run in this process" if pid == os.getpid() else f"process {pid}, which is gone"
        logger.warning("Taking over the stale lock %s (left by %s)", self.path, gone)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        """Remove the lock (and the folder, when the lock created it and nothing else was written there)."""
        if self.held:
            self.held = False
            self.path.unlink(missing_ok=True)
            if self.created_folder and not any(self.path.parent.iterdir()):
                self.path.parent.rmdir()
