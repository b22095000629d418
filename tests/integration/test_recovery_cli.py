"""``stalwart reconcile [--dry-run] --json`` as a real process: exit codes, and a dry run that
changes nothing (the store byte for byte, no order at the venue)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from brokers.base import Side
from brokers.sim import read_book
from tests.integration.recovery_kit import (
    OTHER,
    STOP_HIT,
    SYMBOL,
    closed_trades,
    holding,
    outside,
    store_path,
    write_profile,
)
from tests.integration.session_kit import stalwart


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _reconcile(profile: Path, state: Path, *extra: str) -> tuple[int, dict[str, Any]]:
    result = stalwart(
        "reconcile",
        "--json",
        "--config",
        str(profile),
        "--state-dir",
        str(state),
        *extra,
        check=False,
    )
    assert result.stdout, result.stderr
    body: dict[str, Any] = json.loads(result.stdout)
    return result.returncode, body


def _venue_orders(state: Path) -> tuple[int, int]:
    book = read_book(state / "sim-venue.book")
    assert book is not None
    return len(book.orders), len(book.executions)


async def test_reconcile_exit_codes_and_a_dry_run_that_changes_nothing(tmp_path: Path) -> None:
    profile, config = write_profile(tmp_path)
    state = tmp_path / "state"
    await holding(config, state)

    code, fine = _reconcile(profile, state)
    assert code == 0, fine
    assert fine["mode"] == "manual"
    assert fine["broker_reachable"]
    assert not fine["dry_run"]
    assert fine["critical_issues"] == []
    assert fine["zombies"] == fine["orphans"] == []

    # While the trader is down: the stop fills, and someone buys the other symbol by hand.
    async with outside(config, state) as venue:
        (fill,) = await venue.set_price(SYMBOL, STOP_HIT)
        await venue.hand_trade(OTHER, Side.BUY, 30.0)
    store = store_path(state)
    before = _digest(store)
    orders = _venue_orders(state)

    code, dry = _reconcile(profile, state, "--dry-run")
    assert code == 1, "an orphan is critical"
    assert dry["dry_run"] is True
    assert dry["orphans"] == [OTHER]
    assert f"orphan {OTHER}" in dry["critical_issues"]
    assert dry["replayed_fills"] == 1, "the stop's fill would be replayed"
    assert dry["zombies"] == [], "so the position is not guessed closed"
    assert dry["actions"] == []
    assert _digest(store) == before, "the store is byte-for-byte unchanged"
    assert _venue_orders(state) == orders, "no order was placed"
    assert closed_trades(state) == []

    code, real = _reconcile(profile, state)
    assert code == 1
    assert real["orphans"] == [OTHER]
    assert real["replayed_fills"] == 1
    assert _digest(store) != before
    (trade,) = closed_trades(state)
    assert (trade["exit_reason"], trade["exit_price"]) == ("stop", fill.price)


def test_reconcile_usage_and_config_errors_exit_2(tmp_path: Path) -> None:
    result = stalwart("reconcile", "--json", "--bogus", check=False)
    assert result.returncode == 2
    bad = tmp_path / "bad.toml"
    bad.write_text('[recovery]\norphan_policy = "ignore"\n')
    result = stalwart(
        "reconcile",
        "--json",
        "--config",
        str(bad),
        "--state-dir",
        str(tmp_path / "s"),
        check=False,
    )
    assert result.returncode == 2
    assert "$.recovery.orphan_policy" in result.stderr
    assert not (tmp_path / "s").exists(), "nothing started"
