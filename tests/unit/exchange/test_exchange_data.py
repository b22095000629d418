"""An exchange printing 5-second bars (``--bar-seconds 5``), read with the real alpaca-py clients.

The data stream carries the 5-second bars on its usual ``b`` messages; history
answers Alpaca's 1Min timeframe with whole minutes merged from them and refuses
a seconds timeframe (alpaca-py's ``TimeFrame`` cannot express one).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Coroutine, Iterator
from datetime import datetime, timedelta
from typing import Any, cast
from urllib.parse import urlencode

import pytest

from brokers.alpaca.connection import cancel_and_wait
from brokers.alpaca.sdk import (
    AlpacaBar,
    BarSet,
    DataFeed,
    StockBarsRequest,
    StockDataStream,
    StockHistoricalDataClient,
    TimeFrame,
)
from tests.unit.exchange.exchange_kit import KEY, SECRET, Exchange, running_exchange

FIVE = timedelta(seconds=5)
MINUTE = timedelta(minutes=1)


@pytest.fixture(scope="module")
def exchange(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Exchange]:
    state = tmp_path_factory.mktemp("exchange") / "exchange.book"
    with running_exchange(state, speed=60.0, bar_seconds=5) as running:
        yield running


async def _stream_bars(
    exchange: Exchange, enough: Callable[[list[AlpacaBar]], bool]
) -> list[AlpacaBar]:
    """Read AAPL bars from the data stream until ``enough`` of them arrived."""
    bars: list[AlpacaBar] = []
    done = asyncio.Event()
    stream = StockDataStream(KEY, SECRET, feed=DataFeed.IEX, url_override=exchange.data_url)

    async def on_bar(bar: AlpacaBar | dict[Any, Any]) -> None:
        assert isinstance(bar, AlpacaBar)  # raw_data is off: the SDK builds its model
        bars.append(bar)
        if enough(bars):
            done.set()

    stream.subscribe_bars(on_bar, "AAPL")
    run: Callable[[], Coroutine[Any, Any, None]] = stream._run_forever
    runner = asyncio.create_task(run())
    try:
        await asyncio.wait_for(done.wait(), 20)
    finally:
        await cancel_and_wait(runner)
        await stream.close()
    return bars


def _full_minute(bars: list[AlpacaBar]) -> list[AlpacaBar]:
    """Return the 12 streamed bars of the first minute seen whole, or [] if none is yet."""
    for _, group in itertools.groupby(bars, key=lambda b: b.timestamp.replace(second=0)):
        parts = list(group)
        if len(parts) == 12 and parts[0].timestamp.second == 0:
            return parts
    return []


def test_the_exchange_tells_its_bar_length(exchange: Exchange) -> None:
    assert exchange.control("GET", "clock")["bar_seconds"] == 5


async def test_data_stream_carries_5_second_bars_and_history_merges_them_into_minutes(
    exchange: Exchange,
) -> None:
    streamed = await _stream_bars(exchange, lambda bars: bool(_full_minute(bars)))
    minute = _full_minute(streamed)
    history = StockHistoricalDataClient(KEY, SECRET, url_override=exchange.rest_url)

    barset = cast(
        BarSet,
        await asyncio.to_thread(
            history.get_stock_bars,
            StockBarsRequest(
                symbol_or_symbols="AAPL",
                timeframe=TimeFrame.Minute,
                start=minute[0].timestamp - 5 * MINUTE,
                end=minute[0].timestamp + MINUTE,
            ),
        ),
    )

    steps = {b2.timestamp - b.timestamp for b, b2 in itertools.pairwise(streamed)}
    assert steps == {FIVE}
    assert all(b.symbol == "AAPL" and b.low <= b.open <= b.high for b in streamed)
    merged = barset.data["AAPL"]
    assert {b2.timestamp - b.timestamp for b, b2 in itertools.pairwise(merged)} <= {MINUTE}
    assert all(b.timestamp.second == 0 for b in merged)
    (same,) = [b for b in merged if b.timestamp == minute[0].timestamp]
    assert (same.open, same.close) == (minute[0].open, minute[-1].close)
    assert (same.high, same.low) == (max(b.high for b in minute), min(b.low for b in minute))
    assert same.volume == pytest.approx(sum(b.volume for b in minute))


@pytest.mark.parametrize("timeframe", ["5Sec", "5S", "5Min"])
def test_history_refuses_timeframes_other_than_one_minute(
    exchange: Exchange, timeframe: str
) -> None:
    status, answer = exchange.request("GET", f"/v2/stocks/bars?symbols=AAPL&timeframe={timeframe}")

    assert status == 422
    assert "serves 1Min bars (it prints 5-second bars on /v2/iex)" in answer["message"]
    if timeframe != "5Min":
        assert "alpaca-py's TimeFrame cannot express them" in answer["message"]


def test_history_omits_the_minute_still_printing(exchange: Exchange) -> None:
    exchange.control("POST", "market", {"running": False})
    try:
        stamp: str = exchange.control("GET", "clock")["timestamp"]
        now = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
        query = {
            "symbols": "AAPL",
            "timeframe": "1Min",
            "start": (now - 10 * MINUTE).isoformat(),
            "end": (now + MINUTE).isoformat(),
        }

        status, answer = exchange.request("GET", f"/v2/stocks/bars?{urlencode(query)}")
    finally:
        exchange.control("POST", "market", {"running": True})

    assert status == 200
    opens = [datetime.fromisoformat(b["t"].replace("Z", "+00:00")) for b in answer["bars"]["AAPL"]]
    assert opens
    assert opens[-1] + MINUTE <= now  # the minute containing ``now`` is not whole yet
    assert now - opens[-1] < 2 * MINUTE + FIVE  # (its last bar may be printing as we freeze)
