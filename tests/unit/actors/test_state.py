"""The position state: shape, derived views, and that it survives msgpack whole."""

from __future__ import annotations

import msgspec
import pytest

from actors import model
from actors.state import (
    SCHEMA_VERSION,
    IntentKind,
    Mode,
    Origin,
    PositionState,
    StopOrder,
    attempt_key,
)
from brokers.base import Side
from tests.unit.actors._actor_kit import (
    ACCOUNT,
    DAY,
    OPEN,
    SYMBOL,
    bar,
    long_position,
    position_state,
    sell,
)


def busy_state() -> PositionState:
    """A state with every kind of field filled: position, partial, stop, intents, levels."""
    state = model.set_levels(long_position(100, 10.0), DAY, {"resistance": 11.0})
    state = model.mark_bar(state, bar(3, 10.5, high=10.75, low=9.75))
    state = model.apply_fill(state, sell("e2", 40, 11.0)).state
    state, _ = model.begin_order(
        state, kind=IntentKind.EXIT, side=Side.SELL, qty=60, now=OPEN, tag="exit1"
    )
    stop = StopOrder(client_order_id="s1", side=Side.SELL, price=9.5, qty=60, order_id="B1")
    return msgspec.structs.replace(
        model.set_stop(state, stop),
        attempts={attempt_key(DAY, 11.0, Side.BUY): 1},
        targets=(11.0, 12.0),
        planned_stop=9.5,
    )


def test_a_state_survives_msgpack_whole() -> None:
    state = busy_state()

    back = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=PositionState)

    assert back == state
    assert isinstance(back.origin, Origin)
    assert back.opened_at == OPEN


def test_a_snapshot_written_before_newer_fields_decodes_with_their_defaults() -> None:
    old = msgspec.msgpack.encode(
        {"account": ACCOUNT, "symbol": SYMBOL, "trading_day": DAY.isoformat(), "qty": 5.0}
    )

    state = msgspec.msgpack.decode(old, type=PositionState)

    assert (state.qty, state.version, state.mode, state.attempts) == (
        5.0,
        SCHEMA_VERSION,
        Mode.MANAGED,
        {},
    )


def test_a_state_is_frozen() -> None:
    state = position_state()

    with pytest.raises(AttributeError):
        state.qty = 1.0  # type: ignore[misc]


@pytest.mark.parametrize(("qty", "side"), [(5.0, Side.BUY), (-5.0, Side.SELL), (0.0, None)])
def test_the_side_follows_the_sign_of_the_quantity(qty: float, side: Side | None) -> None:
    state = position_state(qty=qty)

    assert state.side is side
    assert state.is_flat is (side is None)


def test_an_intent_is_found_by_its_client_order_id() -> None:
    state = busy_state()
    (intent,) = state.intents

    assert state.intent(intent.client_order_id) is intent
    assert state.intent("nope") is None


def test_attempts_are_keyed_by_day_pivot_and_side() -> None:
    key = attempt_key(DAY, 101.25, Side.SELL)

    assert key == "2026-01-05|101.2500|sell"
    assert position_state(attempts={key: 2}).attempts_for(DAY, 101.25, Side.SELL) == 2
    assert position_state(attempts={key: 2}).attempts_for(DAY, 101.25, Side.BUY) == 0
