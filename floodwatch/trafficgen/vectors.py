"""Every attack vector the detector names, as frame factories (IPv4 and IPv6), plus benign traffic.

`frames_for(spec)` returns a pool of distinct frames (different sources, ports, ids) that a writer or
a sender cycles through. Deterministic for a given seed.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass

from floodwatch.trafficgen import packets as P

# reflection protocol -> (reflector source port, response payload head, payload length)
_DNS_RESP = b"\x12\x34\x81\x80\x00\x01\x00\x08\x00\x00\x00\x01\x03isc\x03org\x00\x00\xff\x00\x01"
REFLECTION: dict[str, tuple[int, bytes, int]] = {
    "dns": (53, _DNS_RESP, 1200),
    "ntp": (123, b"\xd7\x00\x03\x2a\x00\x06\x00\x48", 440),
    "ssdp": (1900, b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=1800\r\nST: upnp:rootdevice\r\n", 320),
    "memcached": (11211, b"\x00\x01\x00\x00\x00\x01\x00\x00STAT pid 2114\r\nSTAT uptime 86400\r\n", 1400),
    "cldap": (389, b"\x30\x84\x00\x00\x0b\xde\x02\x01\x01\x64\x84\x00\x00\x0b\xd5\x04\x00", 1400),
    "chargen": (19, b"", 1000),
    "snmp": (161, b"\x30\x82\x05\xdc\x02\x01\x01\x04\x06public\xa2\x82\x05\xcd", 1400),
    "netbios": (137, b"\x80\x01\x84\x00\x00\x00\x00\x01\x00\x00\x00\x00", 260),
    "qotd": (17, b"\"The only way to do great work is to love what you do.\"\r\n", 120),
    "mdns": (5353, b"\x00\x00\x84\x00\x00\x00\x00\x05\x00\x00\x00\x00", 600),
    "ws_discovery": (3702, b"<?xml version=\"1.0\" encoding=\"utf-8\"?><soap:Envelope", 1200),
    "portmap": (111, b"\x12\x34\x56\x78\x00\x00\x00\x01\x00\x00\x00\x00", 600),
    "rip": (520, b"\x02\x02\x00\x00", 504),
    "tftp": (69, b"\x00\x03\x00\x01", 516),
    "arms": (3283, b"\x00\x14\x00\x01\x03", 1000),
    "openvpn": (1194, b"\x40\x9a\xf1\x2c\x55\x10\x01\x00", 120),
    "coap": (5683, b"\x60\x45\x00\x01\xc1\x28", 1000),
    "slp": (427, b"\x02\x02\x00\x05\x00\x00\x00\x00", 1000),
    "sip": (5060, b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.0.0.1\r\n", 600),
    "isakmp": (500, b"\x6a\x3f\x12\x01\x00\x00\x00\x00", 400),
    "ubiquiti": (10001, b"\x01\x00\x00\x90\x02\x00\x0a", 160),
    "bacnet": (47808, b"\x81\x0a\x00\x11\x01\x00\x30\x01", 500),
    "dvr": (37810, b"\x00\x00\x00\x00", 600),
    "mssql": (1434, b"\x05\x00\x01ServerName;SQL01;InstanceName;", 500),
    "steam": (27015, b"\xff\xff\xff\xffI\x11Game Server\x00", 1000),
}
_CHARGEN = "".join(chr(c) for c in range(33, 127))
TCP_VECTORS = {"syn_flood": "S", "synack_reflection": "SA", "ack_flood": "A", "rst_flood": "R",
               "fin_flood": "F", "psh_ack_flood": "PA", "xmas_flood": "FPU", "null_flood": "",
               "syn_ece_flood": "SEC"}
OTHER_VECTORS = ("udp_flood", "icmp_flood", "fragment_flood", "dns_query_flood", "http_flood", "multi_vector",
                 "web_dns_mix", "malformed_flood")
VECTORS = tuple(f"{n}_amplification" for n in REFLECTION) + tuple(TCP_VECTORS) + OTHER_VECTORS
# sources are real hosts (reflectors, a botnet, clients): the rest are spoofed by default
REAL_SOURCES = {*(f"{n}_amplification" for n in REFLECTION), "synack_reflection", "http_flood",
                "dns_query_flood", "web_dns_mix"}


@dataclass(frozen=True)
class VectorSpec:
    vector: str
    v6: bool = False
    dst: str = ""  # the victim; default 198.18.0.1 / fd00::1
    sources: int = 2000
    spoofed: bool | None = None  # None: the vector's usual kind
    ttl: int = 0  # 0: 242 for spoofed IPv4 (64 for IPv6), real-looking spread otherwise
    variety: int = 2048  # distinct frames in the pool
    seed: int = 1
    dst_mac: bytes = P.BROADCAST
    sport: str = ""  # "" the vector's usual, "random" (uniform 0-65535) or a port number
    dport: str = ""
    dst_spread: int = 0  # random destinations in the victim's /N (0: the victim alone)

    def victim(self) -> str:
        return self.dst or ("fd00::1" if self.v6 else "198.18.0.1")


def port_choice(text: str) -> Callable[[random.Random, int], int]:
    """--sport/--dport: "" keeps the vector's port, "random" draws 0-65535, a number fixes it."""
    if text in ("", "random"):
        return (lambda rng, usual: rng.randint(0, 65535)) if text else (lambda rng, usual: usual)
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ValueError(f"port {text!r} is not 0-65535 or 'random'")
    return lambda rng, usual: port


