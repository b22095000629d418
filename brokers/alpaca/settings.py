"""Settings of the Alpaca adapter and its credentials (from the environment only)."""

from __future__ import annotations

from collections.abc import Mapping

import msgspec

from brokers.base import BrokerError

__all__ = ["AlpacaSettings", "Credentials", "MissingCredentials"]

KEY_ENV, SECRET_ENV = "APCA_API_KEY_ID", "APCA_API_SECRET_KEY"


class MissingCredentials(BrokerError):
    """The Alpaca keys are not in the environment."""


class Credentials:
    """An Alpaca key pair; its repr never shows them."""

    __slots__ = ("key", "secret")

    def __init__(self, key: str, secret: str) -> None:
        self.key = key
        self.secret = secret

    def __repr__(self) -> str:
        return "Credentials(***)"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Credentials:
        """Read the keys; raise ``MissingCredentials`` naming the variables that are unset."""
        missing = [name for name in (KEY_ENV, SECRET_ENV) if not environ.get(name)]
        if missing:
            raise MissingCredentials(f"set {' and '.join(missing)} in the environment")
        return cls(environ[KEY_ENV], environ[SECRET_ENV])


class AlpacaSettings(msgspec.Struct, frozen=True, kw_only=True):
    """Where the adapter connects and how it reconnects.

    With ``url_override`` (e.g. the local exchange at ``http://127.0.0.1:8765``)
    and no other override, the streams and the data API are on that host too:
    ``ws://host/stream``, ``ws://host/v2/iex`` and ``http://host`` for history.
    ``account`` pins the account: the store is named after it and a broker
    reporting another account number is refused.
    """

    paper: bool = True
    url_override: str | None = None
    stream_url_override: str | None = None
    data_url_override: str | None = None
    data_stream_url_override: str | None = None
    feed: str = "iex"
    account: str | None = None
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    backfill_margin_s: float = 900.0
    connect_timeout_s: float = 10.0
    rest_timeout_s: float = 15.0
    sdk_threads: int = 4  # the adapter's own pool for SDK calls (see orders.SdkThreads)

    def stream_url(self) -> str | None:
        if self.stream_url_override or not self.url_override:
            return self.stream_url_override
        return _ws(self.url_override) + "/stream"

    def data_stream_url(self) -> str | None:
        if self.data_stream_url_override or not self.url_override:
            return self.data_stream_url_override
        return _ws(self.url_override) + "/v2/" + self.feed

    def data_url(self) -> str | None:
        return self.data_url_override or self.url_override


def _ws(url: str) -> str:
    return "ws" + url.removeprefix("http").rstrip("/")
