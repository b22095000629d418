"""Snapshot encoding of a position actor: msgpack, versioned, encoders made once.

A snapshot is two blobs: the state (``encode_state``), rewritten on every
change, and the bar buffer (``BarRing.to_bytes``), which the store keeps in a
row of its own (``SnapshotRow.bars``) and which is rewritten only when it
changed. ``encode_snapshot`` makes one self-contained blob of both (the layout
stores of schema 1 hold, and what tools and tests build rows from); decoding
reads either.
"""

from __future__ import annotations

import msgspec

from actors.bars import BarRing
from actors.state import SCHEMA_VERSION, PositionState

__all__ = [
    "BarsError",
    "SnapshotError",
    "decode_snapshot",
    "decode_state",
    "encode_snapshot",
    "encode_state",
]


class SnapshotError(ValueError):
    """A snapshot blob that cannot be decoded (corrupt, foreign or from a newer version)."""


class BarsError(SnapshotError):
    """The state decoded but the bar buffer stored apart did not: ``state`` can be kept."""

    def __init__(self, message: str, state: PositionState) -> None:
        super().__init__(message)
        self.state = state


class _Snapshot(msgspec.Struct, frozen=True):
    state: PositionState
    bars: bytes


class _State(msgspec.Struct, frozen=True):
    state: PositionState


class _Loaded(msgspec.Struct, frozen=True):
    """A snapshot blob as decoded: embedded bars (a view into the blob) or none."""

    state: PositionState
    bars: memoryview | None = None


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Loaded)


def encode_state(state: PositionState) -> bytes:
    """Return the state's blob, without the bar buffer (stored apart)."""
    return _encoder.encode(_State(state=state))


def encode_snapshot(state: PositionState, bars: BarRing) -> bytes:
    """Return one self-contained blob of ``state`` and ``bars``."""
    return _encoder.encode(_Snapshot(state=state, bars=bars.to_bytes()))


def _decode(blob: bytes, schema_version: int, symbol: str) -> _Loaded:
    """Decode a snapshot blob of ``symbol``; raise ``SnapshotError`` when it cannot be trusted."""
    if schema_version > SCHEMA_VERSION:
        raise SnapshotError(
            f"snapshot of {symbol} has schema {schema_version}, this build knows {SCHEMA_VERSION}"
        )
    try:
        snap = _decoder.decode(blob)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"snapshot of {symbol} cannot be decoded: {exc}") from exc
    if snap.state.symbol != symbol:
        raise SnapshotError(f"snapshot stored under {symbol} holds {snap.state.symbol}")
    return snap


def decode_state(blob: bytes, schema_version: int, symbol: str) -> PositionState:
    """Decode the state of a snapshot of ``symbol`` (its bars unread); raise ``SnapshotError``."""
    return _decode(blob, schema_version, symbol).state


def decode_snapshot(
    blob: bytes,
    schema_version: int,
    symbol: str,
    capacity: int,
    bars: bytes | None = None,
) -> tuple[PositionState, BarRing]:
    """Decode a snapshot of ``symbol``; raise ``SnapshotError`` when it cannot be trusted.

    The bar buffer is ``bars`` (stored apart) when given, else the one the blob
    embeds, else empty. A state that decodes with a ``bars`` that does not
    raises ``BarsError``, which carries the state.
    """
    snap = _decode(blob, schema_version, symbol)
    if bars is not None:
        try:
            return snap.state, BarRing.from_bytes(symbol, bars, capacity)
        except ValueError as exc:
            raise BarsError(f"bar buffer of {symbol} cannot be decoded: {exc}", snap.state) from exc
    if snap.bars is None:
        return snap.state, BarRing(symbol, capacity)
    try:
        return snap.state, BarRing.from_bytes(symbol, snap.bars, capacity)
    except ValueError as exc:  # inside the blob: the snapshot as a whole is not to be trusted
        raise SnapshotError(f"snapshot of {symbol} cannot be decoded: {exc}") from exc
