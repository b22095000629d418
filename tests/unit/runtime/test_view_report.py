"""``stalwart recover``'s printout of a reconciliation report (``runtime.view.print_report``)."""

from __future__ import annotations

from typing import Any

import pytest

from runtime.view import print_report


def _report(**fields: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "mode": "manual",
        "dry_run": False,
        "broker_reachable": True,
        "replayed_fills": 1,
        "duration_s": 0.012,
        "zombies": [],
        "orphans": [],
        "unprotected": [],
        "drifts": [],
        "actions": [],
        "critical_issues": [],
    }
    report.update(fields)
    return report


def test_a_stop_whose_executions_never_came_is_listed_apart_from_the_zombies(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_report(_report(zombies=["AMD"], missing_fills=["NVDA"]))

    out = capsys.readouterr().out
    assert "zombies: AMD" in out
    assert "missing_fills: NVDA" in out


def test_a_report_stored_before_missing_fills_existed_still_prints(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_report(_report(orphans=["TSLA"]))

    out = capsys.readouterr().out
    assert "orphans: TSLA" in out
    assert "missing_fills" not in out
