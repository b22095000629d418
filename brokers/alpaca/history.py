"""Bar history for gap fill: Alpaca's historical bars REST (``StockHistoricalDataClient``).

Alpaca's ``end`` is inclusive and the venue model's is not, so the last bar is
dropped when it opens at ``end``. Pagination is the SDK's (it follows
``next_page_token``), in the same thread as the first page.
"""

from __future__ import annotations

from datetime import datetime
from typing import cast

from brokers.alpaca import translate
from brokers.alpaca.orders import SdkThreads, in_thread
from brokers.alpaca.sdk import (
    BarSet,
    DataFeed,
    StockBarsRequest,
    StockHistoricalDataClient,
    TimeFrame,
)
from brokers.base import Bar

__all__ = ["BarHistory"]


class BarHistory:
    """Minute bars of one data feed, fetched in a thread."""

    def __init__(
        self,
        client: StockHistoricalDataClient,
        threads: SdkThreads,
        *,
        feed: DataFeed,
        timeout_s: float = 30.0,
    ) -> None:
        self._client = client
        self._threads = threads
        self._feed = feed
        self._timeout_s = timeout_s

    async def bars(self, symbol: str, start: datetime, end: datetime) -> list[Bar]:
        """Return the minute bars of ``symbol`` that open in ``[start, end)``, oldest first.

        Raises ``BrokerUnavailable`` when the data API cannot be reached and
        ``BrokerError`` when it refuses.
        """
        request = StockBarsRequest(
            symbol_or_symbols=symbol,
            timeframe=TimeFrame.Minute,
            start=start,
            end=end,
            feed=self._feed,
        )
        raw = await in_thread(
            f"bars {symbol}",
            lambda: self._client.get_stock_bars(request),
            threads=self._threads,
            timeout_s=self._timeout_s,
        )
        bars = [translate.bar(b) for b in cast(BarSet, raw).data.get(symbol, [])]
        return [b for b in bars if start <= b.ts < end]
