"""Exact interface counters from /sys/class/net/<if>/statistics, and the default-route interface.

The counters are read with pread on descriptors kept open (four small reads per interface and sample).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from floodwatch.errors import CaptureError

SYS_NET = Path("/sys/class/net")
COUNTERS = ("rx_packets", "rx_bytes", "tx_packets", "tx_bytes")
ARPHRD_ETHER, ARPHRD_LOOPBACK, ARPHRD_NONE = 1, 772, 65534


@dataclass(frozen=True)
class IfCounters:
    rx_packets: int
    rx_bytes: int
    tx_packets: int
    tx_bytes: int


class IfStats:
    """Cumulative counters of one interface."""

    def __init__(self, name: str, sys_net: Path = SYS_NET) -> None:
        self.name = name
        base = sys_net / name / "statistics"
        try:
            self._fds = [os.open(base / c, os.O_RDONLY | os.O_CLOEXEC) for c in COUNTERS]
        except OSError as e:
            raise CaptureError(f"interface {name!r}: no counters at {base}: {e.strerror or e}") from e

    def read(self) -> IfCounters:
        try:
            vals = [int(os.pread(fd, 32, 0)) for fd in self._fds]
        except (OSError, ValueError) as e:
            raise CaptureError(f"interface {self.name!r}: counters unreadable: {e}") from e
        return IfCounters(*vals)

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)
        self._fds = []


def if_type(name: str, sys_net: Path = SYS_NET) -> int:
    """ARPHRD_* type of an interface (1 = Ethernet), ARPHRD_ETHER when unknown."""
    try:
        return int((sys_net / name / "type").read_text())
    except (OSError, ValueError):
        return ARPHRD_ETHER


def default_route_interface(proc_net: Path = Path("/proc/net")) -> str:
    """The interface of the default route (lowest metric), IPv4 first, else IPv6; CaptureError if none."""
    best: tuple[int, str] | None = None
    try:
        lines = (proc_net / "route").read_text().splitlines()[1:]
    except OSError:
        lines = []
    for line in lines:
        f = line.split()
        if len(f) >= 8 and f[1] == "00000000" and f[7] == "00000000" and int(f[3], 16) & 1:
            cand = (int(f[6]), f[0])
            best = cand if best is None or cand < best else best
    if best is None:
        try:
            lines6 = (proc_net / "ipv6_route").read_text().splitlines()
        except OSError:
            lines6 = []
        for line in lines6:
            f = line.split()
            if len(f) >= 10 and f[0] == "0" * 32 and f[1] == "00" and f[9] != "lo":
                cand = (int(f[5], 16), f[9])
                best = cand if best is None or cand < best else best
    if best is None:
        raise CaptureError("no default route: name the interface(s) in capture.interfaces instead of 'auto'")
    return best[1]


def resolve_interfaces(names: list[str]) -> list[str]:
    """Config interface names -> real ones ('auto' resolved), without duplicates; CaptureError if missing."""
    out: list[str] = []
    for name in names:
        real = default_route_interface() if name == "auto" else name
        if not (SYS_NET / real).exists():
            raise CaptureError(f"interface {real!r} does not exist (see `ip link`)")
        if real not in out:
            out.append(real)
    return out


def interface_addresses(ifname: str) -> list[str]:
    """The interface's own IPv4 and IPv6 addresses (`ip -j addr`), [] when unknown."""
    try:
        out = subprocess.run(["ip", "-j", "addr", "show", "dev", ifname], capture_output=True, text=True,
                             timeout=5, check=True).stdout
        info = json.loads(out)
    except (OSError, subprocess.SubprocessError, ValueError):
        return []
    return [str(a["local"]) for link in info for a in link.get("addr_info", [])
            if a.get("family") in ("inet", "inet6") and a.get("local")]
