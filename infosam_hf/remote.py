"""Reaching the Hugging Face Hub: know in seconds whether it answers, and say so in one line.

``huggingface_hub`` retries an unreachable Hub for about a minute before it gives up. Every name that
is not a local path goes through :func:`check_pretrained_name` first: a value that looks like a path
fails at once with "no such folder"; a Hub id fails in a few seconds when the Hub does not answer and
the repo is not in the local cache; a cached repo switches the process to offline mode so it loads
from the cache without retries.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from huggingface_hub import constants, try_to_load_from_cache
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import get_session, validate_repo_id

__all__ = ["HUB_TIMEOUT_S", "HubUnreachableError", "check_pretrained_name", "hub_unreachable_reason",
           "looks_like_path"]

HUB_TIMEOUT_S = 3.0


class HubUnreachableError(OSError):
    """A name that is neither a local folder nor reachable on the Hub."""


@functools.cache
def hub_unreachable_reason() -> str | None:
    """Why the Hub cannot be reached (one short phrase), or ``None`` when it answers within a few seconds."""
    if constants.is_offline_mode():
        return "HF_HUB_OFFLINE is set"
    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_TIMEOUT_S, follow_redirects=False)
    except Exception as err:  # noqa: BLE001 - any transport failure means "unreachable"
        return f"{constants.ENDPOINT} does not answer: {type(err).__name__}"
    return None


def _go_offline() -> None:
    """Load from the local cache from now on, without network retries (process-wide, as HF_HUB_OFFLINE=1)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True


def looks_like_path(name: str) -> bool:
    """``./x``, ``/x``, ``~/x``, ``a/b/c``, ``C:\\x``: something no Hub repo id can be."""
    if name.startswith((".", "/", "~")) or "\\" in name or os.path.isabs(name):
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def check_pretrained_name(name: str, key: str, marker_file: str = "config.json") -> None:
    """Fail fast, in one line, when ``name`` (the value of option ``key``) can be loaded from nowhere.

    A local path passes. A value that looks like a path and does not exist raises "no such folder". A
    Hub id passes when the Hub answers; when it does not, a repo whose ``marker_file`` is in the local
    cache switches the process to offline mode (cache only), anything else raises
    :class:`HubUnreachableError` saying how to point ``key`` at a local folder.
    """
    if Path(name).expanduser().exists():
        return
    if looks_like_path(name):
        raise HubUnreachableError(f"{key}={name!r}: no such folder")
    reason = hub_unreachable_reason()
    if reason is None:
        return
    if isinstance(try_to_load_from_cache(name, marker_file), str):
        _go_offline()
        return
    raise HubUnreachableError(
        f"{key}={name!r}: no such folder, and the Hugging Face Hub is unreachable ({reason}) with no cached copy; "
        f"point {key} at a local folder (e.g. one written by save_pretrained or `hf download {name} --local-dir DIR`)")
