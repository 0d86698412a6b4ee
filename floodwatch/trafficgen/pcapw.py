"""Paced frames for capture files (written by floodwatch.capture.pcapwrite.write_pcap)."""

from __future__ import annotations

from collections.abc import Iterable


def paced(pool: list[bytes], pps: float, count: int, start: float) -> Iterable[tuple[float, bytes]]:
    """`count` frames cycled from the pool at `pps`, timestamps from `start` (deterministic)."""
    for i in range(count):
        yield start + i / pps, pool[i % len(pool)]
