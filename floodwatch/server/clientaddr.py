"""The client's address behind trusted reverse proxies (`[apiserver] trusted_proxies`, docs/server.md).

Behind nginx every connection comes from the proxy. When, and only when, the TCP peer is one of the
trusted proxies, the client is the rightmost address of `X-Forwarded-For` that is not itself a trusted
proxy: each proxy appends the address it got the request from, so everything to the left of the last
untrusted hop was written by someone we do not trust. A peer that is not a trusted proxy is the
client, whatever it sends. A malformed header (not a list of IP addresses) is not guessed at: the
peer's address is used and the server counts it. Pure functions; the middleware in app.py applies it,
once per request, and hands on `request.remote` = the client's address (the sign-in limits, the admin
API's and /metrics' loopback checks and the access log all read that). Connection caps stay per TCP
peer (listening.py): they count connections, which come from the proxy.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

CLIENT_KEY = "fw_client"  # the original request's client address, for the access log (listening.py)
FORWARDED_FOR = "X-Forwarded-For"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_trusted(items: Iterable[str]) -> tuple[Network, ...]:
    """`["127.0.0.1/32", "10.0.0.0/8", "::1"]` -> networks (a bare address is one host); ValueError
    naming the bad entry, e.g. host bits set ("10.0.0.1/8": meant 10.0.0.0/8?)."""
    out = []
    for item in items:
        if not isinstance(item, str):
            raise ValueError(f"trusted_proxies: {item!r} is not a string (CIDR such as \"127.0.0.1/32\")")
        try:
            out.append(ipaddress.ip_network(item.strip(), strict=True))
        except ValueError as e:
            raise ValueError(f"trusted_proxies: {item!r} is not an address or CIDR network ({e})") from None
    return tuple(out)


def _address(text: str, zone: bool = False) -> Address | None:
    """An address (a peer's may carry a `%zone`; a forwarded one may not), IPv4-mapped IPv6 as IPv4."""
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0] if zone else text.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped  # a dual-stack socket's ::ffff:10.0.0.1 is 10.0.0.1
    return addr


def _trusted(addr: Address, trusted: Sequence[Network]) -> bool:
    return any(addr.version == net.version and addr in net for net in trusted)


def client_address(peer: str | None, forwarded_for: Sequence[str],
                   trusted: Sequence[Network]) -> tuple[str | None, bool]:
    """(the client's address, whether X-Forwarded-For was malformed). `forwarded_for`: the header's
    values in order (several header lines are one comma-separated list). Without trusted proxies, or
    from a peer that is not one, or without the header: the peer, header ignored. All hops trusted:
    the leftmost (the request began on a trusted host)."""
    if not trusted or peer is None or not forwarded_for:
        return peer, False
    peer_addr = _address(peer, zone=True)
    if peer_addr is None or not _trusted(peer_addr, trusted):
        return peer, False
    hops = ",".join(forwarded_for).split(",")
    chosen: Address | None = None
    for hop in reversed(hops):
        addr = _address(hop)
        if addr is None:
            return peer, True
        chosen = addr
        if not _trusted(addr, trusted):
            break
    return (str(chosen), False) if chosen is not None else (peer, True)
