"""``stalwart chaos``: a real campaign (exchange + trader processes) and a build it must catch.

The campaign is the suite's short version of the 1,000-kill run (``stalwart
chaos --kills 1000``, result in ``bench/results/``): every failpoint armed at
least once, hand actions while the trader is down, invariants after every
restart. The broken build proves the harness can fail: a ``sitecustomize``
module, put on the trader's path by this test only, makes the trader
acknowledge fills without committing their execution rows.
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from runtime.chaos import ChaosOptions, run_campaign
from runtime.chaos_checks import VIOLATIONS
from runtime.chaos_world import ChaosError
from runtime.failpoint import FAILPOINTS

_BROKEN = '''
"""A deliberately broken build (test only): fills acknowledged without their execution row."""
import persistence.sqlite as _sqlite
from persistence.protocol import PutExecution as _PutExecution

_commit = _sqlite.SqliteStore.commit


async def _commit_without_executions(self, writes):
    return await _commit(self, [w for w in writes if not isinstance(w, _PutExecution)])


_sqlite.SqliteStore.commit = _commit_without_executions
'''


def test_a_campaign_of_15_kills_loses_and_doubles_nothing(tmp_path: Path) -> None:
    result = run_campaign(ChaosOptions(kills=15, seed=11, workdir=tmp_path / "chaos"))

    assert result.kills == 15
    assert all(result.targeted_kills[name] >= 1 for name in FAILPOINTS), result.targeted_kills
    assert result.restarts == 15
    assert result.checks >= 11  # a failpoint may kill a boot before its check
    assert result.executions > 0
    assert {name: getattr(result, name) for name in VIOLATIONS} == dict.fromkeys(VIOLATIONS, 0), (
        result.violations
    )


def test_a_campaign_with_fills_in_parts_loses_and_doubles_nothing(tmp_path: Path) -> None:
    """The exchange fills entries and triggered stops 40 shares a bar (100-share orders):
    kills land between the parts of a fill, and every invariant still holds."""
    result = run_campaign(
        ChaosOptions(kills=8, seed=7, workdir=tmp_path / "chaos", max_fill_qty=40.0)
    )

    assert (result.kills, result.max_fill_qty) == (8, 40.0)
    # A failpoint may kill a boot before its check, or the trader during one (5 of 8
    # were checked once, on a machine loaded by a second campaign).
    assert result.checks + result.discarded_checks >= 5
    assert result.checks >= 4
    assert {name: getattr(result, name) for name in VIOLATIONS} == dict.fromkeys(VIOLATIONS, 0), (
        result.violations
    )
    (store,) = (tmp_path / "chaos" / "state").glob("*.db")
    with contextlib.closing(sqlite3.connect(store)) as conn:
        sizes = {qty for (qty,) in conn.execute("SELECT qty FROM executions")}
    assert 40.0 in sizes, f"no fill came in parts: {sizes}"


def test_a_part_size_that_is_not_a_positive_number_is_refused_before_anything_starts(
    tmp_path: Path,
) -> None:
    with pytest.raises(ChaosError, match="--max-fill-qty must be a positive number"):
        run_campaign(ChaosOptions(kills=1, workdir=tmp_path / "chaos", max_fill_qty=0.0))

    assert not (tmp_path / "chaos").exists()


def test_the_harness_catches_a_build_that_acks_fills_before_storing_them(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "sitecustomize.py").write_text(_BROKEN)
    opts = ChaosOptions(
        kills=3,
        seed=5,
        workdir=tmp_path / "chaos",
        min_wait_s=4.0,
        max_wait_s=6.0,
        trader_env={"PYTHONPATH": str(broken)},
    )

    result = run_campaign(opts)

    assert not result.ok
    assert result.lost_fills > 0
    assert any("is not in the store" in v for v in result.violations)


def test_cli_prints_the_result_object_and_exits_1_on_a_violation(tmp_path: Path) -> None:
    """One kill through the command line: the JSON shape tools read, and the exit code."""
    out = tmp_path / "result.json"
    args = ["chaos", "--kills", "1", "--seed", "2", "--json", "--out", str(out)]
    run = subprocess.run(
        [sys.executable, "-m", "runtime.cli", *args, "--workdir", str(tmp_path / "w")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    body = json.loads(run.stdout)
    assert json.loads(out.read_text()) == body
    expected = {"seed", "kills", "targeted_kills", "restarts", "hand_actions", "duration_s"}
    assert expected | set(VIOLATIONS) <= set(body)
    assert body["seed"] == 2
    assert body["kills"] == 1
    violations = sum(body[name] for name in VIOLATIONS)
    assert run.returncode == (0 if violations == 0 else 1), run.stderr


def test_cli_refuses_nonsense_with_exit_2(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "runtime.cli", "chaos", "--kills", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "--kills must be at least 1" in run.stderr
