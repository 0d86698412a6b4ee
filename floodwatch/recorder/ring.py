"""A bounded ring of the most recent raw frames, so that a capture can start before the attack.

Frames come from the capture actor's FrameBatch messages as `[ts, wirelen, bytes]`. `frames_of` checks
and converts a whole batch (a bad entry is skipped and counted, never raised); the ring keeps at most
`capacity` frames and `max_bytes` bytes of frame data, dropping the oldest first. All frames in the
ring share one link type: a batch of another link type empties it first.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

MAX_TS = 2.0**32  # pcap's seconds field (year 2106)
MAX_LEN = 2**32 - 1
MAX_LINKTYPE = 0xFFFF


class Frame(NamedTuple):
    ts: float  # capture time, epoch seconds
    wirelen: int  # length on the wire (>= len(data))
    data: bytes  # the captured bytes (maybe cut at the snap length)


def frames_of(items: Iterable[Any], snaplen: int) -> tuple[list[Frame], int]:
    """A FrameBatch's `frames` list -> (valid frames cut to snaplen, number of bad entries skipped)."""
    out: list[Frame] = []
    bad = 0
    for item in items:
        # the capture's own frames (a list of a float, an int and bytes, as msgpack decodes them) in a few
        # exact type checks; anything else through every check (_checked)
        if type(item) is list and len(item) == 3:
            ts, wirelen, data = item
            if type(ts) is float and type(wirelen) is int and type(data) is bytes and data \
                    and 0.0 <= ts < MAX_TS and 0 <= wirelen <= MAX_LEN:  # NaN and inf fail the range
                if len(data) > snaplen:
                    data = data[:snaplen]
                out.append(Frame(ts, wirelen if wirelen >= len(data) else len(data), data))
                continue
        frame = _checked(item, snaplen)
        if frame is None:
            bad += 1
        else:
            out.append(frame)
    return out, bad


def _checked(item: Any, snaplen: int) -> Frame | None:
    """One entry of any shape: the frame, or None when it is not [ts, wirelen, bytes] in range."""
    try:
        ts, wirelen, data = item
    except (TypeError, ValueError):
        return None
    if (
        not isinstance(data, bytes)
        or not data
        or isinstance(ts, bool)
        or not isinstance(ts, int | float)
        or not math.isfinite(ts)
        or not 0 <= ts < MAX_TS
        or isinstance(wirelen, bool)
        or not isinstance(wirelen, int)
        or not 0 <= wirelen <= MAX_LEN
    ):
        return None
    if len(data) > snaplen:
        data = data[:snaplen]
    return Frame(float(ts), max(wirelen, len(data)), data)


class FrameRing:
    """The last `capacity` frames (and at most `max_bytes` of their data) of one link type."""

    def __init__(self, capacity: int, max_bytes: int) -> None:
        if capacity < 0 or max_bytes < 0:
            raise ValueError("ring capacity and max_bytes must be >= 0")
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.linktype: int | None = None
        self.sample_rate = 1
        self._frames: deque[Frame] = deque()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[Frame]:
        return iter(self._frames)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def clear(self) -> None:
        self._frames.clear()
        self._bytes = 0

    def extend(self, frames: list[Frame], linktype: int, sample_rate: int = 1) -> None:
        """Add a batch (oldest first); older frames fall out past the count or byte bound."""
        if self.linktype != linktype:
            self.clear()
            self.linktype = linktype
        self.sample_rate = max(1, sample_rate)
        if self.capacity == 0 or self.max_bytes == 0:
            return
        if len(frames) > self.capacity:
            frames = frames[-self.capacity :]
        self._frames.extend(frames)
        self._bytes += sum(len(f.data) for f in frames)
        over = len(self._frames) - self.capacity
        for _ in range(max(0, over)):
            self._bytes -= len(self._frames.popleft().data)
        while self._bytes > self.max_bytes and self._frames:
            self._bytes -= len(self._frames.popleft().data)

    def snapshot(self) -> list[Frame]:
        """The frames in the ring now, oldest first (a copy: the ring goes on filling)."""
        return list(self._frames)
