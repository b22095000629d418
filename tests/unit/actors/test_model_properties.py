"""Acceptance properties of the position model over random histories (hypothesis).

A history mixes fills of both sides (random size and price, zero crossings
included), re-deliveries of earlier executions, entries and their rejections,
fills of the entry in flight, and new trading days. The model must agree with
an independent average-cost ledger (``Ledger``, which never calls the model).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import model
from actors.state import IntentKind, PositionState
from brokers.base import Execution, Side
from tests.unit.actors._actor_kit import (
    ACCOUNT,
    DAY,
    MAX_ATTEMPTS,
    SYMBOL,
    execution,
    position_state,
)

PIVOTS = (99.5, 101.25)


class NewFill(msgspec.Struct, frozen=True):
    side: Side
    qty: float
    price: float
    of_entry: bool  # fill the entry in flight, when there is one


class Redeliver(msgspec.Struct, frozen=True):
    pick: int  # which earlier execution (modulo how many there are)
    tampered: bool  # the re-delivery carries other numbers; the exec id decides


class NewDay(msgspec.Struct, frozen=True):
    days: int


class TryEntry(msgspec.Struct, frozen=True):
    pivot: float
    side: Side


class RejectEntry(msgspec.Struct, frozen=True):
    pass


Step = NewFill | Redeliver | NewDay | TryEntry | RejectEntry

sides = st.sampled_from(Side)
steps: st.SearchStrategy[Step] = st.one_of(
    st.builds(
        NewFill,
        side=sides,
        qty=st.integers(1, 500).map(float),
        price=st.integers(100, 50_000).map(lambda cents: cents / 100),
        of_entry=st.booleans(),
    ),
    st.builds(Redeliver, pick=st.integers(0, 1_000), tampered=st.booleans()),
    st.builds(NewDay, days=st.integers(1, 3)),
    st.builds(TryEntry, pivot=st.sampled_from(PIVOTS), side=sides),
    st.just(RejectEntry()),
)
histories = st.lists(steps, max_size=40)
FAST = settings(max_examples=200, deadline=None)


@dataclass
class Ledger:
    """Average-cost accounting of unique fills, written independently of the model."""

    qty: float = 0.0
    avg: float = 0.0
    realized_by_day: dict[date, float] = field(default_factory=dict)

    def fill(self, day: date, side: Side, qty: float, price: float) -> None:
        signed = qty if side is Side.BUY else -qty
        if self.qty == 0 or (self.qty > 0) == (signed > 0):
            self.avg = (abs(self.qty) * self.avg + qty * price) / (abs(self.qty) + qty)
            self.qty += signed
            return
        closing = min(abs(self.qty), qty)
        pnl = (price - self.avg) * closing * (1 if self.qty > 0 else -1)
        self.realized_by_day[day] = self.realized_by_day.get(day, 0.0) + pnl
        was_long = self.qty > 0
        self.qty += signed
        if self.qty == 0:
            self.avg = 0.0
        elif (self.qty > 0) != was_long:
            self.avg = price  # crossed zero: the remainder opened at this fill


@dataclass
class Run:
    """The result of playing a history from a fresh state."""

    state: PositionState
    executions: list[Execution]
    unique: dict[str, Execution]
    ledger: Ledger
    realized_by_day: dict[date, float]
    closed_pnl: float
    entry_ids: list[str]


def entry_in_flight(state: PositionState) -> str | None:
    return next((i.client_order_id for i in state.intents if i.kind is IntentKind.ENTRY), None)


def play(history: list[Step], check: bool = True) -> Run:
    state = position_state()
    executions: list[Execution] = []
    unique: dict[str, Execution] = {}
    ledger = Ledger()
    realized_by_day: dict[date, float] = {}
    closed_pnl = 0.0
    entry_ids: list[str] = []
    for n, step in enumerate(history):
        before = state
        now = datetime.combine(state.trading_day, time(15, 0)) + timedelta(seconds=n)
        match step:
            case NewFill(side=side, qty=qty, price=price, of_entry=of_entry):
                cid = entry_in_flight(state) if of_entry else None
                entry = state.intent(cid) if cid is not None else None
                ex = execution(
                    f"x{n}",
                    side if entry is None else entry.side,
                    qty,
                    price,
                    ts=now,
                    client_order_id=cid or "",
                )
                applied = model.apply_fill(state, ex)
                state = applied.state
                closed_pnl += sum(t.realized_pnl for t in applied.closed)
                executions.append(ex)
                unique[ex.exec_id] = ex
                ledger.fill(state.trading_day, ex.side, ex.qty, ex.price)
            case Redeliver(pick=pick, tampered=tampered) if executions:
                ex = executions[pick % len(executions)]
                if tampered:
                    ex = msgspec.structs.replace(ex, qty=ex.qty + 1, price=ex.price * 2, ts=now)
                applied = model.apply_fill(state, ex)
                assert applied.duplicate
                assert applied.state is state
            case NewDay(days=days):
                realized_by_day[state.trading_day] = state.realized_pnl_today
                state = model.roll_day(state, state.trading_day + timedelta(days=days))
            case TryEntry(pivot=pivot, side=side):
                try:
                    state, intent = model.begin_entry(
                        state,
                        day=state.trading_day,
                        pivot=pivot,
                        side=side,
                        qty=100,
                        now=now,
                        max_attempts=MAX_ATTEMPTS,
                    )
                except model.EntryRefused:
                    assert state is before
                else:
                    entry_ids.append(intent.client_order_id)
            case RejectEntry():
                cid = entry_in_flight(state)
                if cid is not None:
                    state = model.resolve_intent(state, cid, done=True)
        if check:
            check_step(before, state)
    realized_by_day[state.trading_day] = state.realized_pnl_today
    return Run(state, executions, unique, ledger, realized_by_day, closed_pnl, entry_ids)


def check_step(before: PositionState, after: PositionState) -> None:
    """Invariants of every single step."""
    assert after.seq >= before.seq
    assert all(0 < count <= MAX_ATTEMPTS for count in after.attempts.values())
    if after.trading_day == before.trading_day:
        for key, count in before.attempts.items():
            assert after.attempts.get(key, 0) >= count, key  # attempts never go down in a day
        assert after.entries_today >= before.entries_today
    else:
        assert after.trading_day > before.trading_day
        assert (after.entries_today, after.trades_today) == (0, 0)
        assert after.realized_pnl_today == 0.0
        assert not any(k.startswith(before.trading_day.isoformat()) for k in after.attempts)
        assert (after.qty, after.avg_price) == (before.qty, before.avg_price)


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-6)


@FAST
@given(histories)
def test_quantity_is_the_signed_sum_of_unique_fills(history: list[Step]) -> None:
    run = play(history)

    expected = sum(ex.qty if ex.side is Side.BUY else -ex.qty for ex in run.unique.values())
    assert run.state.qty == expected
    assert run.state.applied == tuple(run.unique)


@FAST
@given(histories)
def test_attempts_never_go_down_within_a_day(history: list[Step]) -> None:
    run = play(history)  # ``check_step`` asserts it after every step

    assert len(set(run.entry_ids)) == len(run.entry_ids)  # no client order id twice
    for key, count in run.state.attempts.items():
        assert key.startswith(run.state.trading_day.isoformat())
        assert count <= MAX_ATTEMPTS


@FAST
@given(histories)
def test_realized_pnl_equals_an_independent_average_cost_ledger(history: list[Step]) -> None:
    run = play(history)

    assert close(run.state.avg_price, run.ledger.avg)
    for day in run.realized_by_day.keys() | run.ledger.realized_by_day.keys():
        assert close(run.realized_by_day.get(day, 0.0), run.ledger.realized_by_day.get(day, 0.0))
    total = sum(run.ledger.realized_by_day.values())
    assert close(run.closed_pnl + run.state.trade_realized, total)


@FAST
@given(histories)
def test_replaying_a_history_gives_the_same_state(history: list[Step]) -> None:
    first = play(history, check=False)
    second = play(history, check=False)

    assert first.state == second.state
    assert msgspec.msgpack.encode(first.state) == msgspec.msgpack.encode(second.state)


@FAST
@given(histories)
def test_replaying_every_fill_again_changes_nothing(history: list[Step]) -> None:
    run = play(history, check=False)

    state = run.state
    for ex in run.executions:
        applied = model.apply_fill(state, ex)
        assert applied.duplicate
        state = applied.state

    assert state is run.state


@FAST
@given(histories)
def test_closed_trades_are_well_formed(history: list[Step]) -> None:
    state = position_state()
    for n, step in enumerate(history):
        if not isinstance(step, NewFill):
            continue
        side = step.side
        applied = model.apply_fill(state, execution(f"x{n}", side, step.qty, step.price))
        for trade in applied.closed:
            assert trade.symbol == SYMBOL
            assert trade.qty > 0
            assert trade.mae >= 0
            assert trade.mfe >= 0
            assert trade.exit_price is not None
            assert trade.entry_at is not None
            assert trade.entry_at <= trade.exit_at
            assert trade.exit_reason == "manual"
        state = applied.state
        assert state.is_flat == (state.opened_at is None)
        if not state.is_flat:
            assert state.trade_low is not None
            assert state.trade_high is not None
            slack = 1e-9 * state.avg_price
            assert state.trade_low - slack <= state.avg_price <= state.trade_high + slack


@FAST
@given(
    st.text(min_size=1, max_size=12),
    st.sampled_from(["AAPL", "MSFT", "BRK.B"]),
    st.dates(DAY, DAY + timedelta(days=3_000)),
    st.integers(0, 50),
    st.sampled_from(["entry", "exit1", "partial1", "stop7"]),
)
def test_client_order_ids_are_a_function_of_their_parts(
    account: str, symbol: str, day: date, attempt: int, kind: str
) -> None:
    cid = model.client_order_id(account, symbol, day, attempt, kind)

    assert cid == model.client_order_id(account, symbol, day, attempt, kind)
    assert cid != model.client_order_id(account, symbol, day, attempt + 1, kind)
    assert cid != model.client_order_id(account, symbol, day + timedelta(days=1), attempt, kind)
    if account != ACCOUNT:  # the account is a 24-bit hash: distinct in any small sample
        assert cid != model.client_order_id(ACCOUNT, symbol, day, attempt, kind)
