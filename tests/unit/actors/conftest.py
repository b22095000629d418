"""Fixtures for the actor tests: a real SQLite store in a temporary directory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bench._world import ACCOUNT
from persistence import SqliteStore, open_store


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    """The account's store, opened for the test and closed after it."""
    opened = await open_store(tmp_path / "actors.db", ACCOUNT)
    try:
        yield opened
    finally:
        await opened.close()
