"""What a fill of an order unknown to the state did (``actors.findings.external_kind``)."""

from __future__ import annotations

from actors import model
from actors.findings import external_kind, own_prefix
from tests.unit.actors._actor_kit import ACCOUNT, SYMBOL, buy, long_position, sell


def test_a_hand_buy_adding_to_the_long_is_added() -> None:
    before = long_position(100.0)
    hand = buy("h-1", 50.0, 101.0)
    assert external_kind(before, model.apply_fill(before, hand), hand) == "added"


def test_a_late_part_of_our_own_order_whose_intent_is_settled_is_not_a_hand_trade() -> None:
    before = long_position(100.0)
    ours = buy("e-late", 50.0, 101.0, client_order_id=f"{own_prefix(ACCOUNT, SYMBOL)}1-entry")
    assert before.intent(ours.client_order_id) is None
    assert external_kind(before, model.apply_fill(before, ours), ours) is None


def test_a_hand_sell_of_part_is_reduced_and_of_all_closed() -> None:
    before = long_position(100.0)
    part, whole = sell("h-1", 40.0, 99.0), sell("h-2", 100.0, 99.0)
    assert external_kind(before, model.apply_fill(before, part), part) == "reduced"
    assert external_kind(before, model.apply_fill(before, whole), whole) == "closed"
