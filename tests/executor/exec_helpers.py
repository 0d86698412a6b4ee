"""Helpers for the executor tests: a private network namespace with the agent's objects in it."""

from __future__ import annotations

import ipaddress
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from floodwatch.executor.hostfacts import HostFacts
from tests.helpers import have_root_netns

_OK: bool | None = None


def require_netns() -> None:
    global _OK
    if _OK is None:
        _OK = have_root_netns()
    if not _OK:
        pytest.skip("needs root and network namespaces (ip netns)")


@dataclass
class Netns:
    name: str
    iface: str  # a veth inside the namespace, for tc

    @property
    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def run(self, *argv: str, check: bool = True) -> str:
        proc = subprocess.run([*self.prefix, *argv], capture_output=True, text=True, check=False, timeout=30)
        if check and proc.returncode != 0:
            raise AssertionError(f"{argv} failed: {proc.stderr}")
        return proc.stdout

    def iptables(self, prog: str = "iptables") -> str:
        return self.run(prog, "-S")

    def ipset(self, name: str) -> str:
        return self.run("ipset", "list", name, check=False)

    def nft(self) -> str:
        return self.run("nft", "list", "ruleset")

    def sysctl(self, key: str) -> str:
        return self.run("sysctl", "-n", key).strip()


@contextmanager
def netns(objects: bool = True) -> Iterator[Netns]:
    """A fresh namespace `fwex<hex>` (deleted afterwards, whatever happens) with the agent's objects:
    the FLOODWATCH chain (v4 and v6), the nft table inet floodwatch with chain input and set blk."""
    require_netns()
    tag = secrets.token_hex(3)
    ns = Netns(f"fwex{tag}", f"fwex{tag}a")
    subprocess.run(["ip", "netns", "add", ns.name], check=True, capture_output=True)
    try:
        ns.run("ip", "link", "add", ns.iface, "type", "veth", "peer", "name", f"fwex{tag}b")
        ns.run("ip", "link", "set", "lo", "up")
        if objects:
            for prog in ("iptables", "ip6tables"):
                ns.run(prog, "-N", "FLOODWATCH")
            ns.run("nft", "add", "table", "inet", "floodwatch")
            ns.run("nft", "add", "chain", "inet", "floodwatch", "input", "{", "type", "filter", "hook", "input",
                   "priority", "0", ";", "}")
            ns.run("nft", "add", "set", "inet", "floodwatch", "blk", "{", "type", "ipv4_addr", ";", "flags",
                   "interval,timeout", ";", "}")
            ns.run("ipset", "create", "floodwatch_block", "hash:net", "timeout", "0")
        yield ns
    finally:
        subprocess.run(["ip", "netns", "del", ns.name], capture_output=True)


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    return ipaddress.ip_address(text)


# A host as the pure tests see it: addresses in 10.20.0.0/24 and fd00:20::/64, a gateway, a resolver,
# the API server, one SSH session, and services on tcp 22, 443, 8080 and udp 5353.
FACTS = HostFacts(
    own=(_ip("10.20.0.5"), _ip("fd00:20::5"), _ip("127.0.0.1"), _ip("::1")),
    gateways=(_ip("10.20.0.1"), _ip("fe80::1")),
    resolvers=(_ip("10.20.0.53"),),
    api_servers=((_ip("10.30.0.80"), 443),),
    ssh_peers=(_ip("10.40.0.22"),),
    listening=frozenset({("tcp", 22), ("tcp", 443), ("tcp", 8080), ("udp", 5353)}),
    sysctl={"net.ipv4.tcp_syncookies": 1, "net.ipv4.icmp_ratelimit": 1000, "net.ipv4.tcp_synack_retries": 5,
            "net.ipv4.tcp_max_syn_backlog": 1024},
)
