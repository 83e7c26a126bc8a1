"""Canonical msgpack: one byte form per value, and a strict decoder.

Invariants:
* Values are built only from ``None``, ``bool``, ``int`` (signed/unsigned 64-bit), ``str``,
  ``bytes``, ``list`` and ``dict`` with ``str`` keys. No floats, no extension types.
* :func:`encode` is deterministic: map keys sorted by their UTF-8 bytes, integers in their
  shortest form (msgpack does that already), ``bin`` for bytes, ``str`` for text.
* :func:`decode` accepts exactly what :func:`encode` produces: a non-canonical byte string
  (unsorted keys, a wider integer or length header than needed, duplicate keys, trailing
  bytes) is refused, so the hash of a payload is the hash of its one canonical form.
* :func:`decode` raises only :class:`~ledger.errors.EncodingError` or
  :class:`~ledger.errors.TooLargeError`, whatever the input.
* :func:`decode` never allocates more than a small multiple of the input: nesting is
  checked as each container opens, and a container or string whose declared length cannot
  fit in the bytes that remain is refused before anything is built (msgpack bombs, P2).
  That is why it is a small reader of its own rather than ``msgpack.Unpacker``, which
  pre-sizes every list it is told about (a 1 MiB payload of nested array headers would make
  it reserve gigabytes).
"""

from __future__ import annotations

import struct
from typing import Any

import msgpack

from ledger.errors import EncodingError, TooLargeError

MAX_RECORD_BYTES = 1 << 20
MAX_DEPTH = 32
_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 64) - 1

Value = None | bool | int | str | bytes | list["Value"] | dict[str, "Value"]


def encode(value: Any) -> bytes:
    """Encode ``value`` canonically.

    Raises:
        EncodingError: ``value`` holds a type outside the canonical subset, an integer
            outside 64 bits, a string that is not valid Unicode (lone surrogates), or
            nests deeper than :data:`MAX_DEPTH`.
    """
    packed: bytes = msgpack.packb(_canonical(value, 0), use_bin_type=True)
    return packed


def is_unicode(text: str) -> bool:
    """Whether ``text`` encodes as UTF-8: False for a lone surrogate, which is what Python
    makes of non-UTF-8 bytes (``surrogateescape``) or of a JSON ``"\\ud800"`` escape."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _utf8(text: str) -> bytes:
    try:
        return text.encode()
    except UnicodeEncodeError as e:
        raise EncodingError(f"string {text[:40]!r} is not valid Unicode ({e.reason})") from e


def _canonical(value: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise EncodingError(f"value nests deeper than {MAX_DEPTH} levels")
    if value is None or isinstance(value, bool | bytes):
        return value
    if isinstance(value, str):
        _utf8(value)
        return value
    if isinstance(value, int):
        if not _INT_MIN <= value <= _INT_MAX:
            raise EncodingError(f"integer {value} does not fit in 64 bits")
        return value
    # Plain tuples only: a tuple subclass (a namedtuple, msgpack.ExtType) would lose its
    # meaning silently as an array.
    if isinstance(value, list) or type(value) is tuple:
        return [_canonical(v, depth + 1) for v in value]
    if isinstance(value, dict):
        for k in value:
            if not isinstance(k, str):
                raise EncodingError(f"map key {k!r} is not a string")
        items = sorted(value.items(), key=lambda kv: _utf8(kv[0]))
        return {k: _canonical(v, depth + 1) for k, v in items}
    raise EncodingError(f"type {type(value).__name__} cannot be encoded canonically")


def decode(
    data: bytes | bytearray | memoryview, *, max_size: int = MAX_RECORD_BYTES, max_depth: int = MAX_DEPTH
) -> Any:
    """Decode one canonical msgpack value from ``data``, strictly.

    Args:
        data: the exact bytes received.
        max_size: refuse inputs longer than this (TooLargeError).
        max_depth: refuse values nested deeper than this (the top value is at depth 0).

    Raises:
        TooLargeError: ``data`` is over ``max_size``.
        EncodingError: anything else is wrong; the message says what.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise EncodingError(f"want bytes, got {type(data).__name__}")
    if len(data) > max_size:
        raise TooLargeError(f"encoded value has {len(data)} bytes, limit {max_size}")
    if not data:
        raise EncodingError("empty input: no msgpack value")
    buf = bytes(data)
    try:
        value, pos = _Reader(buf, max_depth).read(0, 0)
    except RecursionError as e:
        raise EncodingError(f"value nests deeper than {max_depth} levels") from e
    if pos != len(buf):
        raise EncodingError(f"{len(buf) - pos} trailing bytes after the msgpack value")
    return value


# (struct format, width, smallest value that needs this width) for each canonical int form.
_UINTS = {0xCC: (">B", 1, 0x80), 0xCD: (">H", 2, 1 << 8), 0xCE: (">I", 4, 1 << 16),
          0xCF: (">Q", 8, 1 << 32)}
# (struct format, width, largest value that needs this width); all negative.
_SINTS = {0xD0: (">b", 1, -33), 0xD1: (">h", 2, -(1 << 7) - 1), 0xD2: (">i", 4, -(1 << 15) - 1),
          0xD3: (">q", 8, -(1 << 31) - 1)}
