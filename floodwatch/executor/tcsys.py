"""tc (the agent's own root qdisc on a monitored interface) and sysctl (allowlisted keys, one at a time).

tc:     tc qdisc add dev IFACE root handle H: tbf rate RATE burst SIZE latency TIME
        (not `replace`: it would destroy a root qdisc the admin set up, and undo could not bring it back)
        tc qdisc del dev IFACE root handle H:
sysctl: sysctl [-w] KEY=INTEGER     (one key from sysctl_keys; the old value is restored on undo)
"""

from __future__ import annotations

import re

from floodwatch.errors import CommandRejected
from floodwatch.executor import addr
from floodwatch.executor.match import QDISC, SYSCTL, Match
from floodwatch.executor.plan import ADDS, REMOVES, Plan
from floodwatch.settings.executor import ExecutorSettings, tc_rate_bits

_RATE = re.compile(r"[1-9][0-9]{0,9}(bit|kbit|mbit|gbit|bps|kbps|mbps)")
_SIZE = re.compile(r"([1-9][0-9]{0,9})(b|k|kb|kbit|m|mb|mbit)?")
_SIZE_BYTES = {"": 1, "b": 1, "k": 1024, "kb": 1024, "kbit": 128, "m": 1 << 20, "mb": 1 << 20, "mbit": 1 << 17}
_TIME = re.compile(r"[1-9][0-9]{0,6}(us|ms|s)")
# Ranges of known keys; other allowlisted keys take 0..2**31-1.
SYSCTL_RANGES = {
    "net.ipv4.tcp_syncookies": (0, 2),
    "net.ipv4.tcp_synack_retries": (1, 10),
    "net.ipv4.tcp_max_syn_backlog": (128, 1 << 24),
    "net.ipv4.icmp_echo_ignore_all": (0, 1),
    "net.ipv4.icmp_echo_ignore_broadcasts": (0, 1),
    "net.ipv4.icmp_ratelimit": (0, 100000),
    "net.ipv6.icmp.ratelimit": (0, 100000),
}


def _tbf(words: list[str]) -> list[str]:
    pattern = {"rate": _RATE, "burst": _SIZE, "latency": _TIME}
    if len(words) != 7 or words[0] != "tbf":
        raise CommandRejected("tc: only `tbf rate R burst B latency L` qdiscs are allowed")
    out = ["tbf"]
    for key, value in zip(words[1::2], words[2::2], strict=True):
        if key not in pattern or key in out or not pattern[key].fullmatch(value):
            raise CommandRejected(f"tc: `{key} {value}` is not allowed")
        out += [key, value]
    return out


def validate_tc(argv: list[str], s: ExecutorSettings) -> Plan:
    if len(argv) < 8 or argv[1] != "qdisc" or argv[2] not in ("add", "del") or argv[3] != "dev":
        raise CommandRejected("tc: expected `tc qdisc add|del dev IFACE root handle H: ...`")
    iface = addr.check_iface(argv[4])
    if iface not in s.tc_interfaces:
        raise CommandRejected(f"tc: interface {iface!r} is not a monitored interface ({s.tc_interfaces})")
    handle = f"{s.tc_handle}:"
    if argv[5:8] != ["root", "handle", handle]:
        raise CommandRejected(f"tc: only the agent's root qdisc `root handle {handle}` may be changed")
    head = ["tc", "qdisc"]
    where = ["dev", iface, "root", "handle", handle]
    identity = f"tc {iface} {handle}"
    if argv[2] == "del":
        if len(argv) != 8:
            raise CommandRejected("tc: `del` takes nothing after the handle")
        return Plan("tc", [*head, "del", *where], REMOVES, identity=identity, summary=f"delete {identity}")
    qdisc = _tbf(argv[8:])
    values = dict(zip(qdisc[1::2], qdisc[2::2], strict=True))
    size = _SIZE.fullmatch(values["burst"])
    assert size is not None  # checked by _tbf
    match = Match(QDISC, "tc", rate_bits=tc_rate_bits(values["rate"]),
                  burst_bytes=int(size.group(1)) * _SIZE_BYTES[size.group(2) or ""])
    return Plan("tc", [*head, argv[2], *where, *qdisc], ADDS, undo=[*head, "del", *where], identity=identity,
                summary=f"set {identity} {' '.join(qdisc)}", match=match)


def validate_sysctl(argv: list[str], s: ExecutorSettings) -> Plan:
    words = argv[1:]
    if words and words[0] in ("-w", "--write"):
        words = words[1:]
    if len(words) != 1:
        raise CommandRejected("sysctl: exactly one KEY=VALUE per command (no other options)")
    if words[0].count("=") != 1:
        raise CommandRejected("sysctl: expected KEY=VALUE")
    key, value = words[0].split("=")
    if key not in s.sysctl_keys:
        raise CommandRejected(f"sysctl: key {key!r} is not allowed (allowed: {', '.join(s.sysctl_keys)})")
    lo, hi = SYSCTL_RANGES.get(key, (0, 2**31 - 1))
    number = addr.parse_int(value, lo, hi, key)
    return Plan("sysctl", ["sysctl", "-w", f"{key}={number}"], ADDS, undo=None, identity=f"sysctl {key}",
                summary=f"set {key}={number}", sysctl_key=key,
                match=Match(SYSCTL, "sysctl", sysctl_key=key, sysctl_value=number))
