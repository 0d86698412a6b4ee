"""Helpers for the executor tests: a private network namespace with the agent's objects in it."""

from __future__ import annotations

import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

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
