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
