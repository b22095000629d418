"""``rest_loop_lag`` at its quick size: it runs against a real exchange and reports its shape.

The real adapter (alpaca-py in threads, on uvloop) against ``stalwart exchange``
on a free loopback port; what the exchange saw is read from the book it leaves
behind. Timings are not asserted: this machine is shared.
"""

from __future__ import annotations

import math
from pathlib import Path

from bench import rest_lag
from bench._core import Settings
from brokers.base import OrderStatus, OrderType
from brokers.sim.book import read_book


def test_quick_run_measures_the_stall_of_a_real_batch(tmp_path: Path) -> None:
    settings = Settings(quick=True, workdir=tmp_path)
    batch = rest_lag.batch_of(settings)

    result, shared = rest_lag.run(settings)
    book = read_book(rest_lag.exchange_book(tmp_path))

    assert (result.name, result.unit, result.target) == ("rest_loop_lag", "ms", "<= 5 ms")
    assert shared.name == "rest_loop_lag_shared_cores"
    assert shared.met
    assert shared.target.startswith("none (reported")
    assert shared.runs == 2
    assert 0 < shared.min <= shared.value <= shared.max
    assert result.runs == 2
    assert math.isfinite(result.value)
    assert 0 < result.min <= result.value <= result.max
    assert result.baseline_value is not None
    assert result.baseline_value > 0
    assert result.ratio is not None
    assert result.ratio > 0
    assert result.met is (result.value <= 5.0)
    assert f"{batch.calls} REST calls" in result.metric
    assert book is not None
    batches = 2 * (result.runs + 1)  # each measurement: one untimed warm-up batch, then runs
    stops = [o for o in book.orders.values() if o.type is OrderType.STOP]
    entries = [o for o in book.orders.values() if o.type is OrderType.MARKET]
    assert len(stops) == batches * batch.rounds * batch.stops
    assert {o.status for o in stops} == {OrderStatus.CANCELED}
    assert len(entries) == batches * batch.entries
    assert {o.status for o in entries} == {OrderStatus.FILLED}
    assert {s: p.qty for s, p in book.positions.items()} == {
        o.symbol: float(batches) for o in entries
    }
