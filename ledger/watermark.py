"""A log's high-water mark: the size and root of the last checkpoint it signed, kept
outside LevelDB.

LevelDB recovers a damaged write-ahead log by dropping the damaged record and everything
after it (a flipped length field looks like a torn write), even with ``paranoid_checks``:
the store then opens at an older state that is consistent with itself, and an audit of it
passes. The mark, written after every checkpoint, lets :class:`ledger.log.Log` refuse to
open (and so to sign a fork) when the store holds less than it once signed, or a
different history (RELIABILITY S5).

Format: 48 bytes, ``b"TWM1"`` + size (8, big-endian) + root (32) + CRC-32 of the first 44
bytes (4). Rewritten in place and ``fdatasync``ed: one sector, so a torn write is caught by
the CRC rather than mistaken for a smaller mark.

Invariant: the mark is only ever written after the checkpoint it describes is durable, so
it never runs ahead of the store unless the store lost data.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from ledger.errors import CorruptionError, StorageError

_MAGIC = b"TWM1"
_BODY = struct.Struct(">4sQ32s")
_SIZE = _BODY.size + 4


@dataclass(frozen=True)
class Mark:
    """The last signed tree: its size and root hash."""

    size: int
    root: bytes


class Watermark:
    """The high-water mark file of one log (created on first write)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def read(self) -> Mark | None:
        """The stored mark, or None when the log never signed one here.

        Raises:
            CorruptionError: the file exists but is not a valid mark.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StorageError(f"cannot read the high-water mark {self.path}: {e}") from e
        if len(data) != _SIZE or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "big"):
            raise CorruptionError(f"the high-water mark {self.path} is damaged", path=str(self.path))
        magic, size, root = _BODY.unpack(data[:-4])
        if magic != _MAGIC:
            raise CorruptionError(f"{self.path} is not a turtles high-water mark", path=str(self.path))
        return Mark(size, root)

    def write(self, mark: Mark) -> None:
        """Record ``mark`` durably (in place, then ``fdatasync``).

        Raises:
            StorageError: the write or the sync failed.
        """
        body = _BODY.pack(_MAGIC, mark.size, mark.root)
        data = body + zlib.crc32(body).to_bytes(4, "big")
        try:
            if self._fd is None:
                created = not self.path.exists()
                self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
                if created:  # make the new directory entry durable too
                    dfd = os.open(self.path.parent, os.O_RDONLY)
                    try:
                        os.fsync(dfd)
                    finally:
                        os.close(dfd)
            os.pwrite(self._fd, data, 0)
            os.fdatasync(self._fd)
        except OSError as e:
            raise StorageError(f"cannot write the high-water mark {self.path}: {e}") from e

    def close(self) -> None:
        """Close the file handle (the mark stays on disk, already synced).

        Raises:
            StorageError: the close failed.
        """
        fd, self._fd = self._fd, None
        if fd is not None:
            try:
                os.close(fd)
            except OSError as e:
                raise StorageError(f"closing the high-water mark {self.path} failed: {e}") from e


__all__ = ["Mark", "Watermark"]
