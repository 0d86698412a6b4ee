"""The client's address behind trusted reverse proxies (floodwatch/server/clientaddr.py): the pure
function as a table, and `[apiserver] trusted_proxies` validated when the config is loaded."""

from __future__ import annotations

from pathlib import Path

import pytest

from floodwatch.config import load_config
from floodwatch.errors import ConfigError
from floodwatch.server.clientaddr import client_address, parse_trusted

LOOPBACK = parse_trusted(["127.0.0.1/32"])
TWO_TIERS = parse_trusted(["127.0.0.1", "10.0.0.0/8", "::1", "fd00::/8"])

CASES = [
    # (peer, X-Forwarded-For values, trusted, -> client, malformed)
    ("127.0.0.1", ["203.0.113.5"], (), "127.0.0.1", False),  # no trusted proxies: the header is ignored
    ("127.0.0.1", ["203.0.113.5"], LOOPBACK, "203.0.113.5", False),
    ("127.0.0.1", [], LOOPBACK, "127.0.0.1", False),  # from the proxy itself (a health check)
    ("127.0.0.9", ["203.0.113.5"], LOOPBACK, "127.0.0.9", False),  # forged by a peer we do not trust
    ("198.51.100.7", ["127.0.0.1"], LOOPBACK, "198.51.100.7", False),  # a client claiming to be the proxy
    # appended by each proxy: the rightmost untrusted hop; what the client wrote to its left is not believed
    ("127.0.0.1", ["198.51.100.1, 203.0.113.5"], LOOPBACK, "203.0.113.5", False),
    ("127.0.0.1", ["203.0.113.5, 10.1.2.3"], TWO_TIERS, "203.0.113.5", False),
    ("127.0.0.1", ["203.0.113.5", "10.1.2.3"], TWO_TIERS, "203.0.113.5", False),  # two header lines: one list
    ("127.0.0.1", ["garbage, 203.0.113.5, 10.1.2.3"], TWO_TIERS, "203.0.113.5", False),  # left of it: unread
    ("127.0.0.1", ["10.0.0.4, 10.1.2.3"], TWO_TIERS, "10.0.0.4", False),  # all trusted: the leftmost
    ("127.0.0.1", ["  203.0.113.5  "], LOOPBACK, "203.0.113.5", False),
    ("::1", ["2001:db8::1"], TWO_TIERS, "2001:db8::1", False),
    ("::1", ["2001:DB8:0:0::1"], TWO_TIERS, "2001:db8::1", False),  # one spelling per address
    ("::ffff:127.0.0.1", ["203.0.113.5"], LOOPBACK, "203.0.113.5", False),  # a dual-stack socket's peer
    ("127.0.0.1", ["::ffff:203.0.113.5"], LOOPBACK, "203.0.113.5", False),
    ("fe80::1%eth0", ["203.0.113.5"], parse_trusted(["fe80::/10"]), "203.0.113.5", False),
    # malformed: the peer's address, counted
    ("127.0.0.1", ["not-an-ip"], LOOPBACK, "127.0.0.1", True),
    ("127.0.0.1", ["203.0.113.5:4711"], LOOPBACK, "127.0.0.1", True),  # ports are not addresses
    ("127.0.0.1", ["[2001:db8::1]"], LOOPBACK, "127.0.0.1", True),
    ("127.0.0.1", ["203.0.113.5,"], LOOPBACK, "127.0.0.1", True),  # an empty hop
    ("127.0.0.1", [""], LOOPBACK, "127.0.0.1", True),
    ("127.0.0.1", ["unknown"], LOOPBACK, "127.0.0.1", True),
    ("127.0.0.1", ["203.0.113.5%eth0"], LOOPBACK, "127.0.0.1", True),
    ("127.0.0.1", ["203.0.113.5, 10.1.2.3, x"], TWO_TIERS, "127.0.0.1", True),
    ("127.0.0.1", ["1.2.3.4\x00"], LOOPBACK, "127.0.0.1", True),
    (None, ["203.0.113.5"], LOOPBACK, None, False),  # a Unix socket: no peer address, nothing believed
    ("not-an-ip", ["203.0.113.5"], LOOPBACK, "not-an-ip", False),
]


@pytest.mark.parametrize(("peer", "header", "trusted", "client", "malformed"), CASES)
def test_client_address(peer: str | None, header: list[str], trusted: tuple, client: str | None,
                        malformed: bool) -> None:
    assert client_address(peer, header, trusted) == (client, malformed)


def test_trusted_hops_left_of_the_client_are_never_believed() -> None:
    header = [", ".join(["10.0.0.1"] * 2000 + ["203.0.113.5", "10.0.0.2"])]
    assert client_address("127.0.0.1", header, TWO_TIERS) == ("203.0.113.5", False)


def _config(tmp_path: Path, value: str) -> Path:
    p = tmp_path / "f.toml"
    p.write_text(f"[apiserver]\ntrusted_proxies = {value}\n")
    return p


def test_trusted_proxies_load_from_the_config(tmp_path: Path) -> None:
    c = load_config(_config(tmp_path, '["127.0.0.1/32", "10.0.0.0/8", "::1"]'))
    assert c.apiserver.trusted_proxies == ["127.0.0.1/32", "10.0.0.0/8", "::1"]
    assert load_config(_config(tmp_path, "[]")).apiserver.trusted_proxies == []


@pytest.mark.parametrize(("value", "needle"), [
    ('["10.0.0.1/8"]', "host bits set"),
    ('["localhost"]', "'localhost' is not an address or CIDR"),
    ('["127.0.0.1/33"]', "not an address or CIDR"),
    ('"127.0.0.1/32"', "trusted_proxies"),
    ("[1]", "trusted_proxies"),
])
def test_bad_trusted_proxies_are_refused_at_load(tmp_path: Path, value: str, needle: str) -> None:
    path = _config(tmp_path, value)
    with pytest.raises(ConfigError) as e:
        load_config(path)
    assert "trusted_proxies" in str(e.value) and needle in str(e.value)
