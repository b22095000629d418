"""The Alpaca adapter: the ``Broker`` protocol on alpaca-py (REST in threads, streams as tasks).

``AlpacaBroker(settings, Credentials.from_env(os.environ))`` trades an Alpaca
account, or the local exchange when ``settings.url_override`` points at it.
"""

from brokers.alpaca.broker import AlpacaBroker
from brokers.alpaca.settings import AlpacaSettings, Credentials, MissingCredentials

__all__ = ["AlpacaBroker", "AlpacaSettings", "Credentials", "MissingCredentials"]
