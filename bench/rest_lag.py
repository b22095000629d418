"""Loop lag under REST: the longest stall while the Alpaca adapter makes REST calls.

Not measurable yet: ``brokers/alpaca.py`` does not exist. The slot is kept in
the results (``runs == 0``, the reason in ``target``) so that it shows up as
not met until the adapter lands; then this module measures the lateness of a
1 ms periodic sleep (``bench._core.LagMonitor``) while the adapter calls the
local exchange's Alpaca REST API through ``asyncio.to_thread``.
"""

from __future__ import annotations

import importlib.util

from bench._core import Result, Settings, not_run

__all__ = ["run"]

NAME = "rest_loop_lag"


def run(settings: Settings) -> list[Result]:
    metric = "longest event-loop stall while the Alpaca adapter makes REST calls"
    if importlib.util.find_spec("brokers.alpaca") is None:
        why = "the Alpaca adapter (brokers/alpaca) does not exist yet"
    else:
        why = "the Alpaca adapter (brokers/alpaca) is not finished; measured once it lands"
    return [
        not_run(
            name=NAME,
            metric=metric,
            unit="ms",
            baseline="-",
            target="<= 5 ms",
            why=why,
        )
    ]
