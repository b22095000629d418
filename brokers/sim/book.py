"""The venue's book on disk: one msgpack file, replaced atomically on every save.

The file is a fixed header (magic + format version) followed by the msgpack
encoding of ``Book``. A save writes a temporary file in the same directory,
fsyncs it, renames it over the book and fsyncs the directory, so a crash leaves
either the old or the new book, never a torn one. These functions block; the
venue calls them through ``asyncio.to_thread``.

One process at a time: nothing here locks the file, so two venues writing the
same book would lose each other's changes. Whoever opens a second ``SimBroker``
on a book (a test's "restart") must stop writing through the first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import struct
import tempfile
from pathlib import Path

import msgspec

from brokers.sim.engine import Book

__all__ = ["BOOK_VERSION", "BookError", "decode_book", "encode_book", "read_book", "write_book"]

log = logging.getLogger(__name__)

_MAGIC = b"STALWART-SIM-BOOK\n"
_VERSION = struct.Struct(">H")
BOOK_VERSION = 1

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Book)


class BookError(Exception):
    """The venue's book file cannot be used (corrupt, foreign or from another version)."""


def encode_book(book: Book) -> bytes:
    """Return the file image of ``book``."""
    return _MAGIC + _VERSION.pack(BOOK_VERSION) + _encoder.encode(book)


def decode_book(data: bytes, source: str = "book") -> Book:
    """Decode a file image; raise ``BookError`` naming ``source`` when it is not a valid book."""
    header = len(_MAGIC) + _VERSION.size
    if not data.startswith(_MAGIC) or len(data) < header:
        raise BookError(f"{source}: not a stalwart sim venue book (unknown header)")
    (version,) = _VERSION.unpack_from(data, len(_MAGIC))
    if version != BOOK_VERSION:
        raise BookError(
            f"{source}: sim venue book format {version} is not supported "
            f"(this build reads format {BOOK_VERSION})"
        )
    try:
        return _decoder.decode(data[header:])
    except msgspec.DecodeError as exc:
        raise BookError(f"{source}: corrupt sim venue book: {exc}") from exc


def read_book(path: Path) -> Book | None:
    """Load the book at ``path``; ``None`` when there is no file.

    Raises ``BookError`` for a file that is not a readable book.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BookError(f"{path}: cannot read the sim venue book: {exc}") from exc
    return decode_book(data, str(path))


def write_book(path: Path, data: bytes) -> None:
    """Replace the file at ``path`` with ``data`` atomically and durably."""
    directory = path.parent
    fd, tmp_name = tempfile.mkstemp(dir=directory, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as tmp:
            tmp.write(data)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    log.debug("saved sim venue book %s (%d bytes)", path, len(data))
