"""A minimal pcap writer (microsecond timestamps, LINKTYPE_ETHERNET), written with struct."""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable
from pathlib import Path

LINKTYPE_ETHERNET = 1
SNAPLEN = 65535


def write_pcap(path: str | os.PathLike[str], frames: Iterable[tuple[float, bytes]], snaplen: int = SNAPLEN) -> int:
    """Write (timestamp, frame) pairs, each cut to `snaplen` bytes (the wire length is kept); returns
    the number of packets written."""
    n = 0
    p = Path(path)
    with open(p, "wb") as f:
        f.write(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, snaplen, LINKTYPE_ETHERNET))
        for ts, frame in frames:
            sec = int(ts)
            usec = round((ts - sec) * 1_000_000)
            if usec >= 1_000_000:
                sec, usec = sec + 1, usec - 1_000_000
            data = frame[:snaplen]
            f.write(struct.pack("<IIII", sec, usec, len(data), len(frame)))
            f.write(data)
            n += 1
    return n


def paced(pool: list[bytes], pps: float, count: int, start: float) -> Iterable[tuple[float, bytes]]:
    """`count` frames cycled from the pool at `pps`, timestamps from `start` (deterministic)."""
    for i in range(count):
        yield start + i / pps, pool[i % len(pool)]
