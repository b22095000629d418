"""Snapshot encoding of a position actor: msgpack, versioned, encoders made once."""

from __future__ import annotations

import msgspec

from actors.bars import BarRing
from actors.state import SCHEMA_VERSION, PositionState

__all__ = ["SnapshotError", "decode_snapshot", "encode_snapshot"]


class SnapshotError(ValueError):
    """A snapshot blob that cannot be decoded (corrupt, foreign or from a newer version)."""


class _Snapshot(msgspec.Struct, frozen=True):
    state: PositionState
    bars: bytes


class _Loaded(msgspec.Struct, frozen=True):
    """``_Snapshot`` as decoded: the bars a view into the blob, copied once, by the ring."""

    state: PositionState
    bars: memoryview


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(_Loaded)


def encode_snapshot(state: PositionState, bars: BarRing) -> bytes:
    return _encoder.encode(_Snapshot(state=state, bars=bars.to_bytes()))


def decode_snapshot(
    blob: bytes, schema_version: int, symbol: str, capacity: int
) -> tuple[PositionState, BarRing]:
    """Decode a snapshot of ``symbol``; raise ``SnapshotError`` when it cannot be trusted."""
    if schema_version > SCHEMA_VERSION:
        raise SnapshotError(
            f"snapshot of {symbol} has schema {schema_version}, this build knows {SCHEMA_VERSION}"
        )
    try:
        snap = _decoder.decode(blob)
        ring = BarRing.from_bytes(symbol, snap.bars, capacity)
    except (msgspec.DecodeError, ValueError) as exc:
        raise SnapshotError(f"snapshot of {symbol} cannot be decoded: {exc}") from exc
    if snap.state.symbol != symbol:
        raise SnapshotError(f"snapshot stored under {symbol} holds {snap.state.symbol}")
    return snap.state, ring
