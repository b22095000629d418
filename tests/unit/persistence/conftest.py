"""Fixtures for the store tests: a real SQLite file in a temporary directory."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

# The project is not installed into the virtualenv; make the repository importable
# (harmless once pyproject gets `pythonpath = ["."]` or an editable install).
_ROOT = str(Path(__file__).resolve().parents[3])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from _store_kit import ACCOUNT, StepClock  # noqa: E402

from persistence import SqliteStore, open_store  # noqa: E402


@pytest.fixture
def clock() -> StepClock:
    return StepClock()


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "paper.db"


@pytest.fixture
async def store(store_path: Path, clock: StepClock) -> AsyncIterator[SqliteStore]:
    opened = await open_store(store_path, ACCOUNT, backups_keep=3, now=clock)
    try:
        yield opened
    finally:
        await opened.close()
