"""The host's facts the safety policy needs, gathered without a shell: own addresses, default gateways,
DNS resolvers, the API server, SSH session peers, listening ports and the current sysctl values.

`HostFacts` is a plain value (tests inject one); `FactsSource` reads /proc, `ip -j addr`, `ip -j route`
and resolv.conf, through the executor's Runner (so `argv_prefix` reads another namespace's facts), and
keeps them for a couple of seconds.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from floodwatch.executor.runner import Runner

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
RESOLV_FILES = ("/etc/resolv.conf", "/run/systemd/resolve/resolv.conf")
_TCP_ESTABLISHED, _TCP_LISTEN, _UDP_UNCONNECTED = "01", "0A", "07"


@dataclass(frozen=True)
class HostFacts:
    own: tuple[IPAddress, ...] = ()
    gateways: tuple[IPAddress, ...] = ()
    resolvers: tuple[IPAddress, ...] = ()
    api_servers: tuple[tuple[IPAddress, int], ...] = ()  # (address, port) the reporter talks to
    ssh_peers: tuple[IPAddress, ...] = ()  # remote ends of established connections to an SSH port
    listening: frozenset[tuple[str, int]] = frozenset()  # ("tcp"|"udp", port) of local listening sockets
    sysctl: dict[str, int] = field(default_factory=dict)  # current values of the keys the policy knows
    ephemeral: tuple[int, int] = (32768, 60999)  # local ports of outgoing connections (ip_local_port_range)


def parse_proc_net(text: str) -> list[tuple[IPAddress, int, IPAddress, int, str]]:
    """/proc/net/{tcp,udp}{,6} -> (local addr, port, remote addr, port, state hex)."""
    out = []
    for line in text.splitlines()[1:]:
        cols = line.split()
        if len(cols) < 4:
            continue
        try:
            (la, lp), (ra, rp) = _endpoint(cols[1]), _endpoint(cols[2])
        except ValueError:
            continue
        out.append((la, lp, ra, rp, cols[3].upper()))
    return out


def _endpoint(text: str) -> tuple[IPAddress, int]:
    hex_addr, hex_port = text.split(":")
    raw = bytes.fromhex(hex_addr)
    # the kernel prints each 32-bit word in host (little-endian) order
    packed = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(packed), int(hex_port, 16)


def sockets_facts(tables: dict[str, str], ssh_ports: Iterable[int]
                  ) -> tuple[frozenset[tuple[str, int]], tuple[IPAddress, ...]]:
    """{'tcp': text of tcp+tcp6, 'udp': ...} -> listening (proto, port) and SSH session peers."""
    ssh = set(ssh_ports)
    listening: set[tuple[str, int]] = set()
    peers: list[IPAddress] = []
    for proto, text in tables.items():
        for _la, lp, ra, rp, state in parse_proc_net(text):
            if (proto, state) in (("tcp", _TCP_LISTEN), ("udp", _UDP_UNCONNECTED)) and rp == 0:
                listening.add((proto, lp))
            elif proto == "tcp" and state == _TCP_ESTABLISHED and lp in ssh and ra not in peers:
                peers.append(_unmap(ra))
    return frozenset(listening), tuple(peers)


def _unmap(a: IPAddress) -> IPAddress:
    return a.ipv4_mapped if isinstance(a, ipaddress.IPv6Address) and a.ipv4_mapped else a


def parse_ip_addr(text: str) -> tuple[IPAddress, ...]:
    out = []
    for link in json.loads(text or "[]"):
        for info in link.get("addr_info", []):
            try:
                out.append(ipaddress.ip_address(info["local"]))
            except (KeyError, ValueError):
                continue
    return tuple(out)


def parse_ip_route(text: str) -> tuple[IPAddress, ...]:
    out = []
    for route in json.loads(text or "[]"):
        for hop in [route, *route.get("nexthops", [])]:
            try:
                out.append(ipaddress.ip_address(str(hop["gateway"]).split("%")[0]))
            except (KeyError, ValueError):
                continue
    return tuple(out)


def parse_resolv_conf(text: str) -> tuple[IPAddress, ...]:
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == "nameserver":
            try:
                out.append(ipaddress.ip_address(words[1].split("%")[0]))
            except ValueError:
                continue
    return tuple(out)


def api_endpoint(url: str, resolve: Callable[[str, int], list[IPAddress]]) -> tuple[tuple[IPAddress, int], ...]:
    """The reporter's URL -> the (address, port) pairs it connects to (names resolved)."""
    if not url:
        return ()
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    try:
        return ((ipaddress.ip_address(host), port),)
    except ValueError:
        return tuple((a, port) for a in resolve(host, port))