class _Sources:
    def __init__(self, spec: VectorSpec, rng: random.Random) -> None:
        spoofed = spec.spoofed if spec.spoofed is not None else spec.vector not in REAL_SOURCES
        self.rng = rng
        self.pool: list[tuple[bytes, int]] = []
        for _ in range(max(1, spec.sources)):
            a = self._random_addr(spec.v6)
            if spoofed:
                ttl = spec.ttl or (64 if spec.v6 else 242)
            else:
                ttl = spec.ttl or rng.choice((64, 128, 255)) - rng.randint(4, 22)
            self.pool.append((a, ttl))

    def _random_addr(self, v6: bool) -> bytes:
        if v6:
            return bytes.fromhex("20010db8") + self.rng.randbytes(12)
        while True:
            first = self.rng.randint(1, 223)
            if first not in (10, 127, 169, 172, 192, 198):
                return bytes([first]) + self.rng.randbytes(3)

    def pick(self, i: int) -> tuple[bytes, int]:
        return self.pool[i % len(self.pool)]


def _payload(head: bytes, length: int, rng: random.Random) -> bytes:
    return head + rng.randbytes(max(0, length - len(head)))


def _chargen(i: int, length: int) -> bytes:
    line = ((_CHARGEN * 2)[i % 94 : i % 94 + 72] + "\r\n").encode()
    return (line * (length // len(line) + 1))[:length]


Builder = Callable[[int, bytes, int, bytes, random.Random], bytes]  # i, src, ttl, dst, rng -> IP packet
PortFn = Callable[[random.Random, int], int]  # (rng, the vector's usual port) -> the port to use
_USUAL: PortFn = port_choice("")


def _reflection(name: str, sport: PortFn = _USUAL, dport: PortFn = _USUAL) -> Builder:
    port, head, length = REFLECTION[name]

    def build(i: int, src: bytes, ttl: int, dst: bytes, rng: random.Random) -> bytes:
        pay = _chargen(i, length) if name == "chargen" else _payload(head, length, rng)
        seg = P.udp(src, dst, sport(rng, port), dport(rng, rng.randint(1024, 65535)), pay)
        return P.ip_packet(src, dst, P.PROTO_UDP, seg, ttl, i)

    return build


def _tcp(name: str) -> Builder:
    flags = P.flags_byte(TCP_VECTORS[name])

    def build(i: int, src: bytes, ttl: int, dst: bytes, rng: random.Random) -> bytes:
        sport = rng.choice((80, 443)) if name == "synack_reflection" else rng.randint(1024, 65535)
        dport = rng.randint(1024, 65535) if name == "synack_reflection" else 80
        pay = rng.randbytes(64) if name == "psh_ack_flood" else b""
        ack = rng.getrandbits(32) if flags & 0x10 else 0
        seg = P.tcp(src, dst, sport, dport, flags, rng.getrandbits(32), ack, pay, 0 if flags == 2 else 64240)
        return P.ip_packet(src, dst, P.PROTO_TCP, seg, ttl, i)

    return build


def _udp_flood(sport: PortFn = _USUAL, dport: PortFn = _USUAL) -> Builder:
    def build(i: int, src: bytes, ttl: int, dst: bytes, rng: random.Random) -> bytes:
        seg = P.udp(src, dst, sport(rng, rng.randint(1024, 65535)), dport(rng, rng.randint(1, 65535)),
                    rng.randbytes(rng.randint(64, 512)))
        return P.ip_packet(src, dst, P.PROTO_UDP, seg, ttl, i)

    return build


def _malformed(i: int, src: bytes, ttl: int, dst: bytes, rng: random.Random) -> bytes:
    """Random bytes where the IP header should be (the frame says IPv4 or IPv6 all the same)."""
    return rng.randbytes(rng.randint(46, 200))


def _icmp_flood(i: int, src: bytes, ttl: int, dst: bytes, rng: random.Random) -> bytes:
    v6 = len(src) == 16
    body = P.icmp(src, dst, 128 if v6 else 8, 0, i & 0xFFFF, i & 0xFFFF, rng.randbytes(56), v6)
    return P.ip_packet(src, dst, P.PROTO_ICMP6 if v6 else P.PROTO_ICMP, body, ttl, i)


def _fragment_flood(i: int, src: bytes, ttl: int, dst: bytes, rng: random.Random) -> bytes:
    first = i % 4 == 0
    chunk = P.udp(src, dst, rng.randint(1024, 65535), 80, rng.randbytes(1000)) if first else rng.randbytes(1008)
    offset = 0 if first else 1008 * (i % 4)
    if len(src) == 16:
        return P.ipv6_fragment(src, dst, P.PROTO_UDP, chunk, ttl, i // 4, offset, True)
    return P.ipv4(src, dst, P.PROTO_UDP, chunk, ttl, i // 4, offset, True)


def _dns_query(sport: PortFn = _USUAL, dport: PortFn = _USUAL) -> Builder:
    def build(i: int, src: bytes, ttl: int, dst: bytes, rng: random.Random) -> bytes:
        label = f"{rng.getrandbits(40):x}".encode()
        q = struct.pack("!HHHHHH", i & 0xFFFF, 0x0100, 1, 0, 0, 0) + bytes([len(label)]) + label
        q += b"\x07example\x03com\x00\x00\x01\x00\x01"
        seg = P.udp(src, dst, sport(rng, rng.randint(1024, 65535)), dport(rng, 53), q)
        return P.ip_packet(src, dst, P.PROTO_UDP, seg, ttl, i)

    return build


def _http_flood(i: int, src: bytes, ttl: int, dst: bytes, rng: random.Random) -> bytes:
    req = f"GET /?{rng.getrandbits(32):x} HTTP/1.1\r\nHost: victim\r\nUser-Agent: Mozilla/5.0\r\n\r\n".encode()
    seg = P.tcp(src, dst, rng.randint(1024, 65535), 80, P.flags_byte("PA"), rng.getrandbits(32),
                rng.getrandbits(32), req, 64240)
    return P.ip_packet(src, dst, P.PROTO_TCP, seg, ttl, i)


def _multi(i: int, src: bytes, ttl: int, dst: bytes, rng: random.Random) -> bytes:
    return (_reflection("dns") if i % 2 else _tcp("syn_flood"))(i, src, ttl, dst, rng)


def _web_dns_mix(i: int, src: bytes, ttl: int, dst: bytes, rng: random.Random) -> bytes:
    """Benign: ACKs of web clients, small DNS answers to our resolver, a few new connections."""
    k = i % 10
    if k < 6:
        seg = P.tcp(src, dst, rng.randint(1024, 65535), 443, P.flags_byte("A" if k else "PA"),
                    rng.getrandbits(32), rng.getrandbits(32), rng.randbytes(200) if not k else b"", 64240)
        return P.ip_packet(src, dst, P.PROTO_TCP, seg, ttl, i)
    if k < 9:
        return _reflection_small(i, src, ttl, dst, rng)
    return _tcp("syn_flood")(i, src, ttl, dst, rng)


def _reflection_small(i: int, src: bytes, ttl: int, dst: bytes, rng: random.Random) -> bytes:
    seg = P.udp(src, dst, 53, rng.randint(1024, 65535), _payload(_DNS_RESP, 90, rng))
    return P.ip_packet(src, dst, P.PROTO_UDP, seg, ttl, i)


def builder_of(vector: str, sport: PortFn = _USUAL, dport: PortFn = _USUAL) -> Builder:
    """The frame factory of a vector; `sport`/`dport` override the UDP vectors' ports."""
    if vector.endswith("_amplification") and vector[: -len("_amplification")] in REFLECTION:
        return _reflection(vector[: -len("_amplification")], sport, dport)
    if vector in TCP_VECTORS:
        return _tcp(vector)
    table: dict[str, Builder] = {"udp_flood": _udp_flood(sport, dport), "icmp_flood": _icmp_flood,
                                 "fragment_flood": _fragment_flood, "dns_query_flood": _dns_query(sport, dport),
                                 "http_flood": _http_flood, "multi_vector": _multi, "web_dns_mix": _web_dns_mix,
                                 "malformed_flood": _malformed}
    if vector not in table:
        raise ValueError(f"unknown vector {vector!r}; known: {', '.join(VECTORS)}")
    return table[vector]


def frames_for(spec: VectorSpec) -> list[bytes]:
    """A pool of `spec.variety` distinct Ethernet frames of the vector."""
    build = builder_of(spec.vector, port_choice(spec.sport), port_choice(spec.dport))
    rng = random.Random(spec.seed)
    sources = _Sources(spec, rng)
    dst = P.addr(spec.victim())
    if (len(dst) == 16) != spec.v6:
        raise ValueError(f"victim {spec.victim()} is not an IPv{6 if spec.v6 else 4} address")
    bits = 8 * len(dst)
    if not 0 <= spec.dst_spread <= bits:
        raise ValueError(f"--dst-spread must be 0-{bits}")
    host_bits = bits - spec.dst_spread if spec.dst_spread else 0
    base = int.from_bytes(dst, "big") >> host_bits << host_bits
    out = []
    for i in range(max(1, spec.variety)):
        src, ttl = sources.pick(i)
        to = (base | rng.getrandbits(host_bits)).to_bytes(len(dst), "big") if host_bits else dst
        out.append(P.ether(build(i, src, ttl, to, rng), spec.v6, spec.dst_mac))
    return out
