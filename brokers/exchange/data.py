"""Market data: the bars websocket (``/v2/iex``, msgpack) and bar history (``/v2/stocks/bars``).

The stream speaks what alpaca-py's ``StockDataStream`` expects: every frame is
a msgpack list; ``connected`` on accept, ``authenticated`` after ``auth``, a
``subscription`` echo after ``subscribe``, then one ``b`` frame per printed
bar of a subscribed symbol, its ``t`` a msgpack Timestamp. The stream's bars are
the book's: minute bars, or shorter ones (``stalwart exchange --bar-seconds 5``)
on the same ``b`` messages. History pages by an offset token over a list that is
a pure function of the book's price history.

History serves Alpaca's ``1Min`` timeframe only. alpaca-py's ``TimeFrame`` has no
unit below the minute (``TimeFrameUnit`` is Min, Hour, Day, Week, Month) and
Alpaca's bars API has no second bars, so a seconds timeframe is refused with a
422 that says so; an exchange printing shorter bars answers ``1Min`` with whole
minutes merged from them (a minute is served once all its bars are printed).
"""

from __future__ import annotations

import itertools
import logging
import re
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import WSMsgType, web

from brokers.base import Bar, BrokerEvent
from brokers.exchange import wire
from brokers.exchange.gate import Gate
from brokers.exchange.streams import Outbox, open_socket
from brokers.exchange.trading import bad_request, parse_time
from brokers.exchange.venue import ExchangeVenue

__all__ = ["DataHub"]

log = logging.getLogger(__name__)

_CHANNELS = (
    "trades",
    "quotes",
    "bars",
    "updatedBars",
    "dailyBars",
    "statuses",
    "lulds",
    "corrections",
    "cancelErrors",
)
_MAX_LIMIT = 10_000
_MINUTE_TIMEFRAMES = ("1Min", "1T")
_SECONDS_TIMEFRAME = re.compile(r"\d+\s*(s|sec|secs|second|seconds)", re.IGNORECASE)


class _Subscriber:
    def __init__(self) -> None:
        self.outbox = Outbox()
        self.bars: set[str] = set()


