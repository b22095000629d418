"""SimConfig validation: a bad venue setting is an error at construction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from brokers.sim import SimConfig

BOOK = Path("sim.book")


def test_defaults() -> None:
    config = SimConfig(symbols=["AAPL"], book_path=BOOK)
    assert (config.seed, config.speed, config.bar_seconds, config.account_id) == (
        7,
        60.0,
        60,
        "SIM-PAPER",
    )
    assert config.base_price("AAPL") == 100.0


def test_per_symbol_start_prices() -> None:
    config = SimConfig(
        symbols=["AAPL", "AMD"], book_path=BOOK, start_price={"AAPL": 190.0, "AMD": 12.5}
    )
    assert config.base_price("AMD") == 12.5


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"symbols": []}, "symbols"),
        ({"symbols": ["AAPL", "AAPL"]}, "distinct"),
        ({"speed": 0.0}, "speed"),
        ({"speed": float("inf")}, "speed"),
        ({"bar_seconds": 0}, "bar_seconds"),
        ({"start_price": -1.0}, "start_price"),
        ({"start_price": {"MSFT": 10.0}}, "no price for"),
        ({"latency_ms": -1.0}, "latency_ms"),
        ({"max_fill_qty": 0.0}, "max_fill_qty"),
        ({"account_id": ""}, "account_id"),
        ({"retain_days": 0}, "retain_days"),
        ({"event_buffer": 0}, "event_buffer"),
    ],
)
def test_bad_settings_are_refused(changes: dict[str, Any], match: str) -> None:
    values: dict[str, Any] = {"symbols": ["AAPL"], "book_path": BOOK, **changes}
    with pytest.raises(ValueError, match=match):
        SimConfig(**values)


def test_decoded_config_is_validated_and_strict() -> None:
    with pytest.raises(msgspec.ValidationError, match="speed"):
        msgspec.convert(
            {"symbols": ["AAPL"], "book_path": BOOK, "speed": -1.0}, SimConfig, from_attributes=True
        )
    with pytest.raises(msgspec.ValidationError, match="unknown"):
        msgspec.convert(
            {"symbols": ["AAPL"], "book_path": BOOK, "sped": 1.0}, SimConfig, from_attributes=True
        )
