"""The simulated venue: a deterministic matching engine and its asyncio shell.

``SimBroker`` implements ``brokers.base.Broker`` over a book kept in its own
file; ``SimConfig`` configures it. The engine and bar generator are pure and
re-exported for the local exchange servers and for tests.
"""

from brokers.sim.bars import BarGenerator
from brokers.sim.book import BookError, read_book
from brokers.sim.config import SimConfig
from brokers.sim.engine import Book
from brokers.sim.market import MarketClock
from brokers.sim.venue import SimBroker

__all__ = [
    "BarGenerator",
    "Book",
    "BookError",
    "MarketClock",
    "SimBroker",
    "SimConfig",
    "read_book",
]
