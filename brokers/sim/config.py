"""Configuration of the embedded sim venue."""

from __future__ import annotations

import math
from datetime import date
from pathlib import Path

import msgspec

__all__ = ["SimConfig"]


class SimConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """How the sim venue behaves; the book file, once created, wins for seed and bar size.

    ``speed`` is market seconds per real second; ``start_day`` is the trading day
    whose regular open a fresh book starts at; ``start_price`` is one base price
    or one per symbol; ``max_fill_qty`` splits larger market orders (and stops
    once a bar triggers them) into several executions; ``event_buffer`` is the
    event backlog at which the market waits for the consumer; executions and
    closed orders older than ``retain_days`` are dropped from the book.
    """

    symbols: list[str]
    book_path: Path
    seed: int = 7
    speed: float = 60.0
    bar_seconds: int = 60
    start_price: float | dict[str, float] = 100.0
    latency_ms: float = 0.0
    max_fill_qty: float | None = None
    account_id: str = "SIM-PAPER"
    start_day: date = date(2026, 1, 5)
    retain_days: int = 30
    event_buffer: int = 1024

    def __post_init__(self) -> None:
        if not self.symbols:
            raise ValueError("symbols: at least one symbol is required")
        if len(set(self.symbols)) != len(self.symbols) or not all(self.symbols):
            raise ValueError(f"symbols: must be distinct and non-empty, got {self.symbols!r}")
        if not (math.isfinite(self.speed) and self.speed > 0):
            raise ValueError(f"speed: must be > 0, got {self.speed!r}")
        if self.bar_seconds <= 0:
            raise ValueError(f"bar_seconds: must be > 0, got {self.bar_seconds!r}")
        prices = self.start_price if isinstance(self.start_price, dict) else {"*": self.start_price}
        for symbol, price in prices.items():
            if not (math.isfinite(price) and price > 0):
                raise ValueError(f"start_price[{symbol}]: must be > 0, got {price!r}")
        if isinstance(self.start_price, dict) and (missing := set(self.symbols) - set(prices)):
            raise ValueError(f"start_price: no price for {sorted(missing)}")
        if not (math.isfinite(self.latency_ms) and self.latency_ms >= 0):
            raise ValueError(f"latency_ms: must be >= 0, got {self.latency_ms!r}")
        if self.max_fill_qty is not None and not (
            math.isfinite(self.max_fill_qty) and self.max_fill_qty > 0
        ):
            raise ValueError(f"max_fill_qty: must be > 0, got {self.max_fill_qty!r}")
        if not self.account_id:
            raise ValueError("account_id: must not be empty")
        if self.retain_days < 1:
            raise ValueError(f"retain_days: must be >= 1, got {self.retain_days!r}")
        if self.event_buffer < 1:
            raise ValueError(f"event_buffer: must be >= 1, got {self.event_buffer!r}")

    def base_price(self, symbol: str) -> float:
        """Return the price ``symbol`` starts at in a fresh book."""
        if isinstance(self.start_price, dict):
            return self.start_price[symbol]
        return self.start_price