# length-header forms: (struct format, width, smallest length that needs this width)
_STRS = {0xD9: (">B", 1, 32), 0xDA: (">H", 2, 1 << 8), 0xDB: (">I", 4, 1 << 16)}
_BINS = {0xC4: (">B", 1, 0), 0xC5: (">H", 2, 1 << 8), 0xC6: (">I", 4, 1 << 16)}
_ARRAYS = {0xDC: (">H", 2, 16), 0xDD: (">I", 4, 1 << 16)}
_MAPS = {0xDE: (">H", 2, 16), 0xDF: (">I", 4, 1 << 16)}
_EXTS = frozenset({0xC7, 0xC8, 0xC9, 0xD4, 0xD5, 0xD6, 0xD7, 0xD8})
_FLOATS = frozenset({0xCA, 0xCB})


class _Reader:
    """Reads one value at a time from ``buf``; each method returns (value, next position)."""

    __slots__ = ("buf", "max_depth")

    def __init__(self, buf: bytes, max_depth: int) -> None:
        self.buf = buf
        self.max_depth = max_depth

    def _need(self, pos: int, n: int, what: str) -> None:
        if n > len(self.buf) - pos:
            raise EncodingError(
                f"truncated msgpack value: {what} at byte {pos} needs {n} bytes,"
                f" {len(self.buf) - pos} remain"
            )

    def _header(self, pos: int, form: tuple[str, int, int], what: str) -> tuple[int, int]:
        fmt, width, least = form
        self._need(pos, width, what)
        (n,) = struct.unpack_from(fmt, self.buf, pos)
        if n < least:
            raise EncodingError(f"non-canonical msgpack: {what} at byte {pos - 1} is wider than needed")
        return n, pos + width

    def read(self, pos: int, depth: int) -> tuple[Any, int]:
        if depth > self.max_depth:
            raise EncodingError(f"value nests deeper than {self.max_depth} levels")
        self._need(pos, 1, "a value")
        b = self.buf[pos]
        pos += 1
        if b <= 0x7F:
            return b, pos
        if b >= 0xE0:
            return b - 0x100, pos
        if b <= 0x8F:
            return self._map(pos, b & 0x0F, depth)
        if b <= 0x9F:
            return self._array(pos, b & 0x0F, depth)
        if b <= 0xBF:
            return self._str(pos, b & 0x1F)
        if b == 0xC0:
            return None, pos
        if b == 0xC2:
            return False, pos
        if b == 0xC3:
            return True, pos
        if b in _UINTS:
            fmt, width, least = _UINTS[b]
            self._need(pos, width, "an integer")
            (v,) = struct.unpack_from(fmt, self.buf, pos)
            if v < least:
                raise EncodingError(f"non-canonical msgpack: integer {v} at byte {pos - 1} is wider than needed")
            return v, pos + width
        if b in _SINTS:
            fmt, width, most = _SINTS[b]
            self._need(pos, width, "an integer")
            (v,) = struct.unpack_from(fmt, self.buf, pos)
            if v > most:
                raise EncodingError(f"non-canonical msgpack: integer {v} at byte {pos - 1} is wider than needed")
            return v, pos + width
        if b in _STRS:
            n, pos = self._header(pos, _STRS[b], "a string length")
            return self._str(pos, n)
        if b in _BINS:
            n, pos = self._header(pos, _BINS[b], "a bytes length")
            self._need(pos, n, "a bytes value")
            return self.buf[pos:pos + n], pos + n
        if b in _ARRAYS:
            n, pos = self._header(pos, _ARRAYS[b], "an array length")
            return self._array(pos, n, depth)
        if b in _MAPS:
            n, pos = self._header(pos, _MAPS[b], "a map length")
            return self._map(pos, n, depth)
        if b in _FLOATS:
            raise EncodingError("floats are not allowed in canonical msgpack")
        if b in _EXTS:
            raise EncodingError("msgpack extension types are not allowed")
        raise EncodingError(f"malformed msgpack: byte 0x{b:02x} at {pos - 1} is not a type")

    def _str(self, pos: int, n: int) -> tuple[str, int]:
        self._need(pos, n, "a string")
        try:
            return self.buf[pos:pos + n].decode("utf-8"), pos + n
        except UnicodeDecodeError as e:
            raise EncodingError(f"string at byte {pos} is not valid UTF-8") from e

    def _array(self, pos: int, n: int, depth: int) -> tuple[list[Any], int]:
        # Each item takes at least one byte: refuse a length the input cannot hold
        # before building anything.
        self._need(pos, n, f"an array of {n} items")
        out: list[Any] = []
        for _ in range(n):
            item, pos = self.read(pos, depth + 1)
            out.append(item)
        return out, pos

    def _map(self, pos: int, n: int, depth: int) -> tuple[dict[str, Any], int]:
        self._need(pos, 2 * n, f"a map of {n} entries")
        out: dict[str, Any] = {}
        last: bytes | None = None
        for _ in range(n):
            start = pos
            key, pos = self.read(pos, depth + 1)
            if not isinstance(key, str):
                raise EncodingError(f"map key {key!r} at byte {start} is not a string")
            raw = key.encode()
            if last is not None and raw <= last:
                if raw == last:
                    raise EncodingError(f"duplicate map key {key!r}")
                raise EncodingError(f"non-canonical msgpack: map key {key!r} is out of order")
            last = raw
            out[key], pos = self.read(pos, depth + 1)
        return out, pos


__all__ = ["MAX_DEPTH", "MAX_RECORD_BYTES", "Value", "decode", "encode", "is_unicode"]
