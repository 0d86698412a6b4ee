"""What capture sends: PacketBatch per interface (by size or age), FrameBatch under a frame budget.

Pure logic: the actor injects `send(msg, channel) -> bool` ("packets" or "frames") and a clock. A batch
always carries the sample rate its packets were admitted under: a rate change flushes first.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from floodwatch.capture.batch import Directions, FrameBudget, RecordBatch
from floodwatch.messages import FrameBatch, Message, PacketBatch

# a wait with nothing due (no batch pending, a live ring with no block): the actor's timers bound it anyway
NOTHING_DUE_MS = 60_000.0

Send = Callable[[Message, str], bool]


class Output:
    def __init__(self, source: str, ifaces: list[str], batch_records: int, batch_interval: float,
                 frames_per_second: int, frames_batch: int, snaplen: int, send: Send,
                 clock: Callable[[], float], directions: Directions | None = None) -> None:
        self.source = source
        self.ifaces = ifaces
        self.batches = [RecordBatch(batch_records) for _ in ifaces]
        self.rates = [1] * len(ifaces)
        self.born = [0.0] * len(ifaces)
        self.seq = [0] * len(ifaces)
        self.interval = batch_interval
        self.send = send
        self.clock = clock
        self.directions = directions or Directions([])
        self.budget = FrameBudget(frames_per_second, clock)
        self.frames_batch = frames_batch
        self.snaplen = snaplen
        self.frames: list[list[Any]] = []
        self.frames_key: tuple[int, int, int] = (0, 0, 0)  # iface index, linktype, rate
        self.frames_born = 0.0
        self.counters = {"records": 0, "malformed": 0, "batches": 0, "batches_dropped": 0,
                         "frames": 0, "frames_dropped": 0}
        self.send_drops = [0] * len(ifaces)

    # -- records ---------------------------------------------------------------------------------
    def add_rows(self, idx: int, rows: np.ndarray, rate: int) -> None:
        """Append RECORD_DTYPE rows of interface idx admitted at 1-in-`rate` (ts, direction set)."""
        if rate != self.rates[idx]:
            self.flush(idx)
            self.rates[idx] = rate
        if len(rows) == 0:
            return
        rows["iface"] = idx
        if self.directions:
            self.directions.apply(rows)
        batch = self.batches[idx]
        done = 0
        while done < len(rows):
            if batch.n == 0:
                self.born[idx] = self.clock()
            done += batch.extend(rows[done:])
            if batch.full():
                self.flush(idx)

    def flush(self, idx: int) -> None:
        batch = self.batches[idx]
        if batch.n == 0:
            return
        n, malformed, t_first, t_last = batch.n, batch.malformed, batch.t_first, batch.t_last
        msg = PacketBatch(source=self.source, iface=self.ifaces[idx], seq=self.seq[idx],
                          sample_rate=self.rates[idx], count=n, records=batch.take(), t_first=t_first,
                          t_last=t_last)
        self.seq[idx] += 1
        self.counters["records"] += n
        self.counters["malformed"] += malformed
        if self.send(msg, "packets"):
            self.counters["batches"] += 1
        else:
            self.counters["batches_dropped"] += 1
            self.send_drops[idx] += 1

    def flush_due(self) -> None:
        """Send batches (and frames) older than the batch interval."""
        now = self.clock()
        for idx, batch in enumerate(self.batches):
            if batch.n and now - self.born[idx] >= self.interval:
                self.flush(idx)
        if self.frames and now - self.frames_born >= self.interval:
            self.flush_frames()

    def due_in_ms(self) -> float:
        """Milliseconds until the oldest pending batch is due (NOTHING_DUE_MS when nothing is pending: the
        first record's arrival, not a timeout, is what wakes the reader)."""
        now = self.clock()
        born = [self.born[i] for i, b in enumerate(self.batches) if b.n]
        if self.frames:
            born.append(self.frames_born)
        if not born:
            return NOTHING_DUE_MS
        return max(0.0, (min(born) + self.interval - now) * 1000)

    def flush_all(self) -> None:
        for idx in range(len(self.batches)):
            self.flush(idx)
        self.flush_frames()

    # -- raw frames ------------------------------------------------------------------------------
    def frames_wanted(self, n: int, now: float | None = None) -> int:
        """How many of the next n frames may go to the recorder (the frame budget; `now` = file time)."""
        return self.budget.take(n, now)

    def add_frame(self, idx: int, linktype: int, rate: int, ts: float, wirelen: int, data: bytes) -> None:
        self.add_frames(idx, linktype, rate, [[ts, wirelen, data[: self.snaplen]]])

    def add_frames(self, idx: int, linktype: int, rate: int, frames: list[list[Any]]) -> None:
        """Append [ts, wirelen, data] rows (data at most snaplen bytes) of one interface, link type and rate."""
        key = (idx, linktype, rate)
        if key != self.frames_key:
            self.flush_frames()
            self.frames_key = key
        done = 0
        while done < len(frames):
            if len(self.frames) >= self.frames_batch:
                self.flush_frames()
            if not self.frames:
                self.frames_born = self.clock()
            take = frames[done : done + self.frames_batch - len(self.frames)]
            self.frames.extend(take)
            done += len(take)

    def flush_frames(self) -> None:
        if not self.frames:
            return
        idx, linktype, rate = self.frames_key
        msg = FrameBatch(iface=self.ifaces[idx], linktype=linktype, sample_rate=rate, frames=self.frames)
        n = len(self.frames)
        self.frames = []
        if self.send(msg, "frames"):
            self.counters["frames"] += n
        else:
            self.counters["frames_dropped"] += n
