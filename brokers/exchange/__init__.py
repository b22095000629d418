"""The local exchange: the sim engine served over the wire APIs the real SDKs speak.

``stalwart exchange`` runs ``serve(settings)``: Alpaca's trading REST under
``/v2``, the trade-updates stream at ``/stream``, market data at ``/v2/iex`` and
``/v2/stocks/bars``, and test/chaos controls under ``/_sim/``, on one port.
The server stack is imported only when ``serve`` runs.
"""

from __future__ import annotations

import sys
from typing import TextIO

from brokers.exchange.settings import ExchangeSettings, add_arguments, settings_from_args

__all__ = ["ExchangeSettings", "add_arguments", "serve", "settings_from_args"]


async def serve(settings: ExchangeSettings, *, out: TextIO = sys.stdout) -> int:
    """Run the exchange until SIGTERM/SIGINT; return the exit code (1 when the market failed)."""
    from brokers.exchange.app import serve as run

    return await run(settings, out=out)
