"""Settings of the exchange process and the ``stalwart exchange`` options (no aiohttp here).

Kept apart from the server so that the command line can offer the options
without importing the server stack for every other command.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import msgspec

from brokers.sim.config import SimConfig

__all__ = ["ExchangeSettings", "add_arguments", "settings_from_args"]

_DEFAULT_SYMBOLS = "AAPL,MSFT,NVDA,AMD,TSLA"


class ExchangeSettings(msgspec.Struct, frozen=True, kw_only=True):
    """How one exchange process runs; ``key``/``secret`` are the only accepted credentials.

    ``bar_seconds`` is the length of the bars a fresh book prints (a divisor of 60,
    so that history can always answer Alpaca's 1Min bars); a book, once created,
    keeps its own.
    """

    key: str
    secret: str
    state: Path
    host: str = "127.0.0.1"
    port: int = 8765
    seed: int = 7
    speed: float = 60.0
    bar_seconds: int = 60
    symbols: list[str] = msgspec.field(default_factory=lambda: _DEFAULT_SYMBOLS.split(","))
    start_price: float = 100.0
    start_cash: float = 100_000.0
    latency_ms: float = 0.0
    account_id: str = "SIM-PAPER"
    max_fill_qty: float | None = None  # orders and triggered stops fill in parts of this many

    def venue_config(self) -> SimConfig:
        """Return the sim venue configuration of the exchange's book (raises ``ValueError``)."""
        if self.bar_seconds <= 0 or 60 % self.bar_seconds:
            raise ValueError(
                f"bar_seconds: must divide 60 (60, 30, ..., 5, 1), got {self.bar_seconds}"
            )
        return SimConfig(
            symbols=self.symbols,
            book_path=self.state,
            seed=self.seed,
            speed=self.speed,
            bar_seconds=self.bar_seconds,
            start_price=self.start_price,
            latency_ms=self.latency_ms,
            account_id=self.account_id,
            max_fill_qty=self.max_fill_qty,
            retain_days=3650,  # the account's cash is computed from every execution it keeps
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``stalwart exchange`` options to ``parser``."""
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    parser.add_argument("--alpaca-port", type=int, default=8765, help="port (0: pick a free one)")
    parser.add_argument("--state", type=Path, default=Path("exchange.book"), help="book file")
    parser.add_argument("--seed", type=int, default=7, help="seed of a fresh book's bars")
    parser.add_argument("--speed", type=float, default=60.0, help="market s per real s")
    parser.add_argument(
        "--bar-seconds",
        type=int,
        default=60,
        help="bar length of a fresh book in s, a divisor of 60 (60: minute bars, 5: 5-second)",
    )
    parser.add_argument("--symbols", default=_DEFAULT_SYMBOLS, help="listed symbols A,B,...")
    parser.add_argument(
        "--max-fill-qty",
        type=float,
        default=None,
        help="fill market orders and triggered stops in parts of at most this many shares, "
        "one more part each bar (default: whole)",
    )
    parser.add_argument("--key", help="API key id (default: $APCA_API_KEY_ID)")
    parser.add_argument("--secret", help="API secret (default: $APCA_API_SECRET_KEY)")
    parser.add_argument("--log-format", choices=("text", "json"), default="text")


def settings_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> ExchangeSettings:
    """Return the settings of ``args``; raise ``ValueError`` naming what is missing or bad."""
    key = args.key or environ.get("APCA_API_KEY_ID")
    secret = args.secret or environ.get("APCA_API_SECRET_KEY")
    if not key or not secret:
        raise ValueError("credentials: give --key and --secret or set APCA_API_KEY_ID/SECRET_KEY")
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    settings = ExchangeSettings(
        key=key,
        secret=secret,
        state=args.state,
        host=args.host,
        port=args.alpaca_port,
        seed=args.seed,
        speed=args.speed,
        bar_seconds=args.bar_seconds,
        symbols=symbols,
        max_fill_qty=args.max_fill_qty,
    )
    settings.venue_config()
    return settings
