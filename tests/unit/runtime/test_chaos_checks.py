"""The chaos invariants on hand-made truths and books: each can fail, and only when it should."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

import msgspec
import pytest

from actors.state import PartialExit, PositionState
from runtime.chaos_checks import Books, Ledger, Truth, check, realized_by_symbol

T0 = datetime(2026, 1, 5, 15, 0, tzinfo=UTC)
DAY = date(2026, 1, 5)
ENTRY = "sw-abc123-AAPL-260105-1-entry"


def _ex(n: int, side: str, qty: float, price: float, cid: str = ENTRY, symbol: str = "AAPL") -> Any:
    return {
        "exec_id": f"e{n}",
        "order_id": cid,
        "client_order_id": cid,
        "symbol": symbol,
        "side": side,
        "qty": qty,
        "price": price,
        "ts": T0.isoformat(),
    }


def _state(qty: float = 100.0, **changes: Any) -> PositionState:
    base = PositionState(
        account="acct", symbol="AAPL", trading_day=DAY, qty=qty, avg_price=10.0, opened_at=T0
    )
    return msgspec.structs.replace(base, **({"attempts": {"2026-01-05|10.0000|buy": 1}} | changes))


def _stop(qty: float = 100.0) -> dict[str, Any]:
    return {"symbol": "AAPL", "type": "stop", "side": "sell", "qty": str(qty)}


def _world(**books: Any) -> tuple[Truth, Books]:
    truth = Truth([_ex(1, "buy", 100, 10.0)], {"AAPL": 100.0}, [_stop()])
    fields: dict[str, Any] = {
        "exec_ids": ["e1"],
        "states": {"AAPL": _state()},
        "closed_pnl": {},
        "entry_intents": {ENTRY},
        "integrity": "ok",
    }
    return truth, Books(**(fields | books))


def _run(truth: Truth, books: Books, alerts: frozenset[str] = frozenset()) -> dict[str, int]:
    return check(truth, books, Ledger(), max_attempts=2, unprotected_alerts=set(alerts)).counts


def test_a_consistent_world_has_no_violation() -> None:
    truth, books = _world()
    assert not any(_run(truth, books).values())


def test_a_fill_missing_from_the_store_is_lost_and_a_phantom_is_a_duplicate() -> None:
    truth, books = _world(exec_ids=[])
    assert _run(truth, books)["lost_fills"] == 1
    truth, books = _world(exec_ids=["e1", "e9"])
    assert _run(truth, books)["duplicate_fills"] == 1


def test_quantities_must_match_the_exchange() -> None:
    truth, books = _world(states={"AAPL": _state(qty=50.0)})
    counts = _run(truth, books)
    assert counts["qty_mismatches"] == 1


def test_an_open_position_without_a_stop_needs_an_unprotected_alert() -> None:
    truth, books = _world()
    naked = Truth(truth.executions, truth.positions, [])
    assert _run(naked, books)["silent_unprotected"] == 1
    assert _run(naked, books, frozenset({"AAPL"}))["silent_unprotected"] == 0


def _market(cid: str, side: str, qty: float, filled: float) -> dict[str, Any]:
    return {
        "symbol": "AAPL",
        "type": "market",
        "side": side,
        "qty": str(qty),
        "filled_qty": str(filled),
        "client_order_id": cid,
    }


def test_an_exit_of_ours_working_for_the_whole_position_covers_it_without_a_stop() -> None:
    """The stop canceled for a market exit that fills in parts: 20 of the 100 left, the
    exit working for them. Not covered: the exit working for less than what is held, a
    hand order, an entry (it adds, and buys would not close a long anyway), or a limit
    exit (it waits for its price)."""
    truth, books = _world(states={"AAPL": _state(qty=20.0)})
    exiting = "sw-abc123-AAPL-260105-1-exit7"

    def silent(*orders: dict[str, Any]) -> int:
        world = Truth(truth.executions, {"AAPL": 20.0}, list(orders))
        return _run(world, books)["silent_unprotected"]

    assert silent(_market(exiting, "sell", 100.0, 80.0)) == 0
    assert silent(_market(exiting, "sell", 100.0, 90.0)) == 1
    assert silent(_market("hand-1", "sell", 100.0, 80.0)) == 1
    assert silent(_market("sw-abc123-AAPL-260105-2-entry", "sell", 20.0, 0.0)) == 1
    assert silent(_market(exiting, "buy", 100.0, 80.0)) == 1
    assert silent(_market(exiting, "sell", 100.0, 80.0) | {"type": "limit"}) == 1


def test_partials_must_match_reducing_executions() -> None:
    execs = [_ex(1, "buy", 100, 10.0), _ex(2, "sell", 50, 11.0, "sw-abc123-AAPL-260105-1-part")]
    truth = Truth(execs, {"AAPL": 50.0}, [_stop(50)])
    partial = PartialExit(at=T0, price=11.0, qty=50.0, reason="partial")
    state = _state(qty=50.0, partials=(partial,), trade_realized=50.0)
    _, books = _world(states={"AAPL": state}, exec_ids=["e1", "e2"])
    assert not any(_run(truth, books).values())
    _, unrecorded = _world(
        states={"AAPL": _state(qty=50.0, trade_realized=50.0)}, exec_ids=["e1", "e2"]
    )
    assert _run(truth, unrecorded)["partial_mismatches"] == 1


def test_realized_pnl_must_match_the_exchange() -> None:
    execs = [_ex(1, "buy", 100, 10.0), _ex(2, "sell", 100, 10.5, "sw-abc123-AAPL-260105-1-stop3")]
    truth = Truth(execs, {}, [])
    right = Books(["e1", "e2"], {"AAPL": _state(qty=0.0)}, {"AAPL": 50.0}, {ENTRY}, "ok")
    assert not any(_run(truth, right).values())
    wrong = Books(["e1", "e2"], {"AAPL": _state(qty=0.0)}, {"AAPL": 20.0}, {ENTRY}, "ok")
    assert _run(truth, wrong)["pnl_mismatches"] == 1


def test_realized_pnl_is_average_cost_across_a_cross() -> None:
    execs = [
        _ex(1, "buy", 100, 10.0),
        _ex(2, "buy", 100, 12.0),  # avg 11
        _ex(3, "sell", 50, 13.0),  # +100
        _ex(4, "sell", 200, 9.0),  # closes 150 at -2: -300; opens 50 short at 9
        _ex(5, "buy", 50, 8.0),  # +50
    ]
    assert realized_by_symbol(execs) == {"AAPL": pytest.approx(-150.0)}


def test_entries_without_a_stored_intent_or_past_the_limit_are_duplicates() -> None:
    truth, books = _world(entry_intents=set())
    assert _run(truth, books)["duplicate_entries"] == 1
    over = _state(attempts={"2026-01-05|10.0000|buy": 3})
    truth, books = _world(states={"AAPL": over})
    assert _run(truth, books)["duplicate_entries"] == 1


def test_attempt_counts_never_decrease_within_a_day() -> None:
    truth, books = _world()
    ledger = Ledger()
    two = {"AAPL": _state(attempts={"2026-01-05|10.0000|buy": 2})}
    assert check(
        truth,
        Books(**{**books.__dict__, "states": two}),
        ledger,
        max_attempts=2,
        unprotected_alerts=set(),
    ).ok
    after = check(truth, books, ledger, max_attempts=2, unprotected_alerts=set())
    assert after.counts["attempt_regressions"] == 1
    gone = {"AAPL": _state(attempts={})}
    wiped = check(
        truth,
        Books(**{**books.__dict__, "states": gone}),
        ledger,
        max_attempts=2,
        unprotected_alerts=set(),
    )
    assert wiped.counts["attempt_regressions"] == 1


def test_a_damaged_store_is_an_integrity_failure() -> None:
    truth, books = _world(integrity="*** in database main ***\nPage 3 is never used")
    assert _run(truth, books)["integrity_failures"] == 1
    truth, books = _world(undecodable=["MSFT"])
    assert _run(truth, books)["integrity_failures"] == 1


def test_a_second_entry_order_while_the_side_is_held_is_a_duplicate() -> None:
    second = "sw-abc123-AAPL-260105-2-entry"
    execs = [_ex(1, "buy", 100, 10.0), {**_ex(2, "buy", 100, 10.2, second), "order_id": "o2"}]
    truth = Truth(execs, {"AAPL": 200.0}, [_stop(200)])
    _, books = _world(
        states={"AAPL": _state(qty=200.0)}, exec_ids=["e1", "e2"], entry_intents={ENTRY, second}
    )
    assert _run(truth, books)["duplicate_entries"] == 1
    pieces = [_ex(1, "buy", 60, 10.0), _ex(2, "buy", 40, 10.0)]  # one order filled in two pieces
    truth = Truth(pieces, {"AAPL": 100.0}, [_stop()])
    _, books = _world(exec_ids=["e1", "e2"])
    assert _run(truth, books)["duplicate_entries"] == 0
