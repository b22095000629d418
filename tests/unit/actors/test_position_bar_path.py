"""The bar path of the position actor: quiet bars skip the strategy, marks fold when read.

On a real store, against ``InstantVenue``. A session of the sim venue's bars
through an actor whose strategy offers ``quiet`` trades exactly as through one
that decides on every bar; the marks the actor defers (last price, the trade's
extremes) are in every state anyone reads, and in every snapshot it stores.
"""

from __future__ import annotations

import math
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest

from actors import model
from actors.bars import BarRing
from actors.messages import Checkpoint, GetState, OnBar, OnExecution, OnOrderUpdate
from actors.position import BadEvent, PositionActor
from actors.snapshot import decode_snapshot
from actors.state import Mode, PositionState
from actors.strategy import Action, PivotBreakout, Session, StrategyParams
from bench._world import BAR_SECONDS, DAY, InstantVenue, context
from bench.bars import make_tape
from brokers.base import Bar, Execution, OrderUpdate
from persistence import open_store
from runtime.supervision import Supervisor


class _DecidesOnEveryBar:
    """The reference strategy without its quiet bars, reading the marks of every bar."""

    name = "pivot_breakout"

    def __init__(self, inner: PivotBreakout) -> None:
        self.inner = inner
        self.seen: list[tuple[PositionState, Bar]] = []

    def decide(
        self, state: PositionState, bars: BarRing, bar: Bar, session: Session
    ) -> list[Action]:
        self.seen.append((state, bar))
        return self.inner.decide(state, bars, bar, session)


class _Counting(PivotBreakout):
    def __init__(self, params: StrategyParams) -> None:
        super().__init__(params)
        self.decided = 0

    def decide(
        self, state: PositionState, bars: BarRing, bar: Bar, session: Session
    ) -> list[Action]:
        self.decided += 1
        return super().decide(state, bars, bar, session)


def _trade_of(state: PositionState) -> tuple[object, ...]:
    """What a session decides, apart from ``seq`` and the client order ids built from it."""
    return (
        state.qty,
        state.avg_price,
        state.realized_pnl_today,
        state.trades_today,
        sorted(state.attempts.items()),
        state.levels,
        state.last_price,
        state.trade_high,
        state.trade_low,
        [(p.price, p.qty, p.reason) for p in state.partials],
    )


async def _session(
    tmp_path: Path, name: str, strategy: object, tape_symbols: int = 8
) -> tuple[list[PositionState], list[tuple[object, ...]], int]:
    """Run a whole session of bars through one actor per symbol; return states and fills."""
    tape = make_tape(tape_symbols, 390)
    venue = InstantVenue()
    store = await open_store(tmp_path / f"{name}.db", "BENCH-PAPER")
    fills: list[tuple[object, ...]] = []
    try:
        ctx = context(store, venue)
        actors = [PositionActor(s, ctx, strategy=strategy) for s in tape.names]  # type: ignore[arg-type]
        by_symbol = {a.symbol: a for a in actors}

        async def route() -> None:
            async for event in venue.events():
                if isinstance(event, Execution):
                    fills.append((event.symbol, event.side, event.qty, event.price, event.ts))
                    await by_symbol[event.symbol].tell(OnExecution(event))
                elif isinstance(event, OrderUpdate):
                    await by_symbol[event.order.symbol].tell(OnOrderUpdate(event.order))

        async with Supervisor(name=name) as sup:
            await sup.start_all(actors)
            sup.spawn(route(), name="router")
            for row in tape.slots:
                venue.market_time = row[0].ts + timedelta(seconds=BAR_SECONDS)
                for j, bar in enumerate(row):
                    venue.last[bar.symbol] = bar.close
                    await actors[j].tell(OnBar(bar))
                for actor in actors:  # fills of this bar land before the next one
                    await actor.ask(GetState())
                    await actor.ask(GetState())
            states = [await a.ask(GetState()) for a in actors]
            await venue.close()
    finally:
        await store.close()
    return states, fills, venue.submitted  # type: ignore[return-value]


async def test_a_session_skipping_quiet_bars_trades_as_one_deciding_on_every_bar(
    tmp_path: Path,
) -> None:
    params = StrategyParams()
    quiet_states, quiet_fills, quiet_orders = await _session(tmp_path, "quiet", _Counting(params))
    every = _DecidesOnEveryBar(PivotBreakout(params))
    states, fills, orders = await _session(tmp_path, "every", every)

    assert len(fills) > 8  # the session trades: entries, partials, stops, exits
    assert quiet_fills == fills
    assert quiet_orders == orders
    assert [_trade_of(s) for s in quiet_states] == [_trade_of(s) for s in states]
    # A strategy that reads the marks sees the bar's own in the state it is given.
    assert every.seen
    assert all(state.last_price == bar.close for state, bar in every.seen)


