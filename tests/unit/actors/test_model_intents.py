"""Write-ahead intents in the pure position model: ids, attempts, entries, the day."""

from __future__ import annotations

import math
from datetime import date, timedelta

import msgspec
import pytest

from actors import model
from actors.state import (
    IntentKind,
    Mode,
    PositionState,
    StopOrder,
    attempt_key,
)
from brokers.base import OrderType, Side
from tests.unit.actors._actor_kit import (
    ACCOUNT,
    DAY,
    MAX_ATTEMPTS,
    NEXT_DAY,
    OPEN,
    PIVOT,
    SYMBOL,
    apply_all,
    buy,
    enter,
    long_position,
    order,
    position_state,
    sell,
    short_position,
)

# -- client order ids and intents ---------------------------------------------------------


def test_client_order_ids_are_deterministic_and_name_their_parts() -> None:
    cid = model.client_order_id(ACCOUNT, SYMBOL, DAY, 2, "entry")

    assert cid == model.client_order_id(ACCOUNT, SYMBOL, DAY, 2, "entry")
    assert cid.startswith("sw-")
    assert cid.endswith(f"-{SYMBOL}-260105-2-entry")
    assert ACCOUNT not in cid  # the account is hashed, not printed


@pytest.mark.parametrize(
    "other",
    [
        ("PA-OTHER", SYMBOL, DAY, 1, "entry"),
        (ACCOUNT, "MSFT", DAY, 1, "entry"),
        (ACCOUNT, SYMBOL, NEXT_DAY, 1, "entry"),
        (ACCOUNT, SYMBOL, DAY, 2, "entry"),
        (ACCOUNT, SYMBOL, DAY, 1, "exit1"),
    ],
)
def test_client_order_ids_differ_in_every_part(other: tuple[str, str, date, int, str]) -> None:
    assert model.client_order_id(*other) != model.client_order_id(ACCOUNT, SYMBOL, DAY, 1, "entry")


def test_an_entry_records_its_intent_and_counts_the_attempt() -> None:
    state = position_state()

    new, intent = enter(state, pivot=PIVOT, side=Side.BUY, qty=50)

    assert intent.client_order_id == model.client_order_id(ACCOUNT, SYMBOL, DAY, 1, "entry")
    assert (intent.kind, intent.side, intent.qty, intent.order_type) == (
        IntentKind.ENTRY,
        Side.BUY,
        50,
        OrderType.MARKET,
    )
    assert new.intents == (intent,)
    assert new.attempts == {attempt_key(DAY, PIVOT, Side.BUY): 1}
    assert (new.entries_today, new.pivot, new.seq) == (1, PIVOT, state.seq + 1)


def test_the_same_decision_after_a_crash_gives_the_same_client_order_id() -> None:
    state = position_state()
    stored = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=PositionState)

    first = enter(state)
    after_crash = enter(stored)

    assert first == after_crash


def test_no_entry_while_a_position_is_open() -> None:
    with pytest.raises(model.EntryRefused, match="already open"):
        enter(long_position())
    with pytest.raises(model.EntryRefused, match="already open"):
        enter(short_position())


def test_no_entry_while_an_entry_is_in_flight() -> None:
    state, _ = enter(position_state(), side=Side.BUY)

    with pytest.raises(model.EntryRefused, match="in flight"):
        enter(state, side=Side.SELL, pivot=99.0)


def test_no_automated_entry_in_watch_mode() -> None:
    with pytest.raises(model.EntryRefused, match="watch"):
        enter(position_state(mode=Mode.WATCH))


def test_attempts_count_at_intent_time_and_survive_rejections() -> None:
    state = position_state()
    for number in range(1, MAX_ATTEMPTS + 1):
        state, intent = enter(state)
        assert state.attempts_for(DAY, PIVOT, Side.BUY) == number
        state = model.resolve_intent(state, intent.client_order_id, done=True)  # rejected
        assert state.attempts_for(DAY, PIVOT, Side.BUY) == number

    with pytest.raises(model.EntryRefused, match="attempts"):
        enter(state)


def test_attempts_are_counted_per_pivot_and_side() -> None:
    state = position_state(
        attempts={attempt_key(DAY, PIVOT, Side.BUY): MAX_ATTEMPTS},
    )

    other_side, _ = enter(state, side=Side.SELL)
    other_pivot, _ = enter(state, pivot=PIVOT + 1)

    assert other_side.attempts_for(DAY, PIVOT, Side.SELL) == 1
    assert other_pivot.attempts_for(DAY, PIVOT + 1, Side.BUY) == 1
    with pytest.raises(model.EntryRefused):
        enter(state)


