"""Fixtures for the store tests: a real SQLite file in a temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from persistence import SqliteStore, open_store
from tests.unit.persistence._store_kit import ACCOUNT, StepClock


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
