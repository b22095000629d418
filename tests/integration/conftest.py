"""Fixtures of the integration tests (helpers live in ``session_kit``)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.session_kit import Session


@pytest.fixture
def session_factory(tmp_path: Path) -> Iterator[Callable[..., Session]]:
    started: list[Session] = []

    def start(
        *args: str, state_dir: Path | None = None, env: dict[str, str] | None = None
    ) -> Session:
        s = Session(state_dir or tmp_path / "state", *args, env=env)
        started.append(s)
        return s

    yield start
    for s in started:
        if s.proc.poll() is None:
            s.kill()
