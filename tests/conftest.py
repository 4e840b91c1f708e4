"""Session checks shared by every test file."""

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
