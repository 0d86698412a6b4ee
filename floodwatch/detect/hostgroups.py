"""Host groups ([[hostgroup]]): the victim thresholds of the group an address or prefix belongs to."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from floodwatch.settings.hostgroup import HostGroupSettings

MEMO = 4096  # addresses remembered (windows name at most a few victims each)


class HostGroups:
    def __init__(self, groups: Sequence[HostGroupSettings]) -> None:
        self.groups = [(g, [ipaddress.ip_network(p, strict=False) for p in g.prefixes]) for g in groups]
        self._memo: dict[str, HostGroupSettings | None] = {}

    def __bool__(self) -> bool:
        return bool(self.groups)

    def group_of(self, ip: str) -> HostGroupSettings | None:
        """The first group whose prefixes hold the address (None: no group, or not an address)."""
        if not self.groups:
            return None
        if ip in self._memo:
            return self._memo[ip]
        try:
            addr = ipaddress.ip_address(ip)
        except ValueError:
            found = None
        else:
            found = next((g for g, nets in self.groups if any(addr in n for n in nets)), None)
        if len(self._memo) >= MEMO:
            self._memo.clear()
        self._memo[ip] = found
        return found

    def thresholds(self, ip: str, pps: float, bps: float) -> tuple[float, float]:
        """(pps, bps) victim thresholds for an address: its group's where the group sets them."""
        g = self.group_of(ip)
        if g is None:
            return pps, bps
        return float(g.pps_threshold or pps), float(g.bps_threshold or bps)
