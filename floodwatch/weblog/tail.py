"""Follow a log file as it is written: complete lines in order, across rotation and restarts.

`Follower(path)` is polled with `read()`, which returns the complete lines written since the last call
(at most `read_bytes` of them; a backlog is read over several calls).

* Rotation by rename (logrotate's default): the path now names another file (another inode). The old
  file is read to its end first, then the new one from its start.
* Rotation by copy-truncate: the file shrank below our offset: it is read again from its start.
* Restarts: `position()` gives what to persist (inode, offset of the last complete line, a fingerprint
  of the file's first bytes); `Follower(path, saved)` resumes there when the file is the same one
  (same inode and head). If the file was rotated while we were down, the rest of the old file is read
  from `<path>.1` when that is the saved inode, then the new file from its start. A file never seen
  before is followed from its end (history is not replayed as if it were happening now).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import IO, Any

HEAD_BYTES = 128
OLD_IDLE_READS = 40  # reads (2 s at the default poll interval) with nothing new before a rotated file is let go


def head_of(f: IO[bytes], size: int) -> str:
    """A fingerprint of a file's first bytes (up to HEAD_BYTES)."""
    f.seek(0)
    return hashlib.blake2b(f.read(min(size, HEAD_BYTES)), digest_size=12).hexdigest()


@dataclass
class Position:
    inode: int
    offset: int
    head: str
    head_len: int

    def to_json(self) -> dict[str, Any]:
        return {"inode": self.inode, "offset": self.offset, "head": self.head, "head_len": self.head_len}

    @classmethod
    def from_json(cls, d: Any) -> Position | None:
        try:
            return cls(int(d["inode"]), int(d["offset"]), str(d["head"]), int(d["head_len"]))
        except (KeyError, TypeError, ValueError):
            return None


class Follower:
    def __init__(self, path: str, saved: Position | None = None, read_bytes: int = 4 << 20,
                 max_line: int = 16384, rotated: Position | None = None) -> None:
        self.path = path
        self.read_bytes = read_bytes
        self.max_line = max_line
        self.f: IO[bytes] | None = None
        self.inode = -1
        self.offset = 0  # of the first byte not yet returned as part of a complete line
        self.pending = b""  # bytes read past the last newline
        self.old: IO[bytes] | None = None  # a rotated file being read to its end
        self.old_pending = b""
        self.old_idle = 0
        self.old_pos = Position(-1, 0, "", 0)  # the rotated file's inode and offset (what to persist)
        self.counters = {"rotations": 0, "truncations": 0, "long_lines": 0, "open_errors": 0}
        self._saved = saved
        if rotated is not None:
            self.old = self._open_rotated(rotated)

    # -- opening ---------------------------------------------------------------------------------
    def _open(self) -> bool:
        try:
            f = open(self.path, "rb", buffering=0)  # noqa: SIM115 - held across calls
        except OSError:
            self.counters["open_errors"] += 1
            return False
        st = os.fstat(f.fileno())
        self.f, self.inode, self.pending = f, st.st_ino, b""
        saved, self._saved = self._saved, None
        if saved is None:
            self.offset = st.st_size  # first sight of the file: follow from its end
        elif saved.inode == st.st_ino and saved.offset <= st.st_size and self._head_matches(f, saved):
            self.offset = saved.offset
        else:
            self.offset = 0
            if saved.inode >= 0 and self.old is None:
                self.old = self._open_rotated(saved)
        return True

    @staticmethod
    def _head_matches(f: IO[bytes], saved: Position) -> bool:
        f.seek(0)
        return hashlib.blake2b(f.read(saved.head_len), digest_size=12).hexdigest() == saved.head

    def _open_rotated(self, saved: Position) -> IO[bytes] | None:
        """<path>.1 at the saved offset, when it is the saved file (rotated while we were down)."""
        try:
            old = open(self.path + ".1", "rb", buffering=0)  # noqa: SIM115
        except OSError:
            return None
        st = os.fstat(old.fileno())
        if st.st_ino == saved.inode and saved.offset <= st.st_size and self._head_matches(old, saved):
            old.seek(saved.offset)
            self.old_pos, self.old_pending, self.old_idle = saved, b"", 0
            return old
        old.close()
        return None

    # -- reading ---------------------------------------------------------------------------------
    def read(self) -> bytes:
        """Complete lines written since the last call (b"" when none)."""
        if self.f is not None:
            self._check_rotation()
        out = self._read_old() if self.old is not None else b""
        if self.f is None and not self._open():
            return out
        assert self.f is not None
        self.f.seek(self.offset + len(self.pending))
        data = self.f.read(self.read_bytes - len(out))
        return out + self._lines(data) if data else out

    def _read_old(self) -> bytes:
        """The rotated file's new lines: the server writes there until it reopens its log (logrotate's
        postrotate), so it is read alongside the new file until idle for OLD_IDLE_READS reads."""
        assert self.old is not None
        data = self.old.read(self.read_bytes)
        if data:
            self.old_idle = 0
            return self._old_lines(data)
        self.old_idle += 1
        if self.old_idle >= OLD_IDLE_READS:
            self.old.close()
            self.old, self.old_pending = None, b""
        return b""

    def _check_rotation(self) -> None:
        assert self.f is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return  # moved away and not yet recreated: keep reading the file we have
        size = os.fstat(self.f.fileno()).st_size
        if st.st_ino != self.inode and self.old is None:  # (a second rotation waits for the first)
            self.counters["rotations"] += 1
            self.f.seek(self.offset)  # the old file's rest, from its last complete line, comes first
            self.old, self.old_pending, self.old_idle, self.f = self.f, b"", 0, None
            self.old_pos = self.position_of(self.old, self.inode, self.offset)
            self._open_new()
        elif size < self.offset + len(self.pending):
            self.counters["truncations"] += 1
            self.offset, self.pending = 0, b""

    def _open_new(self) -> None:
        self._saved = Position(-1, 0, "", 0)  # not the same file: from its start
        self._open()

    def _split(self, pending: bytes, data: bytes) -> tuple[bytes, bytes, int]:
        """(complete lines, the rest, bytes consumed) of pending + data; an endless line is skipped."""
        buf = pending + data
        cut = buf.rfind(b"\n") + 1
        rest = buf[cut:]
        if len(rest) > self.max_line:
            self.counters["long_lines"] += 1
            return buf[:cut], b"", len(buf)
        return buf[:cut], rest, cut

    def _lines(self, data: bytes) -> bytes:
        lines, self.pending, used = self._split(self.pending, data)
        self.offset += used
        return lines

    def _old_lines(self, data: bytes) -> bytes:
        lines, self.old_pending, used = self._split(self.old_pending, data)
        self.old_pos.offset += used
        return lines

    @staticmethod
    def position_of(f: IO[bytes], inode: int, offset: int) -> Position:
        size = os.fstat(f.fileno()).st_size
        here = f.tell()
        head = head_of(f, size)
        f.seek(here)
        return Position(inode, offset, head, min(size, HEAD_BYTES))

    def position(self) -> Position | None:
        """What to persist: the current file and the offset of its last complete line returned."""
        if self.f is None:
            return self._saved
        return self.position_of(self.f, self.inode, self.offset)

    def rotated_position(self) -> Position | None:
        """The rotated file still being read (a restart finds it as <path>.1), if any."""
        if self.old is None:
            return None
        p = self.old_pos
        return Position(p.inode, p.offset, p.head, p.head_len)

    def close(self) -> None:
        for f in (self.f, self.old):
            if f is not None:
                f.close()
        self.f = self.old = None
