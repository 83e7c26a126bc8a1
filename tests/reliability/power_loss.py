"""Power-loss images rebuilt from a syscall trace (RELIABILITY S3).

The child runs to completion under ``strace -f -y -xx -s BIG``: every byte LevelDB writes, every
file it creates, renames or unlinks and every fsync/fdatasync is in the trace, in order, and so
is every acknowledgement the child prints. :class:`Disk` replays that trace over the starting
copy of the data directory and, at any point, builds the image a power cut at that instant
could leave, the way LevelDB's own ``fault_injection_test`` does (``DropUnsyncedFileData``,
``DeleteFilesCreatedAfterLastDirSync``):

* a file's content is what it held at its last ``fsync``/``fdatasync``: anything written
  after that is dropped (a file never synced is empty);
* the directory is what it was at the last ``fsync`` of the directory (``strict``), or what
  the later creates, renames and unlinks made it (``relaxed``: metadata happened to be
  written back, data did not). File systems that journal metadata in order (ext4, xfs) leave
  something between the two: an ordered prefix of the directory operations.

Both images must hold every record acknowledged before the cut and every checkpoint signed
before it. The model assumes writes go through ``write``/``pwrite64`` (LevelDB's POSIX env
never writes through mmap) and that a completed ``fsync`` covers every write that completed
before it.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

_LINE = re.compile(r"^(\d+)\s+(.*)$")
_START = re.compile(r"^(\w+)\((.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_RET = re.compile(r"\)\s+=\s+(-?\d+|\?)(?:<((?:\\x[0-9a-f]{2})*)>)?(.*)$")
_HEX = re.compile(r"(?:\\x[0-9a-f]{2})+")
_FD = re.compile(r"^(\d+)<((?:\\x[0-9a-f]{2})*)>")
_STRING = re.compile(r'"((?:\\x[0-9a-f]{2})*)"')
_O_CREAT, _O_TRUNC, _O_APPEND = 0o100, 0o1000, 0o2000
TRACED = ("openat", "write", "pwrite64", "fsync", "fdatasync", "rename", "renameat", "renameat2",
          "unlink", "unlinkat", "ftruncate", "close")  # fmt: skip


def _unhex(text: str) -> bytes:
    return bytes.fromhex(text.replace("\\x", ""))


@dataclass
class Call:
    """One completed syscall: name, raw argument text, return value, position in the trace."""

    pid: str
    name: str
    args: str
    ret: int | None
    ret_path: str | None
    position: int


def calls_of(trace: str) -> list[Call]:
    """Completed syscalls in completion order (``unfinished``/``resumed`` halves joined)."""
    pending: dict[str, tuple[str, str]] = {}
    out: list[Call] = []
    for line in trace.splitlines():
        m = _LINE.match(line)
        if m is None:
            continue
        pid, rest = m.groups()
        if rest.startswith("+++") or rest.startswith("---"):
            continue
        resumed = _RESUMED.match(rest)
        if resumed:
            name, tail = resumed.groups()
            start = pending.pop(pid, None)
            if start is None or start[0] != name:
                continue
            body = start[1] + tail
        else:
            started = _START.match(rest)
            if started is None:
                continue
            name, body = started.groups()
            if body.endswith("<unfinished ...>"):
                pending[pid] = (name, body[: -len("<unfinished ...>")].rstrip())
                continue
        r = _RET.search(body)
        if r is None:
            continue
        ret = None if r.group(1) == "?" else int(r.group(1))
        ret_path = _unhex(r.group(2)).decode(errors="replace") if r.group(2) else None
        out.append(Call(pid, name, body[: r.start()], ret, ret_path, len(out)))
    return out


@dataclass
class _Inode:
    data: bytearray
    synced: bytes


@dataclass
class _Open:
    inode: _Inode | None  # None: not a file of the data directory (a pipe, the directory...)
    path: str
    offset: int = 0
    append: bool = False


@dataclass
class Disk:
    """The data directory as a trace replay leaves it: current and durable state."""

    root: str  # the data directory's absolute path, as the trace names it
    names: dict[str, _Inode] = field(default_factory=dict)
    durable_names: dict[str, _Inode] = field(default_factory=dict)
    fds: dict[int, _Open] = field(default_factory=dict)
    stdout: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, directory: Path, traced_as: str) -> Disk:
        """The starting state: every file of ``directory`` durable as it is."""
        disk = cls(traced_as)
        for f in sorted(directory.iterdir()):
            if f.is_file():
                data = f.read_bytes()
                disk.names[f.name] = _Inode(bytearray(data), data)
        disk.durable_names = dict(disk.names)
        return disk

    def _name(self, path: str) -> str | None:
        return path[len(self.root) + 1 :] if path.startswith(self.root + "/") else None

    def apply(self, call: Call) -> str:
        """Replay one call; returns what kind of durability event it was ("" for none)."""
        if call.ret is None or call.ret < 0:
            return ""
        fd_match = _FD.match(call.args)
        fd = int(fd_match.group(1)) if fd_match else None
        if call.name == "openat":
            strings = _STRING.findall(call.args)
            path = call.ret_path or (_unhex(strings[0]).decode(errors="replace") if strings else "")
            flags = _flags(call.args)
            name = self._name(path)
            inode = None
            if name is not None and not name.endswith("/") and path != self.root:
                inode = self.names.get(name)
                if inode is None and flags & _O_CREAT:
                    inode = self.names[name] = _Inode(bytearray(), b"")
                if inode is not None and flags & _O_TRUNC:
                    inode.data = bytearray()
            self.fds[call.ret] = _Open(inode, path, 0, bool(flags & _O_APPEND))
            return "create" if inode is not None and flags & _O_CREAT else ""
        if call.name in ("write", "pwrite64") and fd is not None:
            data = _unhex(_STRING.findall(call.args)[0])[: call.ret]
            if fd == 1:
                self.stdout.append(data.decode(errors="replace"))
                return "stdout"
            handle = self.fds.get(fd)
            if handle is None or handle.inode is None:
                return ""
            inode = handle.inode
            if call.name == "pwrite64":
                at = int(call.args.rsplit(",", 1)[1])
            else:
                at = len(inode.data) if handle.append else handle.offset
                handle.offset = at + len(data)
            inode.data[at : at + len(data)] = data
            return ""
        if call.name in ("fsync", "fdatasync") and fd is not None:
            handle = self.fds.get(fd)
            if handle is None:
                return ""
            if handle.inode is not None:
                handle.inode.synced = bytes(handle.inode.data)
                return "sync"
            if handle.path == self.root:
                self.durable_names = dict(self.names)
                return "dirsync"
            return ""
        if call.name == "ftruncate" and fd is not None:
            handle = self.fds.get(fd)
            if handle is not None and handle.inode is not None:
                size = int(call.args.rsplit(",", 1)[1])
                del handle.inode.data[size:]
            return ""
        if call.name in ("rename", "renameat", "renameat2"):
            paths = [_unhex(s).decode(errors="replace") for s in _STRING.findall(call.args)]
            old, new = (self._name(p) for p in paths[:2])
            if old is not None and new is not None and old in self.names:
                self.names[new] = self.names.pop(old)
                return "rename"
            return ""
        if call.name in ("unlink", "unlinkat"):
            paths = [_unhex(s).decode(errors="replace") for s in _STRING.findall(call.args)]
            name = self._name(paths[0]) if paths else None
            if name is not None and self.names.pop(name, None) is not None:
                return "unlink"
            return ""
        if call.name == "close" and fd is not None:
            self.fds.pop(fd, None)
        return ""

    def image(self, target: Path, *, strict: bool) -> dict[str, bytes]:
        """Write the power-cut image to ``target`` (a new directory); return its files."""
        names = self.durable_names if strict else self.names
        files = {name: inode.synced for name, inode in names.items()}
        target.mkdir(parents=True)
        for name, data in files.items():
            (target / name).write_bytes(data)
        return files


def _flags(args: str) -> int:
    value = 0
    for name, bit in (("O_CREAT", _O_CREAT), ("O_TRUNC", _O_TRUNC), ("O_APPEND", _O_APPEND)):
        if name in args:
            value |= bit
    return value


def materialise(world: Path, disk: Disk, target: Path, *, strict: bool) -> Path:
    """A world directory at ``target``: the keys and acks of ``world``, the image as ``db/``."""
    target.mkdir(parents=True)
    for f in world.iterdir():
        if f.is_file():
            shutil.copy2(f, target / f.name)
    disk.image(target / "db", strict=strict)
    return target


__all__ = ["TRACED", "Call", "Disk", "calls_of", "materialise"]
