"""Addresses, prefixes, ports, rates and durations as a command may write them, parsed strictly."""

from __future__ import annotations

import ipaddress
import re

from floodwatch.errors import CommandRejected

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_INT = re.compile(r"^[0-9]{1,10}$")
_RATE_UNITS = {"second": "second", "sec": "second", "s": "second", "minute": "minute", "min": "minute",
               "m": "minute", "hour": "hour", "h": "hour", "day": "day", "d": "day"}


def parse_int(text: str, lo: int, hi: int, what: str) -> int:
    if not _INT.match(text):
        raise CommandRejected(f"{what}: {text!r} is not a number")
    value = int(text)
    if not lo <= value <= hi:
        raise CommandRejected(f"{what}: {value} is outside {lo}..{hi}")
    return value


def parse_network(text: str, family: int | None = None) -> Network:
    """'1.2.3.4', '10.0.0.0/8', '2001:db8::/32' -> a network; host bits must be zero."""
    if not re.fullmatch(r"[0-9A-Fa-f.:/]{2,43}", text):
        raise CommandRejected(f"address: {text!r} is not an IP address or prefix")
    try:
        net = ipaddress.ip_network(text, strict=True)
    except ValueError as e:
        raise CommandRejected(f"address: {text!r}: {e}") from e
    if family is not None and net.version != family:
        raise CommandRejected(f"address: {text!r} is not IPv{family}")
    return net


def net_text(net: Network) -> str:
    """A network as rendered into argv: a bare address for a host, else address/prefix."""
    return str(net.network_address) if net.prefixlen == net.max_prefixlen else str(net)


def parse_port_range(text: str, sep: str = ":") -> tuple[int, int]:
    """'80' or '1000:2000' (nft: '1000-2000') -> (lo, hi), 1..65535 (0 allowed as a source port)."""
    parts = text.split(sep)
    if len(parts) > 2:
        raise CommandRejected(f"port: {text!r} is not a port or range")
    lo = parse_int(parts[0], 0, 65535, "port")
    hi = parse_int(parts[1], 0, 65535, "port") if len(parts) == 2 else lo
    if hi < lo:
        raise CommandRejected(f"port: range {text!r} is reversed")
    return lo, hi


def port_text(rng: tuple[int, int], sep: str = ":") -> str:
    return str(rng[0]) if rng[0] == rng[1] else f"{rng[0]}{sep}{rng[1]}"


def parse_rate(text: str) -> tuple[int, str]:
    """'100/second', '10/s', '5/minute' -> (count, unit)."""
    m = re.fullmatch(r"([0-9]{1,9})/([a-z]{1,6})", text)
    if not m or m.group(2) not in _RATE_UNITS:
        raise CommandRejected(f"rate: {text!r} is not N/second|minute|hour|day")
    count = parse_int(m.group(1), 1, 100_000_000, "rate")
    return count, _RATE_UNITS[m.group(2)]


def parse_duration(text: str, max_seconds: float) -> int:
    """'600', '600s', '10m', '2h' -> seconds, 1..max_seconds."""
    m = re.fullmatch(r"([0-9]{1,7})([smhd]?)", text)
    if not m:
        raise CommandRejected(f"timeout: {text!r} is not a duration")
    seconds = int(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    if not 1 <= seconds <= max_seconds:
        raise CommandRejected(f"timeout: {seconds} s is outside 1..{max_seconds:g}")
    return seconds


def check_name(text: str, what: str, prefix: str = "") -> str:
    """A chain/set/table name: letters, digits, _ and -; optionally must start with `prefix`."""
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,30}", text):
        raise CommandRejected(f"{what}: {text!r} is not a valid name")
    if prefix and not text.startswith(prefix):
        raise CommandRejected(f"{what}: {text!r} is not the agent's own (names start with {prefix!r})")
    return text


def check_iface(text: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,14}", text):
        raise CommandRejected(f"interface: {text!r} is not a valid interface name")
    return text
