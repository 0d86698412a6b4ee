"""Capture files written atomically: classic pcap, or pcapng with the sampling rate in a comment
(encoded by floodwatch/capture/pcapwrite.py).

A `CaptureWriter` writes to a hidden temporary name (`.<name>.part`) in the destination directory,
created exclusively with the configured mode; `commit()` flushes, fsyncs, renames it to its final name
and fsyncs the directory, so a reader (the reporter, a user) only ever sees a whole file. `abort()`
removes the temporary file. Every OS error is raised as StorageError, after which the caller aborts.

Limits (packets, bytes, seconds of capture time after the first attack frame) are checked per frame
while a batch is encoded; a frame over a limit is not written and the writer reports `full`.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from floodwatch.capture.pcapwrite import pcap_header, pcap_record, pcapng_header, pcapng_record
from floodwatch.errors import StorageError
from floodwatch.recorder.ring import Frame

FORMATS = ("pcap", "pcapng")
EXTENSIONS = {"pcap": ".pcap", "pcapng": ".pcapng"}
PART_SUFFIX = ".part"

_NAME_OK = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Limits:
    max_packets: int = 10_000
    max_seconds: float = 300.0  # capture time after the first attack frame
    max_bytes: int = 95_000_000  # whole file (the API takes uploads up to 100 MB)


@dataclass(frozen=True)
class SavedCapture:
    path: str
    packets: int
    bytes: int
    linktype: int
    sha256: str
    sample_rate: int  # the largest 1-in-N rate in force while the file was written
    truncated: bool  # a limit stopped the file before the incident ended


def file_name(key: str, fmt: str) -> str:
    """The file name for an incident key; keys that are not plain names are replaced by a hash."""
    if not _NAME_OK.match(key) or ".." in key:
        key = "incident-" + hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()[:32]
    return key + EXTENSIONS[fmt]


def sampling_comment(sample_rate: int) -> str:
    if sample_rate <= 1:
        return "floodwatch: sampling 1 in 1 (every packet the capture saw)"
    return f"floodwatch: sampling 1 in {sample_rate} (one packet of every {sample_rate} was kept)"


class CaptureWriter:
    """One capture file being written; see the module docstring."""

    def __init__(self, directory: Path, name: str, fmt: str, linktype: int, snaplen: int,
                 limits: Limits, mode: int = 0o640, sample_rate: int = 1, comment: str = "") -> None:
        if fmt not in FORMATS:
            raise ValueError(f"unknown capture format {fmt!r}")
        self.fmt = fmt
        self.linktype = linktype
        self.limits = limits
        self.final = directory / name
        self.tmp = directory / ("." + name + PART_SUFFIX)
        self.packets = 0
        self.bytes = 0
        self.sample_rate = max(1, sample_rate)
        self.max_sample_rate = self.sample_rate
        self.full = False
        self.t0: float | None = None  # time of the first attack frame
        self._hash = hashlib.sha256()
        self._fd: int | None = None
        self._open(mode)
        rate_note = sampling_comment(self.sample_rate)
        head = pcap_header(linktype, snaplen) if fmt == "pcap" else \
            pcapng_header(linktype, snaplen, f"{rate_note}; {comment}" if comment else rate_note)
        self._write(head)

    def _open(self, mode: int) -> None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            if self.tmp.is_symlink() or self.tmp.exists():
                self.tmp.unlink()  # a leftover of a crash: ours, in our own directory
            self._fd = os.open(self.tmp, flags, mode)
            os.fchmod(self._fd, mode)  # exactly the mode asked for, whatever the umask
        except OSError as e:
            self._close_fd()
            raise StorageError(f"cannot create {self.tmp}: {e.strerror or e}") from e

    def _write(self, data: bytes) -> None:
        assert self._fd is not None
        view = memoryview(data)
        try:
            while view:
                n = os.write(self._fd, view)
                view = view[n:]
        except OSError as e:
            raise StorageError(f"cannot write {self.tmp}: {e.strerror or e}") from e
        self._hash.update(data)
        self.bytes += len(data)

    def write(self, frames: Sequence[Frame], sample_rate: int = 1, timed: bool = True) -> int:
        """Append frames up to the limits; returns how many were written. `timed` frames start the
        clock of the time limit (ring frames from before the attack do not)."""
        if self.full or not frames:
            return 0
        lim = self.limits
        parts: list[bytes] = []
        size = 0
        rate = max(1, sample_rate)
        for f in frames:
            if timed and self.t0 is None:
                self.t0 = f.ts
            if self.packets + len(parts) >= lim.max_packets or \
                    (timed and self.t0 is not None and f.ts - self.t0 > lim.max_seconds):
                self.full = True
                break
            if self.fmt == "pcap":
                rec = pcap_record(f.ts, f.data, f.wirelen)
            else:
                note = sampling_comment(rate) if rate != self.sample_rate else ""
                self.sample_rate = rate
                rec = pcapng_record(f.ts, f.data, f.wirelen, note)
            if self.bytes + size + len(rec) > lim.max_bytes:
                self.full = True
                break
            parts.append(rec)
            size += len(rec)
        if parts:
            self._write(b"".join(parts))
            self.packets += len(parts)
            self.max_sample_rate = max(self.max_sample_rate, rate)
        return len(parts)

    def commit(self) -> SavedCapture:
        """Make the file durable and visible under its final name."""
        assert self._fd is not None, "commit after close"
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            os.replace(self.tmp, self.final)
            dfd = os.open(self.final.parent, os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(dfd)
            finally:
                os.close(dfd)
        except OSError as e:
            raise StorageError(f"cannot save {self.final}: {e.strerror or e}") from e
        return SavedCapture(str(self.final), self.packets, self.bytes, self.linktype,
                            self._hash.hexdigest(), self.max_sample_rate, self.full)

    def abort(self) -> None:
        """Drop the temporary file; never raises."""
        self._close_fd()
        with contextlib.suppress(OSError):
            self.tmp.unlink()

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