def test_every_entry_of_a_day_gets_its_own_client_order_id() -> None:
    state, first = enter(position_state(), pivot=PIVOT)
    state = model.resolve_intent(state, first.client_order_id, done=True)

    _, second = enter(state, pivot=99.0, side=Side.SELL)

    assert first.client_order_id != second.client_order_id
    assert second.client_order_id.endswith("-2-entry")


def test_an_entry_on_a_new_trading_day_rolls_the_day_first() -> None:
    state = position_state(attempts={attempt_key(DAY, PIVOT, Side.BUY): MAX_ATTEMPTS})

    new, intent = enter(state, day=NEXT_DAY)

    assert new.trading_day == NEXT_DAY
    assert new.attempts == {attempt_key(NEXT_DAY, PIVOT, Side.BUY): 1}
    assert intent.client_order_id == model.client_order_id(ACCOUNT, SYMBOL, NEXT_DAY, 1, "entry")


def test_an_entry_for_a_past_trading_day_is_refused() -> None:
    with pytest.raises(model.BadInput, match="before the trading day"):
        enter(position_state(trading_day=NEXT_DAY), day=DAY)


@pytest.mark.parametrize(
    ("qty", "pivot", "order_type", "price"),
    [
        (math.nan, PIVOT, OrderType.MARKET, None),
        (0.0, PIVOT, OrderType.MARKET, None),
        (10.0, -1.0, OrderType.MARKET, None),
        (10.0, math.inf, OrderType.MARKET, None),
        (10.0, PIVOT, OrderType.LIMIT, None),
        (10.0, PIVOT, OrderType.LIMIT, math.nan),
    ],
)
def test_an_entry_with_impossible_numbers_is_refused(
    qty: float, pivot: float, order_type: OrderType, price: float | None
) -> None:
    with pytest.raises(model.BadInput):
        model.begin_entry(
            position_state(),
            day=DAY,
            pivot=pivot,
            side=Side.BUY,
            qty=qty,
            now=OPEN,
            max_attempts=MAX_ATTEMPTS,
            order_type=order_type,
            price=price,
        )


def test_an_order_intent_gets_a_deterministic_id_from_its_tag() -> None:
    state = long_position()

    new, intent = model.begin_order(
        state, kind=IntentKind.EXIT, side=Side.SELL, qty=100, now=OPEN, tag="exit1", reason="eod"
    )

    assert intent.client_order_id == model.client_order_id(ACCOUNT, SYMBOL, DAY, 0, "exit1")
    assert (intent.kind, intent.reason) == (IntentKind.EXIT, "eod")
    assert new.intents == (intent,)
    assert new.seq == state.seq + 1


def test_an_order_with_the_id_of_one_in_flight_is_refused() -> None:
    state, _ = model.begin_order(
        long_position(), kind=IntentKind.EXIT, side=Side.SELL, qty=100, now=OPEN, tag="exit1"
    )

    with pytest.raises(model.EntryRefused, match="already exists"):
        model.begin_order(
            state, kind=IntentKind.EXIT, side=Side.SELL, qty=100, now=OPEN, tag="exit1"
        )


@pytest.mark.parametrize(
    ("kind", "qty", "order_type", "price"),
    [
        (IntentKind.ENTRY, 10.0, OrderType.MARKET, None),
        (IntentKind.EXIT, math.inf, OrderType.MARKET, None),
        (IntentKind.EXIT, -5.0, OrderType.MARKET, None),
        (IntentKind.STOP, 10.0, OrderType.STOP, None),
        (IntentKind.STOP, 10.0, OrderType.STOP, 0.0),
    ],
)
def test_an_order_with_impossible_inputs_is_refused(
    kind: IntentKind, qty: float, order_type: OrderType, price: float | None
) -> None:
    with pytest.raises(model.BadInput):
        model.begin_order(
            long_position(),
            kind=kind,
            side=Side.SELL,
            qty=qty,
            now=OPEN,
            tag="x",
            order_type=order_type,
            price=price,
        )