async def test_many_bars_of_a_session_skip_the_strategy(tmp_path: Path) -> None:
    counting = _Counting(StrategyParams())
    await _session(tmp_path, "count", counting)

    # 1,531 of these 3,120 bars reach decide (these 8 symbols trend: a close beyond a
    # level crossed earlier is not quiet); 9% of the benchmark's 390,000.
    assert 0 < counting.decided < 8 * 390 * 0.6


async def test_marks_taken_since_the_last_read_are_in_every_state_read_and_stored(
    tmp_path: Path,
) -> None:
    tape = make_tape(1, 60)
    bars = [row[0] for row in tape.slots]
    venue = InstantVenue()
    venue.market_time = bars[0].ts
    store = await open_store(tmp_path / "marks.db", "BENCH-PAPER")
    try:
        actor = PositionActor(bars[0].symbol, context(store, venue))
        held = model.adopt(
            PositionState(account="BENCH-PAPER", symbol=actor.symbol, trading_day=DAY),
            100.0,
            bars[0].close,
            bars[0].ts,
            Mode.MANAGED,
        )
        expected = held
        async with Supervisor(name="marks") as sup:
            await sup.start_all([actor])
            actor.state = held
            for bar in bars[:40]:
                await actor.tell(OnBar(bar))
                expected = model.mark_bar(expected, bar)
            read = await actor.ask(GetState())
            assert isinstance(read, PositionState)
            assert _marks(read) == _marks(expected)
            for bar in bars[40:]:  # more bars, then a checkpoint: stored with their marks
                await actor.tell(OnBar(bar))
                expected = model.mark_bar(expected, bar)
            await actor.ask(Checkpoint(force=True))
            assert _marks(actor.state) == _marks(expected)
        (row,) = (await store.load_snapshots()).rows
        stored, ring = decode_snapshot(row.blob, row.schema_version, actor.symbol, 240, row.bars)
        assert _marks(stored) == _marks(expected)
        assert ring.last_time() == bars[-1].ts
        assert expected.trade_high != held.trade_high  # the bars did move the extremes
    finally:
        await store.close()


async def test_a_fold_that_moves_the_last_price_moves_seq(tmp_path: Path) -> None:
    """The MQTT bridge republishes a position whose ``seq`` moved: a new price must move it."""
    bars = [row[0] for row in make_tape(1, 3).slots]
    venue = InstantVenue()
    venue.market_time = bars[0].ts
    store = await open_store(tmp_path / "seq.db", "BENCH-PAPER")
    try:
        actor = PositionActor(bars[0].symbol, context(store, venue))
        async with Supervisor(name="seq") as sup:
            await sup.start_all([actor])
            seqs, prices = [], []
            for bar in bars:
                await actor.tell(OnBar(bar))
                read = await actor.ask(GetState())
                assert isinstance(read, PositionState)
                seqs.append(read.seq)
                prices.append(read.last_price)
        assert prices == [bar.close for bar in bars]
        assert len({bar.close for bar in bars}) == 3
        assert seqs[0] < seqs[1] < seqs[2]
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("change", "error"),
    [
        ({"symbol": "OTHER"}, "sent to"),
        ({"close": math.nan}, "bar close"),
        ({"high": 90.0, "low": 95.0}, "below its low"),
        ({"volume": -1.0}, "volume"),
    ],
)
async def test_a_bar_that_cannot_be_real_is_refused_and_changes_nothing(
    tmp_path: Path, change: dict[str, object], error: str
) -> None:
    good, later = (row[0] for row in make_tape(1, 2).slots)
    venue = InstantVenue()
    venue.market_time = good.ts
    store = await open_store(tmp_path / "bad.db", "BENCH-PAPER")
    try:
        actor = PositionActor(good.symbol, context(store, venue))
        async with Supervisor(name="bad") as sup:
            await sup.start_all([actor])
            await actor.ask(OnBar(good))
            before = await actor.ask(GetState())
            with pytest.raises(BadEvent, match=error):
                await actor.ask(OnBar(msgspec.structs.replace(later, **change)))
            assert await actor.ask(GetState()) is before
            assert len(actor.bars) == 1
            assert actor.bars.last_time() == good.ts
    finally:
        await store.close()


def _marks(state: PositionState) -> tuple[float | None, ...]:
    return state.last_price, state.trade_high, state.trade_low
