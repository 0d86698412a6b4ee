"""[[hostgroup]] config sections: a prefix of the protected network with its own victim thresholds.

A /24 of game servers is not a /24 of mail servers: each group sets the packets/s and bits/s at which an
address (and the group's carpet prefix) of its prefixes counts as attacked, instead of the detector's
victim thresholds. The first group whose prefix holds an address applies.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field


@dataclass(frozen=True)
class HostGroupSettings:
    name: str = ""
    prefixes: list[str] = field(default_factory=list)
    pps_threshold: int = 0  # per address of the group; 0 = the detector's victim threshold
    bps_threshold: int = 0

    def validate(self) -> None:
        if not self.name or not self.prefixes:
            raise ValueError("name/prefixes: a host group needs a name and at least one prefix")
        for p in self.prefixes:
            try:
                ipaddress.ip_network(p, strict=False)
            except ValueError as e:
                raise ValueError(f"prefixes: {p!r} is not a prefix") from e
        if self.pps_threshold < 0 or self.bps_threshold < 0:
            raise ValueError("pps_threshold/bps_threshold: must be >= 0")
