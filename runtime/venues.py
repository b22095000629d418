"""Build the configured broker adapter."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from brokers.base import Broker
from runtime.clock import TradingCalendar
from runtime.config import BrokerKind, Config, ConfigError
from runtime.runstate import read_run_state

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
    if config.broker.kind is BrokerKind.ALPACA:
        run = read_run_state(state_dir)
        return _alpaca(config, None if run is None else run.market_time)
    raise ConfigError(f"$.broker.kind: {config.broker.kind.value!r} is not available in this build")


def _alpaca(config: Config, last_market_time: datetime | None) -> Broker:
    """Return the Alpaca adapter; keys come from the environment only.

    Raises ``ConfigError`` when a key is missing (nothing is started).
    """
    from brokers.alpaca import AlpacaBroker, AlpacaSettings, Credentials, MissingCredentials

    a = config.broker.alpaca
    try:
        credentials = Credentials.from_env(os.environ)
    except MissingCredentials as exc:
        raise ConfigError(f"$.broker.alpaca: no Alpaca keys: {exc}") from exc
    settings = AlpacaSettings(
        paper=a.paper,
        url_override=a.url_override,
        stream_url_override=a.stream_url_override,
        data_url_override=a.data_url_override,
        data_stream_url_override=a.data_stream_url_override,
        feed=a.feed,
        account=a.account,
        reconnect_min_s=a.reconnect_min_s,
        reconnect_max_s=a.reconnect_max_s,
    )
    return AlpacaBroker(settings, credentials, last_market_time=last_market_time)