def test_resolving_an_intent_attaches_the_broker_order_id_and_arms_its_stop() -> None:
    state, intent = model.begin_order(
        long_position(),
        kind=IntentKind.STOP,
        side=Side.SELL,
        qty=100,
        now=OPEN,
        tag="stop1",
        order_type=OrderType.STOP,
        price=95.0,
    )
    stop = StopOrder(client_order_id=intent.client_order_id, side=Side.SELL, price=95.0, qty=100)
    state = model.set_stop(state, stop)

    new = model.resolve_intent(state, intent.client_order_id, order_id="B7")

    resolved = new.intent(intent.client_order_id)
    assert resolved is not None
    assert resolved.order_id == "B7"
    assert new.stop == msgspec.structs.replace(stop, order_id="B7", status="live")
    assert model.resolve_intent(new, intent.client_order_id, order_id="B7") is new


def test_resolving_an_intent_as_done_drops_it() -> None:
    state, intent = enter(position_state())

    new = model.resolve_intent(state, intent.client_order_id, done=True)

    assert new.intents == ()
    assert new.seq == state.seq + 1


def test_resolving_an_unknown_intent_changes_nothing() -> None:
    state = position_state()

    assert model.resolve_intent(state, "nope", done=True) is state
    assert model.resolve_intent(state, "nope", order_id="B1") is state


def test_set_stop_records_valid_stops_only() -> None:
    state = long_position()
    stop = StopOrder(client_order_id="s", side=Side.SELL, price=95.0, qty=100)

    new = model.set_stop(state, stop)

    assert new.stop == stop
    assert new.seq == state.seq + 1
    assert model.set_stop(new, stop) is new
    assert model.set_stop(new, None).stop is None
    for bad in (
        msgspec.structs.replace(stop, price=math.nan),
        msgspec.structs.replace(stop, qty=0.0),
    ):
        with pytest.raises(model.BadInput):
            model.set_stop(state, bad)


def test_the_stops_intent_follows_the_stop_it_placed() -> None:
    state, intent = model.begin_order(
        long_position(),
        kind=IntentKind.STOP,
        side=Side.SELL,
        qty=100,
        now=OPEN,
        tag="stop1",
        order_type=OrderType.STOP,
        price=95.0,
    )
    stop = StopOrder(client_order_id=intent.client_order_id, side=Side.SELL, price=95.0, qty=100)
    state = model.set_stop(state, stop)
    state = model.apply_fill(
        state, sell("s1", 30, 95.0, client_order_id=intent.client_order_id)
    ).state

    moved = model.set_stop(state, msgspec.structs.replace(stop, price=100.0, qty=70))

    followed = moved.intent(intent.client_order_id)
    assert followed is not None
    assert (followed.qty, followed.filled_qty, followed.price) == (100, 30, 100.0)
    other = StopOrder(client_order_id="not-an-intent", side=Side.SELL, price=96.0, qty=70)
    assert model.set_stop(moved, other).intents == moved.intents
    assert model.set_stop(moved, None).intents == moved.intents


def _long_100_with_stop() -> tuple[PositionState, StopOrder]:
    """Return long 100 with its 100-share stop at 95 acknowledged as ``b-stop``."""
    state, intent = model.begin_order(
        long_position(),
        kind=IntentKind.STOP,
        side=Side.SELL,
        qty=100,
        now=OPEN,
        tag="stop1",
        order_type=OrderType.STOP,
        price=95.0,
    )
    stop = StopOrder(intent.client_order_id, Side.SELL, 95.0, 100, "b-stop", "live")
    return model.set_stop(state, stop), stop


def test_a_partial_fill_of_the_stop_moves_its_shares_from_open_to_filled() -> None:
    state, stop = _long_100_with_stop()
    cid = stop.client_order_id

    part = model.apply_fill(state, sell("s1", 40, 95.0, client_order_id=cid)).state

    assert part.qty == 60
    assert part.stop is not None
    assert part.stop.qty == 60, "what is left of the stop covers what is left"
    assert (part.stop.filled_qty, part.stop.order_qty) == (40, 100)
    intent = part.intent(cid)
    assert intent is not None
    assert (intent.qty, intent.filled_qty) == (100, 40)

    rest = model.apply_fill(part, sell("s2", 60, 94.9, client_order_id=cid)).state

    assert rest.is_flat
    assert (rest.stop, rest.intent(cid)) == (None, None)