def resolve_host(host: str, port: int) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return sorted({ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos}, key=str)


class FactsSource:
    """Reads the facts (through `runner`, which may carry a namespace prefix) and caches them `ttl` s."""

    def __init__(self, runner: Runner, ssh_ports: Iterable[int], sysctl_keys: Iterable[str], api_url: str = "",
                 resolv_files: Iterable[str] = RESOLV_FILES, ttl: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 resolve: Callable[[str, int], list[IPAddress]] = resolve_host) -> None:
        self.runner, self.ttl, self.clock = runner, ttl, clock
        self.ssh_ports, self.sysctl_keys = tuple(ssh_ports), tuple(sysctl_keys)
        self.resolv_files = tuple(resolv_files)
        self.api_url, self.resolve = api_url, resolve
        self._api: tuple[float, tuple[tuple[IPAddress, int], ...]] = (-1e18, ())
        self._cached: tuple[float, HostFacts] | None = None

    def __call__(self) -> HostFacts:
        now = self.clock()
        if self._cached is None or now - self._cached[0] > self.ttl:
            self._cached = (now, self.gather())
        return self._cached[1]

    def _run(self, *argv: str) -> str:
        result = self.runner.run(list(argv))
        return result.output if result.ok else ""

    def _read(self, path: str) -> str:
        if self.runner.prefix:  # another namespace: /proc/net is read from inside it
            return self._run("cat", path)
        try:
            return Path(path).read_text(errors="replace")
        except OSError:
            return ""

    def gather(self) -> HostFacts:
        tables = {proto: self._read(f"/proc/net/{proto}") + "\n" + "\n".join(
            self._read(f"/proc/net/{proto}6").splitlines()[1:]) for proto in ("tcp", "udp")}
        listening, peers = sockets_facts(tables, self.ssh_ports)
        resolvers: list[IPAddress] = []
        for path in self.resolv_files:
            try:
                resolvers += [a for a in parse_resolv_conf(Path(path).read_text()) if a not in resolvers]
            except OSError:
                continue
        routes = self._run("ip", "-j", "-4", "route", "show", "default") or "[]"
        routes6 = self._run("ip", "-j", "-6", "route", "show", "default") or "[]"
        return HostFacts(own=parse_ip_addr(self._run("ip", "-j", "addr", "show")),
                         gateways=parse_ip_route(routes) + parse_ip_route(routes6), resolvers=tuple(resolvers),
                         api_servers=self._api_servers(), ssh_peers=peers, listening=listening,
                         sysctl=self._sysctls(), ephemeral=self._ephemeral())

    def _ephemeral(self) -> tuple[int, int]:
        words = self._read("/proc/sys/net/ipv4/ip_local_port_range").split()
        if len(words) == 2 and all(w.isdigit() for w in words) and int(words[0]) <= int(words[1]):
            return int(words[0]), int(words[1])
        return HostFacts.ephemeral

    def _api_servers(self) -> tuple[tuple[IPAddress, int], ...]:
        stamp, known = self._api
        if self.clock() - stamp > 60.0:  # a name is resolved at most once a minute
            self._api = (self.clock(), api_endpoint(self.api_url, self.resolve))
        return self._api[1] or known

    def _sysctls(self) -> dict[str, int]:
        out = {}
        for key in self.sysctl_keys:
            text = self._read("/proc/sys/" + key.replace(".", "/")).strip()
            if text.isdigit():
                out[key] = int(text)
        return out
