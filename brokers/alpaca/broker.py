"""``AlpacaBroker``: the ``Broker`` protocol on alpaca-py.

Why it is built this way:

* **REST never on the loop.** Every ``TradingClient`` call runs in a thread
  with a deadline (``orders.py``).
* **Fills: stream first, REST to catch up.** Fills come from the trade-updates
  stream (``connection.TradeLink``, an owned task). Every reconnect first
  backfills the FILL activities since the last fill seen (minus a margin), then
  emits ``Connected``; ``Disconnected`` goes out when the stream is lost. A
  ledger of execution ids drops what both paths deliver, so no fill is
  reported twice by this adapter (the runtime's store dedups again).
* **Time.** On a real Alpaca account ``now()`` is the wall clock. When
  ``url_override`` points at the local exchange (it answers ``/_sim/clock``),
  ``now()`` is the exchange's market time, polled and extrapolated.
* **Secrets.** Keys come from the environment (``Credentials.from_env``), are
  handed to the SDK and never formatted into a message.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from brokers.alpaca import sdk, translate
from brokers.alpaca.clock import VenueClock
from brokers.alpaca.connection import Backoff, DataLink, EventQueue, TradeLink, cancel_and_wait
from brokers.alpaca.history import BarHistory
from brokers.alpaca.orders import SdkThreads, TradingRest, in_thread
from brokers.alpaca.settings import AlpacaSettings, Credentials
from brokers.base import (
    Bar,
    BrokerError,
    BrokerEvent,
    BrokerPosition,
    BrokerUnavailable,
    Capabilities,
    Connected,
    Disconnected,
    Execution,
    Order,
    OrderRequest,
)

__all__ = ["AlpacaBroker"]

log = logging.getLogger(__name__)

_CLOCK_POLL_S = 0.5

# websockets logs every frame at DEBUG, the authentication frame (with the secret)
# included; the SDK's sockets log to this logger, which never says less than INFO.
_SOCKET_LOG = logging.getLogger("brokers.alpaca.websocket")
_SOCKET_LOG.setLevel(logging.INFO)
_SOCKET_PARAMS = {
    "ping_interval": 10,
    "ping_timeout": 180,
    "max_queue": 1024,
    "logger": _SOCKET_LOG,
}
_LEDGER_SIZE = 20_000


class _FillLedger:
    """Execution ids already reported (bounded, oldest forgotten first) and the newest fill time."""

    def __init__(self) -> None:
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.last_ts: datetime | None = None

    def add(self, execution: Execution) -> bool:
        """Record ``execution``; return False when it was reported before."""
        if execution.exec_id in self._seen:
            return False
        self._seen[execution.exec_id] = None
        if len(self._seen) > _LEDGER_SIZE:
            self._seen.popitem(last=False)
        if self.last_ts is None or execution.ts > self.last_ts:
            self.last_ts = execution.ts
        return True


class AlpacaBroker:
    """An Alpaca account (or the local exchange speaking Alpaca) as a ``brokers.base.Broker``."""

    def __init__(
        self,
        settings: AlpacaSettings,
        credentials: Credentials,
        *,
        rng: random.Random | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        last_market_time: datetime | None = None,
    ) -> None:
        self._settings = settings
        self._credentials = credentials
        self._trading = sdk.TradingClient(
            credentials.key,
            credentials.secret,
            paper=settings.paper,
            url_override=settings.url_override,
        )
        self._threads = SdkThreads(settings.sdk_threads)
        self._rest = TradingRest(self._trading, self._threads, timeout_s=settings.rest_timeout_s)
        self._history = BarHistory(
            sdk.StockHistoricalDataClient(
                credentials.key, credentials.secret, url_override=settings.data_url()
            ),
            self._threads,
            feed=sdk.DataFeed(settings.feed),
            timeout_s=settings.rest_timeout_s * 2,
        )
        rng = rng or random.Random()
        self._trade_link = TradeLink(
            self._trade_stream,
            on_update=self._on_trade_update,
            on_up=self._on_trade_up,
            on_down=self._on_trade_down,
            backoff=Backoff(settings.reconnect_min_s, settings.reconnect_max_s, rng),
        )
        self._data_link = DataLink(
            self._data_stream,
            on_bar=self._on_bar,
            on_up=self._fill_bar_gaps,
            backoff=Backoff(settings.reconnect_min_s, settings.reconnect_max_s, rng),
        )
        self._events = EventQueue(4096)
        self._ledger = _FillLedger()
        self._venue_clock = VenueClock(monotonic)
        self._exchange_clock = False
        # Until a local exchange has told its clock (an outage at boot), the last
        # market time the previous session saw stands, frozen: the wall clock is
        # another clock there, and a trading day taken from it would stick.
        self._held_time = last_market_time if settings.url_override else None
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._started = False
        self._connected_before = False
        self._baseline: datetime | None = None
        self._last_bar: dict[str, datetime] = {}
        self._bars_lock = asyncio.Lock()
        self._closed = False
        self._account_number: str | None = None

    # --- Broker protocol: identity, time, lifecycle ----------------------------------

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities()

    @property
    def account_id(self) -> str:
        """Return the account the store is named after (``account`` setting, else per mode)."""
        if self._settings.account:
            return self._settings.account
        return "alpaca-paper" if self._settings.paper else "alpaca-live"

    @property
    def venue_account(self) -> str | None:
        """Return Alpaca's account number the keys trade, once connected."""
        return self._account_number

    def now(self) -> datetime:
        """Return the wall clock, or the local exchange's market time when trading on it."""
        if self._exchange_clock:
            ts = self._venue_clock.now()
            if ts is not None:
                return ts
        if not self._started and self._held_time is not None:
            return self._held_time
        return datetime.now(UTC)

    async def connect(self) -> None:
        """Check the account, start the streams (once), wait until the trade stream is up.

        Raises ``BrokerUnavailable`` when Alpaca cannot be reached or the stream is
        not up within ``connect_timeout_s`` (it keeps trying in the background) and
        ``BrokerError`` for refused credentials or another account.
        """
        if self._closed:
            raise BrokerError("the Alpaca adapter is closed")
        account = await self._rest.account()
        pinned = self._settings.account
        if pinned and account.account_number != pinned:
            raise BrokerError(
                f"the keys trade account {account.account_number}, configured is {pinned}"
            )
        if self._account_number not in (None, account.account_number):
            raise BrokerError(
                f"the keys trade account {account.account_number}, this session "
                f"began with {self._account_number}"
            )
        self._account_number = account.account_number
        if not self._started:
            exchange_clock = await self._detect_exchange_clock()
            if not self._started:  # a concurrent connect may have started while we awaited
                self._start(account.account_number, exchange_clock)
        try:
            await asyncio.wait_for(self._trade_link.up.wait(), self._settings.connect_timeout_s)
        except TimeoutError as exc:
            raise BrokerUnavailable("the trade-updates stream is not up (still trying)") from exc

    def _start(self, account_number: str, exchange_clock: bool) -> None:
        self._started = True
        self._exchange_clock = exchange_clock
        self._baseline = self.now()
        log.info(
            "alpaca account %s (%s), market time from %s",
            account_number,
            "paper" if self._settings.paper else "LIVE",
            "the local exchange" if exchange_clock else "the wall clock",
        )
        self._own("alpaca-trade-stream", self._trade_link.run())
        if exchange_clock:
            self._own("alpaca-exchange-clock", self._poll_exchange_clock())

    async def close(self) -> None:
        """Stop the streams and end ``events()``."""
        self._closed = True
        tasks = list(self._tasks.values())
        self._tasks.clear()
        await asyncio.gather(*(cancel_and_wait(t) for t in tasks))
        self._threads.close()
        self._events.close()

    async def events(self) -> AsyncGenerator[BrokerEvent, None]:
        """Yield fills, order updates, bars and connection changes until ``close()``.

        Re-raises the failure of a stream task (a bug: the links never end by themselves).
        """
        while (event := await self._events.get()) is not None:
            yield event

    # --- Broker protocol: requests --------------------------------------------------

    async def subscribe(self, symbols: list[str]) -> None:
        if "alpaca-data-stream" not in self._tasks and not self._closed:
            self._own("alpaca-data-stream", self._data_link.run())
        await self._data_link.subscribe(symbols)

    async def positions(self) -> list[BrokerPosition]:
        return sorted(await self._rest.positions(), key=lambda p: p.symbol)

    async def open_orders(self) -> list[Order]:
        return await self._rest.open_orders()

    async def executions(self, since: datetime) -> list[Execution]:
        return await self._rest.executions(since)

    async def submit(self, request: OrderRequest) -> Order:
        """Send an order; raise ``DuplicateClientOrderId`` when Alpaca knows its client order id."""
        return await self._rest.submit(request)

    async def order_by_client_id(self, client_order_id: str) -> Order | None:
        return await self._rest.order_by_client_id(client_order_id)

    async def cancel(self, order_id: str) -> None:
        await self._rest.cancel(order_id)

    async def replace(self, order_id: str, *, stop_price: float, qty: float | None = None) -> Order:
        """Move a resting stop; return the order now resting (Alpaca may give it a new id)."""
        return await self._rest.replace(order_id, stop_price=stop_price, qty=qty)

    async def history(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        """Return ``symbol``'s bars in [start, end] for the trader's own gap fill.

        The trader hands these to its actor itself, so the newest one marks the
        symbol's last bar: a bar printed after it but before the data stream was
        up (the boot refill runs first) is filled when the stream comes up.
        """
        bars = await self._history.bars(symbol, start, end)
        if bars:
            last = self._last_bar.get(symbol)
            if last is None or bars[-1].ts > last:
                self._last_bar[symbol] = bars[-1].ts
        return bars

    # --- streams ------------------------------------------------------------------------

    def _trade_stream(self) -> sdk.TradingStream:
        return sdk.TradingStream(
            self._credentials.key,
            self._credentials.secret,
            paper=self._settings.paper,
            raw_data=True,
            url_override=cast(str, self._settings.stream_url()),  # SDK: None is its default
            websocket_params=dict(_SOCKET_PARAMS),
        )

    def _data_stream(self) -> sdk.StockDataStream:
        return sdk.StockDataStream(
            self._credentials.key,
            self._credentials.secret,
            raw_data=True,
            feed=sdk.DataFeed(self._settings.feed),
            url_override=self._settings.data_stream_url(),
            websocket_params=dict(_SOCKET_PARAMS),
        )

    async def _on_trade_up(self) -> bool:
        """Backfill fills missed while down (not on the first connection), then say Connected."""
        if self._connected_before:
            start = self._ledger.last_ts or self._baseline or self.now()
            since = start - timedelta(seconds=self._settings.backfill_margin_s)
            try:
                fills = await self._rest.executions(since)
            except BrokerError as exc:
                log.warning("backfill of fills since %s failed: %s", since.isoformat(), exc)
                return False
            fresh = [f for f in fills if self._ledger.add(f)]
            for execution in fresh:
                await self._events.put(execution)
            log.info("backfilled %d missed fill(s) since %s", len(fresh), since.isoformat())
        await self._events.put(Connected(data_lost=self._connected_before))
        self._connected_before = True
        return True

    async def _on_trade_down(self, reason: str) -> None:
        await self._events.put(Disconnected(reason=f"trade-updates stream lost: {reason}"))

    async def _on_trade_update(self, raw: object) -> None:
        data = raw.get("data") if isinstance(raw, dict) else None
        if not isinstance(data, dict):
            log.warning("trade stream: frame without data ignored")
            return
        for event in translate.trade_update_events(sdk.TradeUpdate(**data)):
            if isinstance(event, Execution) and not self._ledger.add(event):
                continue
            await self._events.put(event)

    async def _on_bar(self, raw: object) -> None:
        if not isinstance(raw, dict) or raw.get("T") != "b":
            return
        fields: dict[str, Any] = dict(raw)
        stamp: Any = fields.get("t")
        if stamp is not None and hasattr(stamp, "to_datetime"):  # a msgpack Timestamp
            fields["t"] = stamp.to_datetime()
        bar = translate.bar(sdk.AlpacaBar(str(fields["S"]), fields))
        async with self._bars_lock:
            await self._emit_bar(bar)

    async def _emit_bar(self, bar: Bar) -> None:
        last = self._last_bar.get(bar.symbol)
        if last is not None and bar.ts <= last:
            return
        self._last_bar[bar.symbol] = bar.ts
        await self._events.put(bar)

    async def _fill_bar_gaps(self) -> None:
        """After a data reconnect: the bars printed while down, from history, before live ones."""
        async with self._bars_lock:
            now = self.now()
            for symbol, last in sorted(self._last_bar.items()):
                try:
                    bars = await self._history.bars(symbol, last + timedelta(seconds=1), now)
                except BrokerError as exc:
                    log.warning("bar gap of %s since %s not filled: %s", symbol, last, exc)
                    continue
                for bar in bars:
                    await self._emit_bar(bar)
                if bars:
                    log.info("filled a gap of %d bar(s) of %s", len(bars), symbol)

    # --- the local exchange's clock ------------------------------------------------------

    async def _read_exchange_clock(self) -> None:
        raw = await in_thread(
            "exchange clock",
            lambda: self._trading.get("/clock", api_version="_sim"),
            threads=self._threads,
            timeout_s=self._settings.rest_timeout_s,
        )
        body = cast(dict[str, Any], raw)
        self._venue_clock.update(
            datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")),
            speed=float(body["speed"]),
            running=bool(body["running"]),
            close=datetime.fromisoformat(body["next_close"].replace("Z", "+00:00")),
        )

    async def _detect_exchange_clock(self) -> bool:
        """Return whether ``url_override`` is the local exchange (it tells its market clock).

        Raises ``BrokerUnavailable`` when that cannot be told now (retry the connect).
        """
        if not self._settings.url_override:
            return False
        try:
            await self._read_exchange_clock()
        except BrokerUnavailable:
            raise
        except (BrokerError, KeyError, TypeError, ValueError) as exc:
            log.info("%s has no exchange clock (%s): wall clock", self._settings.url_override, exc)
            return False
        return True

    async def _poll_exchange_clock(self) -> None:
        while True:
            await asyncio.sleep(_CLOCK_POLL_S)
            with contextlib.suppress(BrokerError):
                await self._read_exchange_clock()

    # --- task ownership ----------------------------------------------------------------------

    def _own(self, name: str, work: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(work, name=name)
        self._tasks[name] = task
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or self._closed:
            return
        error = task.exception() or BrokerError(f"{task.get_name()} stopped")
        log.critical("%s failed: %r", task.get_name(), error, exc_info=error)
        self._events.fail(error)
