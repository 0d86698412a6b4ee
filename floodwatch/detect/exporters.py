"""Network mode: which exporters (routers) saw traffic to which protected address, from the collector's
ExporterTraffic messages, so an incident can name them (IncidentEvent.exporters).

Bounded: MAX_VICTIMS addresses, MAX_PER_VICTIM exporters each; an address not refreshed for `ttl`
seconds is forgotten. It also remembers the exporters each active incident was last published with
(MAX_INCIDENTS at most): the collector's pairs can reach the detector after an incident opened, and
`grown()` names the incidents that must be updated with their new exporters. Pure logic: the caller gives
the time.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from typing import Any

MAX_VICTIMS = 4096
MAX_PER_VICTIM = 16
MAX_INCIDENTS = 256  # active incidents whose published exporters are remembered
TTL = 600.0


class ExporterMap:
    def __init__(self, ttl: float = TTL) -> None:
        self.ttl = ttl
        self.victims: OrderedDict[str, dict[str, float]] = OrderedDict()  # least recently seen first
        self.bad = 0
        # incident key -> (its targets, the exporters it was published with), while it is active
        self.published: OrderedDict[str, tuple[list[str], list[str]]] = OrderedDict()

    def note(self, pairs: list[list[Any]], now: float) -> None:
        for pair in pairs[:MAX_VICTIMS]:
            if len(pair) != 3 or not isinstance(pair[0], str) or not isinstance(pair[1], str):
                self.bad += 1
                continue
            seen = self.victims.pop(pair[1], None) or {}
            if pair[0] in seen or len(seen) < MAX_PER_VICTIM:
                seen[pair[0]] = now
            self.victims[pair[1]] = seen
        while len(self.victims) > MAX_VICTIMS:
            self.victims.popitem(last=False)

    def expire(self, now: float) -> None:
        while self.victims:
            victim, seen = next(iter(self.victims.items()))
            if max(seen.values(), default=0.0) >= now - self.ttl:
                break
            del self.victims[victim]

    def for_targets(self, targets: list[str], now: float) -> list[str]:
        """The exporters that saw any of the targets (addresses, or prefixes of a carpet incident)."""
        self.expire(now)
        if not self.victims:
            return []
        found: set[str] = set()
        for t in targets:
            if "/" not in t:
                found.update(self.victims.get(t, ()))
                continue
            try:
                net = ipaddress.ip_network(t, strict=False)
            except ValueError:
                continue
            for victim, seen in self.victims.items():
                if ipaddress.ip_address(victim) in net:
                    found.update(seen)
        return sorted(found)

    def name(self, key: str, targets: list[str], active: bool, now: float) -> list[str]:
        """The exporters to name on an event of incident `key`; remembered while the incident is active."""
        found = self.for_targets(targets, now)
        self.published.pop(key, None)
        if active:
            self.published[key] = (list(targets), found)
            while len(self.published) > MAX_INCIDENTS:
                self.published.popitem(last=False)
        return found

    def grown(self, now: float) -> list[str]:
        """Keys of the active incidents whose targets were seen by exporters they were not published with."""
        return [key for key, (targets, named) in self.published.items()
                if not set(self.for_targets(targets, now)) <= set(named)]

    def forget(self, key: str) -> None:
        self.published.pop(key, None)
