"""The recorder's logic without sockets: the ring, one capture per incident, limits, closing.

`Sessions` is fed frames and incident events and returns what was saved; the actor publishes it.
An incident's capture starts with the ring (the packets from before the attack) and goes on with
every frame until the incident resolves (plus `close_delay` for frames in flight), a limit is reached,
or the stream ends. Storage errors abort the file (no half file is left), are counted and logged, and
the incident is simply not recorded. Time comes from an injected monotonic clock.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loguru import logger

from floodwatch.errors import StorageError
from floodwatch.logs import RateLimitedLog
from floodwatch.recorder import retention
from floodwatch.recorder.ring import MAX_LINKTYPE, Frame, FrameRing, frames_of
from floodwatch.recorder.writer import CaptureWriter, Limits, SavedCapture, file_name
from floodwatch.settings.recorder import RecorderSettings

REMEMBERED = 10_000  # incident keys remembered as done (a late duplicate event opens nothing)


@dataclass
class Recording:
    key: str
    subtype: str
    writer: CaptureWriter | None  # None until the first frame tells the link type
    opened: float  # clock time
    close_at: float | None = None  # set by incident.resolved
    ended_at: float | None = None  # the incident's end (capture time)
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Saved:
    key: str
    subtype: str
    capture: SavedCapture


class Sessions:
    def __init__(self, settings: RecorderSettings, out_dir: Path, clock: Callable[[], float] = time.monotonic,
                 log: Any = logger) -> None:
        self.s = settings
        self.out_dir = out_dir
        self.clock = clock
        self.log = log
        self.ring = FrameRing(settings.ring_packets, settings.ring_bytes)
        self.limits = Limits(settings.max_packets, settings.max_seconds, settings.max_file_bytes)
        self.active: dict[str, Recording] = {}
        self.done: OrderedDict[str, None] = OrderedDict()
        self.counters: dict[str, int] = {k: 0 for k in (
            "frames", "bad_frames", "recordings", "saved", "truncated", "write_errors", "skipped_busy",
            "skipped_low_disk", "empty_recordings", "linktype_changes")}  # fmt: skip
        self.last_error = ""  # why the latest capture failed; cleared by the next one saved
        self._errlog = RateLimitedLog(self.log, 10.0)

    # -- inputs ------------------------------------------------------------------------------------
    def on_frames(self, frames: list[Any], linktype: int, sample_rate: int) -> list[Saved]:
        if not 0 <= linktype <= MAX_LINKTYPE:
            self.counters["bad_frames"] += len(frames)
            return []
        sample_rate = min(max(1, sample_rate), 2**31)
        good, bad = frames_of(frames, self.s.snaplen)
        self.counters["frames"] += len(good)
        self.counters["bad_frames"] += bad
        saved: list[Saved] = []
        for rec in list(self.active.values()):
            saved += self._feed(rec, good, linktype, sample_rate)
        self.ring.extend(good, linktype, sample_rate)
        return saved

    def on_opened(self, key: str, subtype: str) -> None:
        if key in self.active or key in self.done:
            return
        if len(self.active) >= self.s.max_open:
            self.counters["skipped_busy"] += 1
            self._error("busy", "not recording incident {}: {} captures already open", key, len(self.active))
            self._remember(key)
            return
        free = retention.free_bytes(self.out_dir)
        if self.s.min_free_bytes and free is not None and free < self.s.min_free_bytes:
            self.counters["skipped_low_disk"] += 1
            self._error("disk", "not recording incident {}: {} bytes free in {}, below min_free_bytes",
                        key, free, self.out_dir)
            self._remember(key)
            return
        rec = Recording(key, subtype, None, self.clock())
        self.active[key] = rec
        self.counters["recordings"] += 1
        if len(self.ring) and self.ring.linktype is not None:
            self._start(rec, self.ring.linktype, self.ring.sample_rate)
            if rec.writer is not None:
                self._write(rec, self.ring.snapshot(), self.ring.sample_rate, timed=False)

    def on_updated(self, key: str, subtype: str) -> None:
        """A new subtype; an incident we never heard open (we restarted during it) starts recording."""
        rec = self.active.get(key)
        if rec is None:
            self.on_opened(key, subtype)
        elif subtype:
            rec.subtype = subtype

    def on_resolved(self, key: str, subtype: str, ended_at: float | None) -> None:
        rec = self.active.get(key)
        if rec is None:
            self._remember(key)
            return
        rec.subtype = subtype or rec.subtype
        rec.ended_at = ended_at
        rec.close_at = self.clock() + self.s.close_delay

    def on_stream_ended(self) -> list[Saved]:
        return [s for key in list(self.active) for s in self._close(key)]

    def tick(self) -> list[Saved]:
        """Close what is due: resolved and quiet, past the time limit on the clock, or short of disk."""
        now = self.clock()
        saved: list[Saved] = []
        low = self._disk_low()
        for key, rec in list(self.active.items()):
            wall_limit = now - rec.opened > self.s.max_seconds + self.s.close_delay
            if (low or wall_limit) and rec.writer is not None:
                rec.writer.full = True
            if (rec.close_at is not None and now >= rec.close_at) or low or wall_limit:
                saved += self._close(key)
        return saved

    def close_all(self) -> list[Saved]:
        return self.on_stream_ended()

    # -- internals ---------------------------------------------------------------------------------
    def _feed(self, rec: Recording, frames: list[Frame], linktype: int, sample_rate: int) -> list[Saved]:
        if rec.ended_at is not None:
            keep = [f for f in frames if f.ts <= rec.ended_at]
            if len(keep) < len(frames):  # we have caught up with the end of the incident
                if keep and rec.writer is not None and rec.writer.linktype == linktype:
                    self._write(rec, keep, sample_rate, timed=True)
                return self._close(rec.key)
            frames = keep
        if not frames:
            return []
        if rec.writer is None:
            self._start(rec, linktype, sample_rate)
            if rec.writer is None:
                return []
        if rec.writer.linktype != linktype:
            self.counters["linktype_changes"] += 1
            rec.writer.full = True
            return self._close(rec.key)
        self._write(rec, frames, sample_rate, timed=True)
        if rec.close_at is not None:
            rec.close_at = self.clock() + self.s.close_delay  # frames still in flight: wait for them
        if rec.key in self.active and rec.writer is not None and rec.writer.full:
            return self._close(rec.key)
        return []

    def _start(self, rec: Recording, linktype: int, sample_rate: int) -> None:
        try:
            self.out_dir.mkdir(mode=0o750, parents=True, exist_ok=True)
            rec.writer = CaptureWriter(self.out_dir, file_name(rec.key, self.s.format), self.s.format, linktype,
                                       self.s.snaplen, self.limits, self.s.file_mode, sample_rate,
                                       comment=f"incident {rec.key}")
        except (StorageError, OSError) as e:
            self._fail(rec, e)

    def _write(self, rec: Recording, frames: list[Frame], sample_rate: int, timed: bool) -> None:
        assert rec.writer is not None
        try:
            rec.writer.write(frames, sample_rate, timed)
        except StorageError as e:
            self._fail(rec, e)

    def _fail(self, rec: Recording, e: Exception) -> None:
        if rec.writer is not None:
            rec.writer.abort()
        rec.writer = None
        self.active.pop(rec.key, None)
        self._remember(rec.key)
        self.counters["write_errors"] += 1
        self.last_error = str(e)
        self._error("write", "capture of incident {} abandoned (no file kept): {}", rec.key, e)

    def _close(self, key: str) -> list[Saved]:
        rec = self.active.pop(key, None)
        if rec is None:
            return []
        self._remember(key)
        if rec.writer is None:
            self.counters["empty_recordings"] += 1
            self.log.warning("incident {}: no frames arrived, no capture file", key)
            return []
        try:
            cap = rec.writer.commit()
        except StorageError as e:
            rec.writer.abort()
            self.counters["write_errors"] += 1
            self.last_error = str(e)
            self._error("write", "capture of incident {} abandoned (no file kept): {}", key, e)
            return []
        self.last_error = ""
        self.counters["saved"] += 1
        self.counters["truncated"] += int(cap.truncated)
        return [Saved(key, rec.subtype, cap)]

    def _disk_low(self) -> bool:
        if not self.active or not self.s.min_free_bytes:
            return False
        free = retention.free_bytes(self.out_dir)
        return free is not None and free < self.s.min_free_bytes // 2

    def _remember(self, key: str) -> None:
        self.done[key] = None
        while len(self.done) > REMEMBERED:
            self.done.popitem(last=False)

    def _error(self, kind: str, fmt: str, *args: Any) -> None:
        self._errlog.error(kind, fmt, *args)