class DataHub:
    """``/v2/iex``: one connection per client, bars of the symbols it subscribed."""

    def __init__(self, venue: ExchangeVenue, gate: Gate) -> None:
        self._venue = venue
        self._gate = gate
        self._subscribers: set[_Subscriber] = set()
        venue.add_listener(self.on_events)

    def on_events(self, events: list[BrokerEvent], replaced: frozenset[str]) -> None:
        """Venue listener: send each printed bar to the clients subscribed to its symbol."""
        for event in events:
            if not isinstance(event, Bar):
                continue
            frame: bytes | None = None
            for subscriber in self._subscribers:
                if event.symbol in subscriber.bars or "*" in subscriber.bars:
                    frame = frame or wire.pack([wire.bar_stream_json(event)])
                    subscriber.outbox.put(frame)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        subscriber = _Subscriber()
        async with open_socket(request, self._gate, subscriber.outbox) as socket:
            await socket.send_bytes(wire.pack([{"T": "success", "msg": "connected"}]))
            try:
                msg = await socket.receive(timeout=10.0)
            except TimeoutError:
                return socket
            body = wire.unpack(msg.data) if msg.type is WSMsgType.BINARY else None
            if not (
                isinstance(body, dict)
                and body.get("action") == "auth"
                and self._gate.authorized(body.get("key"), body.get("secret"))
            ):
                log.warning("data stream: authentication refused")
                await socket.send_bytes(
                    wire.pack([{"T": "error", "code": 402, "msg": "auth failed"}])
                )
                return socket
            await socket.send_bytes(wire.pack([{"T": "success", "msg": "authenticated"}]))
            self._subscribers.add(subscriber)
            try:
                async for msg in socket:
                    body = wire.unpack(msg.data) if msg.type is WSMsgType.BINARY else None
                    if isinstance(body, dict):
                        self._on_request(body, subscriber)
            finally:
                self._subscribers.discard(subscriber)
            return socket

    def _on_request(self, body: dict[str, Any], subscriber: _Subscriber) -> None:
        action = body.get("action")
        symbols = {s for s in body.get("bars") or [] if isinstance(s, str)}
        if action == "subscribe":
            subscriber.bars |= symbols
        elif action == "unsubscribe":
            subscriber.bars -= symbols
        else:
            subscriber.outbox.put(
                wire.pack([{"T": "error", "code": 400, "msg": f"invalid action {action!r}"}])
            )
            return
        echo: dict[str, Any] = {"T": "subscription", **{c: [] for c in _CHANNELS}}
        echo["bars"] = sorted(subscriber.bars)
        subscriber.outbox.put(wire.pack([echo]))

    async def history(self, request: web.Request) -> web.Response:
        """``GET /v2/stocks/bars``: the printed 1-minute bars of ``symbols`` in ``[start, end)``."""
        venue = self._venue
        params = request.query
        symbols = [s for s in params.get("symbols", "").split(",") if s]
        if not symbols:
            raise bad_request("symbols is required")
        _check_timeframe(params.get("timeframe", ""), venue.bar_seconds)
        now = venue.now()
        start = parse_time(params.get("start"), "start")
        start = start or venue.calendar.open_of(venue.calendar.trading_day(now))
        end = parse_time(params.get("end"), "end") or now
        try:
            limit = min(int(params.get("limit") or _MAX_LIMIT), _MAX_LIMIT)
            offset = int(params.get("page_token") or 0)
        except ValueError as exc:
            raise bad_request("limit and page_token must be integers") from exc
        rows: list[tuple[str, Bar]] = []
        for symbol in sorted(set(symbols)):
            rows += [(symbol, bar) for bar in await _minute_bars(venue, symbol, start, end)]
        if params.get("sort") == "desc":
            rows.sort(key=lambda row: row[1].ts, reverse=True)
        page = rows[offset : offset + limit]
        bars: dict[str, list[wire.Json]] = {}
        for symbol, bar in page:
            bars.setdefault(symbol, []).append(wire.bar_json(bar))
        more = offset + limit < len(rows)
        return web.json_response(
            {"bars": bars, "next_page_token": str(offset + limit) if more else None}
        )


def _check_timeframe(timeframe: str, bar_seconds: int) -> None:
    """Refuse (422) a history timeframe other than one minute, naming why."""
    if timeframe in _MINUTE_TIMEFRAMES:
        return
    printed = f"it prints {bar_seconds}-second bars on /v2/iex"
    if _SECONDS_TIMEFRAME.fullmatch(timeframe):
        raise bad_request(
            f"timeframe {timeframe!r}: Alpaca's bars history has no second bars (alpaca-py's "
            f"TimeFrame cannot express them); the local exchange serves 1Min bars ({printed})"
        )
    raise bad_request(f"timeframe {timeframe!r}: the local exchange serves 1Min bars ({printed})")


async def _minute_bars(
    venue: ExchangeVenue, symbol: str, start: datetime, end: datetime
) -> list[Bar]:
    """Return the complete minute bars of ``symbol`` that open in ``[start, end)``."""
    if venue.bar_seconds == 60:
        return await venue.history(symbol, start, end)
    printed = await venue.history(symbol, start, end + timedelta(seconds=60))
    return [bar for bar in _merge_bars(printed, 60, venue.bar_seconds) if bar.ts < end]


def _merge_bars(bars: list[Bar], seconds: int, bar_seconds: int) -> list[Bar]:
    """Merge ``bar_seconds`` bars (oldest first) into ``seconds`` bars; drop incomplete ones.

    Spans are aligned to the epoch: regular sessions open on whole minutes, so
    minute spans are aligned to the session too.
    """
    per_span = seconds // bar_seconds
    merged: list[Bar] = []
    for key, group in itertools.groupby(bars, key=lambda b: int(b.ts.timestamp()) // seconds):
        parts = list(group)
        if len(parts) != per_span:
            continue
        merged.append(
            Bar(
                symbol=parts[0].symbol,
                ts=datetime.fromtimestamp(key * seconds, UTC),
                open=parts[0].open,
                high=max(b.high for b in parts),
                low=min(b.low for b in parts),
                close=parts[-1].close,
                volume=sum(b.volume for b in parts),
            )
        )
    return merged
