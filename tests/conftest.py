"""Session checks shared by every test file."""

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Written by the tools that run the tests, not by the tests.
TOOL_ENTRIES = {".pytest_cache", "__pycache__", ".ruff_cache", ".mypy_cache"}


@pytest.fixture(scope="session", autouse=True)
def nothing_written_into_the_repository():
    """Tests write only under tmp_path: no new entry may appear in the repository root (e.g. ./runs/)."""
    before = {p.name for p in ROOT.iterdir()}
    yield
    new = {p.name for p in ROOT.iterdir()} - before - TOOL_ENTRIES
    assert not new, f"tests wrote {sorted(new)} into {ROOT}; write under tmp_path"


@pytest.fixture(scope="session", autouse=True)
def teacher_cache_in_a_temporary_folder():
    """Runs with teacher_cache: auto (the default) fill a cache; keep it out of the user's HF cache, for the test
    process and the command lines it starts."""
    with tempfile.TemporaryDirectory(prefix="infosam-teacher-cache-") as folder:
        previous = os.environ.get("INFOSAM_TEACHER_CACHE_DIR")
        os.environ["INFOSAM_TEACHER_CACHE_DIR"] = folder
        yield
        if previous is None:
            os.environ.pop("INFOSAM_TEACHER_CACHE_DIR")
        else:
            os.environ["INFOSAM_TEACHER_CACHE_DIR"] = previous
