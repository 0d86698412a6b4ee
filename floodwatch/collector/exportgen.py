"""Flow export datagrams built from flow tuples: for the benchmark, `floodwatch analyze` tests and fuzzing.

Not used by the collector itself. Each builder follows the wire format of its RFC (NetFlow v5 as Cisco
documents it, v9 RFC 3954, IPFIX RFC 7011, sFlow v5), so the same bytes a router sends.
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence

# (src, dst, sport, dport, proto, flags, packets, octets)
Flow = tuple[str, str, int, int, int, int, int, int]
# a v4 template: src dst sport dport proto flags ttl packets(4) octets(8)
V4_FIELDS = ((8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (6, 1), (192, 1), (2, 4), (1, 8))


def _a(text: str) -> bytes:
    return ipaddress.ip_address(text).packed


def netflow_v5(flows: Sequence[Flow], sampling: int = 0, seq: int = 0) -> bytes:
    head = struct.pack(">HHIIIIBBH", 5, len(flows), 1000, 1_700_000_000, 0, seq, 0, 0, sampling & 0x3FFF)
    body = b"".join(struct.pack(">4s4s4sHHIIIIHHBBBBHHBBH", _a(s), _a(d), b"\0" * 4, 1, 2, p, o, 0, 0, sp, dp, 0,
                                fl, pr, 0, 0, 0, 0, 0, 0) for s, d, sp, dp, pr, fl, p, o in flows)
    return head + body


def template_set(tid: int, fields: Sequence[tuple[int, int]], ipfix: bool) -> bytes:
    rec = struct.pack(">HH", tid, len(fields)) + b"".join(struct.pack(">HH", ie, n) for ie, n in fields)
    return struct.pack(">HH", 2 if ipfix else 0, 4 + len(rec)) + rec


def options_template_set(tid: int, ipfix: bool, rate_ie: int = 34) -> bytes:
    """One scope field (observation domain / system) and one option: the sampling interval."""
    if ipfix:
        rec = struct.pack(">HHH", tid, 2, 1) + struct.pack(">HHHH", 149, 4, rate_ie, 4)
        return struct.pack(">HH", 3, 4 + len(rec)) + rec
    rec = struct.pack(">HHH", tid, 4, 4) + struct.pack(">HHHH", 1, 4, rate_ie, 4)
    return struct.pack(">HH", 1, 4 + len(rec)) + rec


def options_template(tid: int, scope: Sequence[tuple[int, int]], fields: Sequence[tuple[int, int]],
                     ipfix: bool) -> bytes:
    """An options template set of the given scope and option fields ((IE, length) each)."""
    specs = b"".join(struct.pack(">HH", ie, n) for ie, n in (*scope, *fields))
    if ipfix:  # field count, scope field count
        rec = struct.pack(">HHH", tid, len(scope) + len(fields), len(scope)) + specs
        return struct.pack(">HH", 3, 4 + len(rec)) + rec
    rec = struct.pack(">HHH", tid, 4 * len(scope), 4 * len(fields)) + specs  # v9: lengths in bytes
    return struct.pack(">HH", 1, 4 + len(rec)) + rec


def v4_records(flows: Sequence[Flow], ttl: int = 64) -> bytes:
    return b"".join(struct.pack(">4s4sHHBBBIQ", _a(s), _a(d), sp, dp, pr, fl, ttl, p, o)
                    for s, d, sp, dp, pr, fl, p, o in flows)


def data_set(tid: int, payload: bytes) -> bytes:
    pad = (-len(payload)) % 4
    return struct.pack(">HH", tid, 4 + len(payload) + pad) + payload + b"\0" * pad


def netflow_v9(sets: Sequence[bytes], source_id: int = 0, seq: int = 0) -> bytes:
    return struct.pack(">HHIIII", 9, len(sets), 1000, 1_700_000_000, seq, source_id) + b"".join(sets)


def ipfix(sets: Sequence[bytes], domain: int = 0, seq: int = 0) -> bytes:
    body = b"".join(sets)
    return struct.pack(">HHIII", 10, 16 + len(body), 1_700_000_000, seq, domain) + body


def eth_ipv4_udp(src: str, dst: str, sport: int, dport: int, paylen: int) -> bytes:
    """An Ethernet + IPv4 + UDP frame head (what an sFlow agent copies), payload zeros."""
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 28 + paylen, 0, 0, 64, 17, 0, _a(src), _a(dst))
    return b"\x02" * 6 + b"\x04" * 6 + b"\x08\x00" + ip + struct.pack(">HHHH", sport, dport, 8 + paylen, 0)


def if_counters_sample(if_index: int, speed: int, octets: tuple[int, int], packets: tuple[int, int],
                       errors: tuple[int, int] = (0, 0), discards: tuple[int, int] = (0, 0),
                       expanded: bool = False, seq: int = 0) -> bytes:
    """One sFlow counter sample (compact format 2 or expanded 4) of one generic interface counters record
    (0:1, 88 bytes); `octets`, `packets` ... are (in, out)."""
    rec = struct.pack(">IIQIIQIIIIIIQIIIIII", if_index, 6, speed, 1, 3, octets[0], packets[0], 0, 0, discards[0],
                      errors[0], 0, octets[1], packets[1], 0, 0, discards[1], errors[1], 0)
    record = struct.pack(">II", 1, len(rec)) + rec
    if expanded:
        body = struct.pack(">IIII", seq, 0, if_index, 1) + record
    else:
        body = struct.pack(">III", seq, if_index, 1) + record
    return struct.pack(">II", 4 if expanded else 2, len(body)) + body


def sflow_v5(headers: Sequence[tuple[bytes, int]], rate: int, agent: str = "192.0.2.1", seq: int = 0,
             counters: int = 0, extra: Sequence[bytes] = (), expanded: bool = False) -> bytes:
    """(frame head, frame length) per flow sample (compact, format 1, or expanded, format 3), all at 1 in
    `rate`; plus `counters` empty counter samples and the `extra` samples as they are."""
    samples = []
    for i, (head, frame_len) in enumerate(headers):
        pad = (-len(head)) % 4
        raw = struct.pack(">IIII", 1, frame_len, 0, len(head)) + head + b"\0" * pad
        rec = struct.pack(">II", 1, len(raw)) + raw
        if expanded:  # source id type and index, interfaces as (format, value)
            body = struct.pack(">IIIIIIIIIII", seq + i, 0, 1, rate, rate * (seq + i), 0, 0, 1, 0, 2, 1) + rec
        else:
            body = struct.pack(">IIIIIIII", seq + i, 1, rate, rate * (seq + i), 0, 1, 2, 1) + rec
        samples.append(struct.pack(">II", 3 if expanded else 1, len(body)) + body)
    for i in range(counters):
        cbody = struct.pack(">III", i, 1, 0)  # seq, source, no records
        samples.append(struct.pack(">II", 2, len(cbody)) + cbody)
    samples.extend(extra)
    head = struct.pack(">II4sIIII", 5, 1, _a(agent), 0, seq, 1000, len(samples))
    return head + b"".join(samples)
