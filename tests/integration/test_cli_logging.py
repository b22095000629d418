"""Logging of `stalwart run`: human-readable by default, one JSON object per line on request."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.session_kit import stalwart


def test_json_log_lines_parse_and_name_their_logger(tmp_path: Path) -> None:
    state = tmp_path / "s"
    result = stalwart(
        "run", "--state-dir", str(state), "--duration", "2", "--no-live", "--log-format", "json"
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines
    records = [json.loads(line) for line in lines]
    assert all({"at", "level", "logger", "message"} <= set(r) for r in records)
    assert any(r["logger"] == "actors.supervisor" for r in records)
    assert all(r["at"].endswith("+00:00") for r in records), "UTC timestamps"
    # The same records go to the rotating file in the state dir.
    logged = (state / "stalwart.log").read_text().splitlines()
    assert [json.loads(line)["message"] for line in logged] == [r["message"] for r in records]


def test_text_log_is_the_default(tmp_path: Path) -> None:
    result = stalwart("run", "--state-dir", str(tmp_path / "s"), "--duration", "1", "--no-live")
    first = result.stderr.splitlines()[0]
    assert " INFO " in first
    assert first[:4].isdigit(), "starts with a UTC timestamp"
