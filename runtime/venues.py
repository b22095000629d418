"""Build the configured broker adapter."""

from __future__ import annotations

from pathlib import Path

from brokers.base import Broker
from runtime.clock import TradingCalendar
from runtime.config import BrokerKind, Config, ConfigError

__all__ = ["make_broker"]


def calendar_of(config: Config) -> TradingCalendar:
    c = config.calendar
    return TradingCalendar(c.timezone, c.session_start, c.regular_open, c.regular_close)


async def make_broker(config: Config, state_dir: Path, *, speed: float | None = None) -> Broker:
    """Return the (not yet connected) broker of ``config``.

    Raises ``ConfigError`` for a broker this build cannot make.
    """
    if config.broker.kind is BrokerKind.SIM:
        from brokers.sim import SimBroker, SimConfig

        s = config.broker.sim
        try:
            sim = SimConfig(
                symbols=[w.symbol for w in config.watchlist],
                book_path=state_dir / s.book_file,
                seed=s.seed,
                speed=speed if speed is not None else s.speed,
                bar_seconds=s.bar_seconds,
                start_price=s.start_price,
                latency_ms=s.latency_ms,
                max_fill_qty=s.max_fill_qty,
                start_day=s.start_day,
            )
        except ValueError as exc:
            raise ConfigError(f"$.broker.sim: {exc}") from exc
        return await SimBroker.open(sim, calendar=calendar_of(config))
    raise ConfigError(f"$.broker.kind: {config.broker.kind.value!r} is not available in this build")
