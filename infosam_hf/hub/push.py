"""``infosam push``: a finished run's folder to the Hub. The token is never printed, logged or saved -- it is
resolved by ``huggingface_hub`` (``HF_TOKEN`` or ``hf auth login``) unless passed explicitly."""

from __future__ import annotations

import logging
from pathlib import Path

from huggingface_hub import HfApi

from ..files import validate_adapter_dir

logger = logging.getLogger(__name__)

__all__ = ["PUSH_IGNORE_PATTERNS", "push_adapter_dir"]

# Like Trainer.push_to_hub: no private files and no intermediate checkpoints (nor hidden files: the run's lock).
PUSH_IGNORE_PATTERNS = ["_*", "checkpoint-*", ".*"]


def _default_api() -> HfApi:
    from .. import __version__

    return HfApi(library_name="infosam-hf", library_version=__version__)


def push_adapter_dir(output_dir: str | Path, repo_id: str, *, private: bool | None = None,
                     revision: str | None = None, token: str | bool | None = None,
                     commit_message: str = "Upload InfoSAM adapter", create_repo: bool = True,
                     api: HfApi | None = None, blocking: bool = True):
    """Upload a run's ``output_dir`` to the Hub repo ``repo_id`` (created if needed).

    Uploads everything but checkpoints and ``_``/``.``-prefixed files, like ``Trainer.push_to_hub``.
    ``revision`` names a branch, created from ``main`` when missing. ``token=None`` lets
    ``huggingface_hub`` resolve the token; it is never logged.

    Returns the ``CommitInfo`` (a ``Future`` of it when ``blocking=False``).
    """
    output_dir = validate_adapter_dir(output_dir)
    api = api or _default_api()
    if create_repo:
        repo_id = api.create_repo(repo_id, private=private, exist_ok=True, token=token).repo_id
    if revision and revision != "main":
        api.create_branch(repo_id, branch=revision, exist_ok=True, token=token)
    logger.info("Pushing %s to %s", output_dir, repo_id)
    return api.upload_folder(
        repo_id=repo_id, folder_path=str(output_dir), commit_message=commit_message, token=token,
        revision=revision, ignore_patterns=PUSH_IGNORE_PATTERNS, run_as_future=not blocking,
    )
