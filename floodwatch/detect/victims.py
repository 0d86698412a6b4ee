"""Victims: per-address and per-prefix views of the inbound traffic (carpet bombing)."""

from __future__ import annotations

import ipaddress
from collections import Counter
from collections.abc import Mapping

CARPET_MIN_ADDRESSES = 8  # a spread over fewer addresses is just several victims
CARPET_MIN_SHARE = 0.5  # the prefix carries at least this share of inbound packets
CARPET_MAX_SINGLE = 0.3  # and no single address carries more than this


def prefix_of(ip: str, v4_len: int = 24, v6_len: int = 64) -> str:
    """'198.18.0.7' -> '198.18.0.0/24'; IPv6 to its /64. Unparseable text is returned as it is."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    length = v4_len if addr.version == 4 else v6_len
    return str(ipaddress.ip_network(f"{addr}/{length}", strict=False))


def prefix_counts(dst: Mapping[str, int], v4_len: int = 24, v6_len: int = 64) -> tuple[Counter[str], Counter[str]]:
    """(packets per prefix, distinct addresses per prefix)."""
    packets: Counter[str] = Counter()
    members: Counter[str] = Counter()
    for ip, n in dst.items():
        p = prefix_of(ip, v4_len, v6_len)
        packets[p] += int(n)
        members[p] += 1
    return packets, members


def carpet_prefix(dst: Mapping[str, int], total: int, v4_len: int = 24, v6_len: int = 64) -> str | None:
    """The prefix an attack is spread over, or None when it targets a few addresses."""
    if total <= 0 or not dst:
        return None
    if max(int(n) for n in dst.values()) > CARPET_MAX_SINGLE * total:
        return None
    packets, members = prefix_counts(dst, v4_len, v6_len)
    prefix, n = packets.most_common(1)[0]
    if n >= CARPET_MIN_SHARE * total and members[prefix] >= CARPET_MIN_ADDRESSES:
        return prefix
    return None


TARGET_SHARE = 0.1  # an address with this share of a window's inbound packets is a target of it
MAX_TARGETS = 16  # targets an incident lists (more addresses are listed by prefix)
TARGETS_KEEP = 256  # targets tracked (the smallest are dropped past twice this)


def share_targets(dst: Mapping[str, int], total: int, v4_len: int = 24, v6_len: int = 64) -> dict[str, int]:
    """The targets among a window's top destinations `dst` (address -> packets; `total` inbound packets
    in all): the prefix the listed ones are spread over (carpet bombing), else the addresses with at
    least TARGET_SHARE of all inbound packets each."""
    if total <= 0 or not dst:
        return {}
    prefix = carpet_prefix(dst, sum(int(n) for n in dst.values()), v4_len, v6_len)
    if prefix:
        return {prefix: sum(int(n) for ip, n in dst.items() if prefix_of(ip, v4_len, v6_len) == prefix)}
    return {ip: int(n) for ip, n in dst.items() if n >= TARGET_SHARE * total}


def rate_targets(rows: list[tuple[str, float]], limit: float, v4_len: int = 24,
                 v6_len: int = 64) -> dict[str, int]:
    """The targets among per-victim (address, packets) rows of one window: the addresses with at least
    `limit` packets, else the prefixes whose addresses together have (a spread no address shows)."""
    over = {ip: round(n) for ip, n in rows if n >= limit}
    if over:
        return over
    packets: Counter[str] = Counter()
    for ip, n in rows:
        packets[prefix_of(ip, v4_len, v6_len)] += round(n)
    return {p: n for p, n in packets.items() if n >= limit}


class Targets:
    """The targets of an incident over its life: addresses and prefixes with their packets, bounded."""

    def __init__(self, v4_len: int = 24, v6_len: int = 64) -> None:
        self.lens = (v4_len, v6_len)
        self.packets: Counter[str] = Counter()

    def add(self, found: Mapping[str, int]) -> list[str]:
        """Add one window's targets; returns those new to the incident."""
        new = [t for t in found if t not in self.packets]
        for t, n in found.items():
            self.packets[t] += max(int(n), 1)
        if len(self.packets) > 2 * TARGETS_KEEP:
            for t, _ in self.packets.most_common()[TARGETS_KEEP:]:
                del self.packets[t]
        return new

    def listed(self) -> list[str]:
        """Biggest first; an address inside a listed prefix is left out; past MAX_TARGETS entries the
        addresses are grouped by prefix (carpet_prefix_v4/v6)."""
        prefixes = {t for t in self.packets if "/" in t}
        kept = Counter({t: n for t, n in self.packets.items()
                        if "/" in t or prefix_of(t, *self.lens) not in prefixes})
        if len(kept) > MAX_TARGETS:
            grouped: Counter[str] = Counter()
            for t, n in kept.items():
                grouped[t if "/" in t else prefix_of(t, *self.lens)] += n
            kept = grouped
        return [t for t, _ in sorted(kept.items(), key=lambda kv: (-kv[1], kv[0]))[:MAX_TARGETS]]

    def carpet(self) -> bool:
        return any("/" in t for t in self.listed())