def test_a_stop_whose_open_qty_fills_while_a_position_is_left_is_gone() -> None:
    state, stop = _long_100_with_stop()
    bigger = apply_all(state, [buy("e2", 20, 101.0)])  # 120 held, the stop still 100

    done = model.apply_fill(bigger, sell("s1", 100, 95.0, client_order_id=stop.client_order_id))

    assert done.state.qty == 20
    assert done.state.stop is None, "nothing of it rests any more"
    assert done.state.intent(stop.client_order_id) is None


def test_a_fill_of_another_order_leaves_the_stop_as_it_is() -> None:
    state, _ = _long_100_with_stop()

    after = model.apply_fill(state, sell("h1", 30, 101.0)).state

    assert after.stop == state.stop


def test_a_stop_takes_its_filled_qty_from_its_intent() -> None:
    state, stop = _long_100_with_stop()
    part = model.apply_fill(state, sell("s1", 40, 95.0, client_order_id=stop.client_order_id))

    # Built from the stop as it was before the fill (filled 0): the intent's 40 count.
    moved = model.set_stop(part.state, msgspec.structs.replace(stop, price=96.0, qty=30))

    assert moved.stop is not None
    assert (moved.stop.qty, moved.stop.filled_qty, moved.stop.order_qty) == (30, 40, 70)
    intent = moved.intent(stop.client_order_id)
    assert intent is not None
    assert (intent.qty, intent.filled_qty, intent.price) == (70, 40, 96.0)


def test_a_stop_from_the_venues_order_counts_the_fills_applied_here() -> None:
    state, stop = _long_100_with_stop()
    cid = stop.client_order_id
    part = model.apply_fill(state, sell("s1", 40, 95.0, client_order_id=cid)).state
    seen = msgspec.structs.replace(order(cid, qty=100), filled_qty=40)
    ahead = msgspec.structs.replace(seen, filled_qty=70)  # 30 more filled, not streamed yet

    for venue_order in (seen, ahead):
        found = model.stop_from_order(part, venue_order)
        assert (found.qty, found.filled_qty, found.status) == (60, 40, "live")
        assert (found.order_id, found.price) == (venue_order.order_id, 95.0)


def test_a_stop_from_an_order_without_an_intent_takes_the_venues_counts() -> None:
    foreign = msgspec.structs.replace(order("by-hand-stop", qty=100), filled_qty=25)

    found = model.stop_from_order(long_position(75), foreign)

    assert (found.qty, found.filled_qty, found.order_qty) == (75, 25, 100)
    held = model.set_stop(long_position(75), found)
    later = model.apply_fill(held, sell("s1", 5, 95.0, client_order_id="by-hand-stop")).state
    assert later.stop is not None
    assert (later.stop.qty, later.stop.filled_qty) == (70, 30)
    for filled in (30, 35):  # the 5 applied, then 5 more the stream has not brought yet
        again = model.stop_from_order(later, msgspec.structs.replace(foreign, filled_qty=filled))
        assert again == later.stop, "the fills applied here count, each once"


# -- day rollover ---------------------------------------------------------------------------


def test_a_new_trading_day_resets_the_day_but_never_the_position() -> None:
    state, intent = enter(position_state())
    state = apply_all(state, [buy("e1", 100, 102.0, client_order_id=intent.client_order_id)])
    state = apply_all(state, [sell("e2", 40, 104.0)])
    state = msgspec.structs.replace(
        state,
        trades_today=3,
        attempts={**state.attempts, attempt_key(NEXT_DAY, 99.0, Side.SELL): 1},
    )

    new = model.roll_day(state, NEXT_DAY)

    assert new.trading_day == NEXT_DAY
    assert new.attempts == {attempt_key(NEXT_DAY, 99.0, Side.SELL): 1}
    assert (new.realized_pnl_today, new.trades_today, new.entries_today) == (0.0, 0, 0)
    kept = ("qty", "avg_price", "opened_at", "entries", "exits", "partials", "trade_realized")
    for name in kept:
        assert getattr(new, name) == getattr(state, name), name
    assert new.seq == state.seq + 1


@pytest.mark.parametrize("day", [DAY, DAY - timedelta(days=1)])
def test_the_same_or_an_earlier_day_changes_nothing(day: date) -> None:
    state = position_state(attempts={attempt_key(DAY, PIVOT, Side.BUY): 1})

    assert model.roll_day(state, day) is state
