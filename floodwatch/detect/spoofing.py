"""Spoofed sources from TTL analysis.

Real sources sit at different hop distances from us and start from a few initial TTLs (64, 128, 255),
so their TTLs spread over several values just below those. Two patterns real traffic cannot make:
* very many distinct sources whose TTLs sit in one narrow band (one machine forging every address);
* many packets with TTLs that imply an implausibly long path (32+ hops below the next initial TTL),
  which is what tools that randomise the TTL produce.
"""

from __future__ import annotations

from collections.abc import Mapping

MIN_PACKETS = 200
MIN_SOURCES = 500  # fewer distinct sources than this can be a real (small) botnet
BAND_WIDTH = 4  # TTL values t .. t+3
BAND_SHARE = 0.9
IMPLAUSIBLE = (range(65, 97), range(129, 224))  # 32+ hops below 128 or 255
IMPLAUSIBLE_SHARE = 0.25


def densest_band(ttl: Mapping[int, int], width: int = BAND_WIDTH) -> tuple[int, int]:
    """(lowest TTL of the band, packets in it) for the band of `width` values holding most packets."""
    counts = [0] * 256
    for t, n in ttl.items():
        if 0 <= int(t) <= 255:
            counts[int(t)] += int(n)
    best_start, best = 0, -1
    window = sum(counts[:width])
    for start in range(0, 257 - width):
        if start:
            window += counts[start + width - 1] - counts[start - 1]
        if window > best:
            best_start, best = start, window
    return best_start, max(best, 0)


def spoofing_verdict(ttl: Mapping[int, int], src_distinct: int, packets: int) -> tuple[bool, str]:
    """(spoofed?, the reason in words) from an inbound TTL histogram and the distinct source count."""
    total = sum(int(n) for n in ttl.values())
    if total < MIN_PACKETS:
        return False, f"too few packets for TTL analysis ({total})"
    if src_distinct < MIN_SOURCES:
        return False, f"{src_distinct} distinct sources: too few to call spoofed"
    start, in_band = densest_band(ttl)
    if in_band >= BAND_SHARE * total:
        return True, (f"{src_distinct} sources with {100 * in_band / total:.0f}% of TTLs in "
                      f"{start}-{start + BAND_WIDTH - 1}")
    odd = sum(int(n) for t, n in ttl.items() if any(int(t) in r for r in IMPLAUSIBLE))
    if odd >= IMPLAUSIBLE_SHARE * total:
        return True, f"{100 * odd / total:.0f}% of packets with implausible TTLs (random TTL)"
    return False, "TTLs spread like real sources"
